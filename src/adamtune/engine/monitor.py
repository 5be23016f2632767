"""Per-member training monitors shared by the sequential and the batched engine.

Everything works on tensors of shape [K] (K = 1 for the sequential engine) and stays on the
training device: no host synchronisation per step, one check per evaluation.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from adamtune.trials import GradNorms, sample_indices

_MAX_SAMPLES = 200


class DivergenceMonitor:
    """Flags members whose loss became NaN/inf or grew past ``factor`` x their first loss.

    ``update`` runs every step and only keeps the step's [K] losses; ``end_interval`` runs
    at each evaluation, checks the interval's losses in a few whole-interval operations, and
    returns the mean training loss of the interval and which members diverged. Until then
    ``first_loss`` and ``first_bad_step`` describe the steps before the interval.
    """

    def __init__(self, k: int, factor: float, device: torch.device | str = "cpu") -> None:
        self.factor = factor
        self.first_loss = torch.full((k,), float("nan"), dtype=torch.float64, device=device)
        self.first_bad_step = torch.full((k,), -1, dtype=torch.long, device=device)
        self._losses: list[Tensor] = []  # this interval's [K] losses, as the engine made them
        self._steps: list[int] = []

    def update(self, step: int, loss: Tensor) -> None:
        """Keep ``loss`` ([K], not changed in place afterwards) of ``step``."""
        self._losses.append(loss.detach())
        self._steps.append(step)

    def end_interval(self) -> tuple[Tensor, Tensor]:
        if self._losses:
            losses = torch.stack(self._losses).to(torch.float64)  # [steps, K]
            # A member's first loss is its first one that is not NaN.
            seen = ~torch.isnan(losses)
            first = losses.gather(0, seen.to(torch.uint8).argmax(0, keepdim=True))[0]
            self.first_loss = torch.where(torch.isnan(self.first_loss) & seen.any(0), first, self.first_loss)
            bad = ~torch.isfinite(losses)
            steps = torch.tensor(self._steps, device=losses.device)
            first_bad = steps[bad.to(torch.uint8).argmax(0)]
            new_bad = (self.first_bad_step < 0) & bad.any(0)
            self.first_bad_step = torch.where(new_bad, first_bad, self.first_bad_step)
            mean = losses.sum(0) / len(self._losses)
        else:
            mean = torch.zeros_like(self.first_loss)
        diverged = (self.first_bad_step >= 0) | ~torch.isfinite(mean) | (mean > self.factor * self.first_loss.abs())
        self._losses.clear()
        self._steps.clear()
        return mean, diverged

    def keep(self, index: Tensor) -> None:
        self.first_loss = self.first_loss[index]
        self.first_bad_step = self.first_bad_step[index]
        self._losses = [t[index] for t in self._losses]


class GradNormLog:
    """The unclipped global gradient norm of every member at every step."""

    def __init__(self) -> None:
        self._norms: list[Tensor] = []
        self._stacked: Tensor | None = None  # [steps, K] float64 on the host, built once when asked

    def append(self, norms: Tensor) -> None:
        """Keep ``norms`` ([K], not changed in place afterwards)."""
        self._norms.append(norms)
        self._stacked = None

    def keep(self, index: Tensor) -> None:
        if self._norms:
            self._norms = [self._rows().index_select(1, index.to(self._norms[0].device))]
        self._stacked = None

    def summary(self, member: int, max_grad_norm: float | None, steps: int | None = None) -> GradNorms | None:
        """Member ``member``'s norms of the first ``steps`` steps (all if None)."""
        if not self._norms:
            return None
        if self._stacked is None:
            self._stacked = self._rows().to(torch.float64).cpu()
        return summarize_norms(self._stacked[:steps, member], max_grad_norm)

    def _rows(self) -> Tensor:
        """Every step's norms as one [steps, K] tensor (what keep() left is already 2-D)."""
        return torch.cat([n.detach().reshape(-1, n.shape[-1]) for n in self._norms])


def summarize_norms(norms: Tensor, max_grad_norm: float | None) -> GradNorms | None:
    finite = norms[torch.isfinite(norms)]
    if finite.numel() == 0:
        return None
    q = torch.quantile(finite, torch.tensor([0.5, 0.9, 0.99], dtype=finite.dtype))
    idx = torch.tensor(sample_indices(len(norms), min(_MAX_SAMPLES, len(norms))), dtype=torch.long)
    clipped = float((finite > max_grad_norm).double().mean()) if max_grad_norm is not None else 0.0
    return GradNorms(
        count=int(len(norms)), mean=float(finite.mean()), p50=float(q[0]), p90=float(q[1]),
        p99=float(q[2]), max=float(finite.max()), clipped_fraction=clipped,
        samples=tuple(float(x) for x in norms[idx]),
    )


@dataclasses.dataclass
class CurveLog:
    """Metrics per evaluation for K members, as host floats (NaN where not finite)."""

    k: int
    steps: list[int] = dataclasses.field(default_factory=list)
    metrics: dict[str, list[list[float]]] = dataclasses.field(default_factory=dict)  # name -> per member

    def append(self, step: int, values: dict[str, Tensor]) -> None:
        self.steps.append(step)
        for name, v in values.items():
            per_member = self.metrics.setdefault(name, [[] for _ in range(self.k)])
            for i, x in enumerate(v.detach().cpu().tolist()):
                per_member[i].append(x if x == x and abs(x) != float("inf") else float("nan"))

    def keep(self, index: list[int]) -> None:
        self.metrics = {n: [v[i] for i in index] for n, v in self.metrics.items()}
        self.k = len(index)

    def member(self, i: int) -> dict[str, list]:
        n = len(self.steps)
        out: dict[str, list] = {"step": list(self.steps)}
        for name, v in self.metrics.items():
            out[name] = v[i][:n]
        return out
