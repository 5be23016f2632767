"""Managed mode: describe your model and data; adamtune trains every trial.

    adamtune tune --workload examples/my_workload.py:workload --budget 16
"""

import torch
from torch import nn

import adamtune


def make_data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=g)
    y = (x[:, :5].sum(dim=1) > 0).long()  # replace with your own tensors or a torch Dataset
    return x, y


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2))


def workload() -> adamtune.Workload:
    return adamtune.Workload(
        name="my-classifier",
        model=make_model,                      # called once per trial, after the trial's seed is set
        train_data=make_data(2000, 0),         # (inputs, targets) tensors or a Dataset
        valid_data=make_data(500, 1),
        loss=adamtune.cross_entropy,           # any loss(output, target) -> scalar
        metrics={"accuracy": adamtune.accuracy},
        objective="val_loss", direction="minimize",
        steps=300, batch_size=64, eval_every=30,
        task="generic",                        # picks the preset windows: generic, cnn, transformer, llm
    )


if __name__ == "__main__":
    result = adamtune.tune(workload(), budget=16, storage="sqlite:///my-study.db")
    print(result.best_value, result.best_config)
    # tune() prints nothing itself: the findings, the next search space and the plots are in the report
    print("findings and plots: adamtune report --storage sqlite:///my-study.db --study my-classifier")
