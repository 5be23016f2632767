"""A digits CNN with BatchNorm (running statistics), for benchmarking a BatchNorm model batched:

    python benchmarks/batched_vs_sequential.py --case benchmarks/bn_cnn.py:workload:16

The built-in digits-cnn with each conv followed by BatchNorm2d and no conv bias (the bias BatchNorm
would take out again), the usual small-CNN block.
"""

import dataclasses

from torch import nn

import adamtune
from adamtune.workloads import load_workload


class BNCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        x = x.reshape(*x.shape[:-1], 1, 8, 8)
        return self.head(self.features(x).flatten(-3))


def workload() -> adamtune.Workload:
    return dataclasses.replace(load_workload("digits-cnn"), name="digits-bn-cnn", model=BNCNN)
