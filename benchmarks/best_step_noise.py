"""Is the demo's best step a length to train, or a dip of late noise? (quality, not speed)

    python benchmarks/best_step_noise.py [--seeds 10]

The demo (`make demo`) ends with trial 8: val_loss 0.0802 at step 275 of 400, 0.1168 at its end.
This retrains that pasted configuration (torch.optim.AdamW, the digits MLP, batch 64, 400 steps,
an evaluation every 25 steps) in a plain PyTorch loop with a shuffled DataLoader, once per seed,
and prints the mean validation loss at step 275 and at step 400: if 275 were a better length to
train, its mean would be the lower one. The validation split is a fixed 20% of sklearn's digits.
"""

import argparse
import statistics

import torch
from sklearn.datasets import load_digits
from torch import nn

LR, WEIGHT_DECAY, BETA1 = 0.007113, 0.0023627, 0.984736  # the demo's trial 8, as pasted
STEPS, EVERY, BEST_STEP = 400, 25, 275


def run(seed: int, x, y, xv, yv) -> list[float]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=(BETA1, 0.999), eps=1e-8)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True,
                                         drop_last=True)
    step, values = 0, []
    while step < STEPS:
        for xb, yb in loader:
            step += 1
            loss = nn.functional.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % EVERY == 0:
                with torch.no_grad():
                    values.append(nn.functional.cross_entropy(model(xv), yv).item())
            if step == STEPS:
                break
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    seeds = parser.parse_args().seeds
    d = load_digits()
    x, y = torch.tensor(d.data, dtype=torch.float32) / 16.0, torch.tensor(d.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n = int(len(x) * 0.2)
    xv, yv, xt, yt = x[order[:n]], y[order[:n]], x[order[n:]], y[order[n:]]
    at_best, at_end, best_steps = [], [], []
    for seed in range(seeds):
        values = run(seed, xt, yt, xv, yv)
        at_best.append(values[BEST_STEP // EVERY - 1])
        at_end.append(values[-1])
        best_steps.append((values.index(min(values)) + 1) * EVERY)
        print(f"seed {seed}: step {BEST_STEP} {at_best[-1]:.4f}, step {STEPS} {at_end[-1]:.4f}, "
              f"best at step {best_steps[-1]}")
    print(f"mean over {seeds} seeds: step {BEST_STEP} {statistics.mean(at_best):.4f}, step {STEPS} "
          f"{statistics.mean(at_end):.4f}; best steps from {min(best_steps)} to {max(best_steps)}")


if __name__ == "__main__":
    main()
