"""Evaluating a model on the validation data: loss and extra metrics, example-weighted."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from adamtune.engine.stacked import member_losses
from adamtune.errors import WorkloadError
from adamtune.workloads import Workload, eval_batches, one_value


@torch.no_grad()
def evaluate(forward: Callable[[Tensor], Tensor], workload: Workload, device: torch.device | str,
             batched: bool = False, members: int = 1, batches: int | None = None) -> dict[str, Tensor]:
    """Validation metrics as tensors of shape [K] (K = 1 unless ``batched``).

    ``forward(x)`` returns ``[B, ...]`` outputs, or ``[K, B, ...]`` when ``batched``; the
    loss and metric functions then run per member (``stacked.member_losses``).

    ``members`` (K) share each call: each sees ``eval_batch_size / K`` examples, so a call
    holds as many activations as one model's evaluation does. Giving each member the whole
    ``eval_batch_size`` made the batched evaluation of the charlm Transformer (K=8, 256
    windows) 2.3x slower than evaluating the 8 models one after another: its attention
    scores no longer fit the caches. (A model whose output for one example depends on the
    others in its call, BatchNorm without running statistics, is given ``members=1``.)

    ``batches``: stop after that many calls (a probe), or None for the whole validation set.
    """
    # each value's function, and its name in the user's words for an error
    fns = {"val_loss": ("loss", workload.loss), **{f"val_{n}": (f"metric {n!r}", f) for n, f in workload.metrics.items()}}
    if batched:
        fns = {name: (what, member_losses(fn, what)) for name, (what, fn) in fns.items()}
    totals: dict[str, Tensor] = {}
    n_total = 0
    size = max(1, -(-workload.eval_batch_size // max(1, members)))
    for call, (n, (x, y)) in enumerate(eval_batches(workload.valid_data, size)):
        if batches is not None and call >= batches:
            break
        x, y = x.to(device), y.to(device)
        out = forward(x)
        for name, (what, fn) in fns.items():
            v = fn(out, y) if batched else one_value(fn(out, y), what, number=name != "val_loss")
            v = v.detach().to(torch.float64) * n
            totals[name] = totals[name] + v if name in totals else v
        n_total += n
    return {name: t / n_total for name, t in totals.items()}


def metric_fault(workload: Workload, values: Mapping[str, float], step: int) -> str | None:
    """Why one model's evaluation ``values`` at ``step`` fail its trial, as the last line of a
    traceback reads: the objective is a metric that returned NaN/inf while the loss stayed
    finite. The metric is at fault, not the training: taken for divergence, a metric NaN for
    every model had every trial diverge and the findings move the lr window down by decades.

    None when the objective is finite, is the loss, or the loss is NaN/inf too (the model's
    outputs are: it diverged). The engines ask only once the training loss was found finite.
    """
    if workload.objective == "val_loss":
        return None
    value, loss = values[workload.objective], values["val_loss"]
    if math.isfinite(value) or not math.isfinite(loss):
        return None
    return (f"{WorkloadError.__name__}: the objective's metric {workload.objective.removeprefix('val_')!r} returned "
            f"{value} at step {step} while the loss was finite (val_loss {loss:.4g}): check the metric")
