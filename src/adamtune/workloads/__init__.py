"""Built-in workloads and loading a user's."""

from adamtune.workloads._base import (
    Workload, accuracy, batch_stream, cross_entropy, describe, eval_batches, num_examples,
    one_value, targets_per_prediction,
)
from adamtune.workloads._load import BUILTIN, load_workload

__all__ = [
    "BUILTIN", "Workload", "accuracy", "batch_stream", "cross_entropy", "describe",
    "eval_batches", "load_workload", "num_examples", "one_value", "targets_per_prediction",
]
