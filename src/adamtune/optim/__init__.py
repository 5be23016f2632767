"""Batched optimizers: K stacked models, per-member hyperparameters, torch.optim numerics."""

from adamtune.optim._kernels import (
    adadelta_,
    adam_,
    adamw_,
    clip_grads_per_member_,
    member_grad_norms,
)
from adamtune.optim.batched import BatchedAdadelta, BatchedAdam, BatchedAdamW, matrix_decay_mask

__all__ = [
    "BatchedAdadelta",
    "BatchedAdam",
    "BatchedAdamW",
    "adadelta_",
    "adam_",
    "adamw_",
    "clip_grads_per_member_",
    "matrix_decay_mask",
    "member_grad_norms",
]
