"""Built-in workloads on scikit-learn's bundled digits (1,797 8x8 images, no download)."""

from __future__ import annotations

import functools

import torch
from torch import nn

from adamtune.workloads._base import Workload, accuracy

_SPLIT_SEED = 0
_VALID_FRACTION = 0.2


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    n_valid = int(len(x) * _VALID_FRACTION)
    valid, train = perm[:n_valid], perm[n_valid:]
    return (x[train], y[train]), (x[valid], y[valid])


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(),
        nn.Linear(128, 128), nn.ReLU(),
        nn.Linear(128, 10),
    )


class _SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(*x.shape[:-1], 1, 8, 8)
        return self.head(self.features(x).flatten(-3))


def digits_mlp() -> Workload:
    """A 64-128-128-10 MLP on the digits: the default workload; a 16-trial study takes seconds."""
    train, valid = _digits()
    return Workload(
        name="digits-mlp", model=_mlp, train_data=train, valid_data=valid,
        metrics={"accuracy": accuracy}, steps=400, batch_size=64, eval_every=25, task="generic",
    )


def digits_cnn() -> Workload:
    """A two-layer conv net on the 8x8 digit images (task: cnn)."""
    train, valid = _digits()
    return Workload(
        name="digits-cnn", model=_SmallCNN, train_data=train, valid_data=valid,
        metrics={"accuracy": accuracy}, steps=300, batch_size=64, eval_every=25, task="cnn",
    )
