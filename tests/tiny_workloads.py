"""Small workloads for tests, loaded by path (tests/tiny_workloads.py:ATTR) as a user's file would be."""

import torch
from torch import nn

import adamtune


def _data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    w = torch.randn(8, 3, generator=torch.Generator().manual_seed(99))
    return x, (x @ w).argmax(dim=1)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))


def tiny() -> adamtune.Workload:
    return adamtune.Workload(
        name="tiny", model=_mlp, train_data=_data(256, 0), valid_data=_data(128, 1),
        metrics={"accuracy": adamtune.accuracy}, steps=40, batch_size=32, eval_every=10,
    )


def tiny_long() -> adamtune.Workload:
    """The same model trained 50 times longer: a batch trains for a second or so, long enough to be
    caught training."""
    import dataclasses

    return dataclasses.replace(tiny(), name="tiny-long", steps=2000, eval_every=500)


def tiny_accuracy() -> adamtune.Workload:
    """Same model, judged by validation accuracy (maximised)."""
    import dataclasses

    return dataclasses.replace(tiny(), name="tiny-acc", objective="val_accuracy", direction="maximize")


class _BreaksInTraining(nn.Module):
    """Trains one step, then raises: each trial's failure to record (code that fails at once is
    refused before the study is made)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3)
        self.steps = 0

    def forward(self, x):
        if torch.is_grad_enabled() and self.training:
            self.steps += 1
            if self.steps > 1:
                raise RuntimeError("the model broke in training")
        return self.fc(x)


def broken() -> adamtune.Workload:
    return adamtune.Workload(
        name="broken", model=_BreaksInTraining, train_data=_data(64, 0), valid_data=_data(32, 1),
        steps=10, batch_size=16, eval_every=5,
    )


not_a_workload = 42
