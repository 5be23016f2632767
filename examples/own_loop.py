"""Objective mode: keep your own training loop; adamtune proposes configurations and keeps records.

    python examples/own_loop.py
"""

import torch
from torch import nn

import adamtune

# A smooth function of the inputs, plus noise: something to learn (the mean alone scores ~0.5).
torch.manual_seed(0)
W = torch.randn(10, 1) / 10 ** 0.5
X, X_VAL = torch.randn(1000, 10), torch.randn(200, 10)
Y, Y_VAL = torch.sin(2 * X @ W) + 0.1 * torch.randn(1000, 1), torch.sin(2 * X_VAL @ W) + 0.1 * torch.randn(200, 1)


def objective(config: adamtune.Config, trial: adamtune.Trial) -> float:
    torch.manual_seed(trial.seed)  # the same initial weights when a trial cut short runs again
    model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 1))
    optimizer = adamtune.make_optimizer(model, config)         # the real torch.optim class
    scheduler = adamtune.make_scheduler(optimizer, config, total_steps=200)
    for step in range(1, 201):
        idx = torch.randint(0, len(X), (32,))
        loss = nn.functional.mse_loss(model(X[idx]), Y[idx])
        optimizer.zero_grad()
        loss.backward()
        trial.log_grad_norm(adamtune.clip_gradients(model, config))  # clips if max_grad_norm is set
        optimizer.step()
        scheduler.step()
        if step % 20 == 0:
            with torch.no_grad():
                val = nn.functional.mse_loss(model(X_VAL), Y_VAL).item()
            trial.report(step, val, train_loss=loss.item())
            if trial.should_prune():
                raise adamtune.TrialPruned()
    return val


if __name__ == "__main__":
    result = adamtune.tune(objective, budget=12, storage="sqlite:///own-loop.db", study="own-loop")
    print(f"best val_loss {result.best_value:.4f} (predicting the mean: {Y_VAL.var().item():.4f})")
    print(result.paste_code())  # the torch.optim line, as adamtune best prints it
    # tune() prints nothing itself: the findings, the next search space and the plots are in the report
    print("findings and plots: adamtune report --storage sqlite:///own-loop.db --study own-loop")
