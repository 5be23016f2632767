"""AdamW's weight decay read as a timescale: does the best trial's decay act within its run?

PyTorch's AdamW multiplies the weights by ``1 - lr·λ`` each step, so the weights are an
exponential moving average of recent updates over ``τ = 1/(lr·λ)`` steps (Wang & Aitchison
2024; ``guide.decay_timescale``). A good τ lies between about one epoch and the whole run. A λ
whose τ is far longer than the run barely decays anything; one whose τ is shorter than an
epoch forgets what the model learned from most of the data. Only AdamW's decoupled decay has
this reading: Adam's and Adadelta's weight_decay is an L2 term added to the gradient.
"""

from __future__ import annotations

import dataclasses
import math

from adamtune import guide
from adamtune.analysis._finding import INFO, Finding, fmt
from adamtune.analysis._select import Study, top_trials, unpack
from adamtune.results import StudySettings

# τ this many times the run (or this fraction of an epoch) is far enough out to say so.
BEYOND = 2.0


@dataclasses.dataclass(frozen=True)
class DecayTimescale:
    """The best trial's decay timescale against its run.

    Attributes:
        trial: the best completed trial.
        lr, weight_decay: its peak lr and λ (PyTorch's convention).
        timescale: ``1/(lr·λ)`` in steps.
        run: the steps of a run; epoch: the steps of one pass over the training data (None
            when the study does not know the data's size).
        low, high: the λ at this lr whose τ is the run, and one epoch (None without an epoch).
    """

    trial: int
    lr: float
    weight_decay: float
    timescale: float
    run: int
    epoch: float | None
    low: float
    high: float | None

    @property
    def too_long(self) -> bool:
        return self.timescale > BEYOND * self.run

    @property
    def too_short(self) -> bool:
        return self.epoch is not None and self.timescale * BEYOND < self.epoch


def decay_timescale(study: Study, settings: StudySettings | None = None) -> DecayTimescale | None:
    """The timescale of the best trial's decay, or None (not AdamW, no decay, no run length)."""
    trials, settings = unpack(study, settings)
    if settings.optimizer != "adamw":
        return None
    top = top_trials(trials, settings.direction)
    if not top or not top[0].config:
        return None
    best = top[0]
    lr, wd = best.config.get("lr"), best.config.get("weight_decay")
    info = settings.workload_info or {}
    run = info.get("steps") or best.steps
    if not isinstance(lr, (int, float)) or not isinstance(wd, (int, float)) or not lr > 0 or not wd > 0 or not run:
        return None
    examples, batch = info.get("train_examples"), info.get("batch_size")
    epoch = examples / batch if isinstance(examples, int) and isinstance(batch, int) and batch > 0 else None
    return DecayTimescale(
        trial=best.number, lr=float(lr), weight_decay=float(wd), timescale=guide.decay_timescale(lr, wd), run=int(run),
        epoch=epoch, low=guide.weight_decay_for_timescale(lr, run),
        high=guide.weight_decay_for_timescale(lr, epoch) if epoch else None,
    )


def _figures(x: float) -> str:
    """``x`` to three significant figures, as a whole number with thousands separators: 59,500."""
    return f"{float(f'{x:.3g}'):,.0f}" if math.isfinite(x) else "∞"


def decay_findings(d: DecayTimescale | None) -> tuple[Finding, ...]:
    """An info finding when the best trial's τ lies far outside one epoch .. the whole run."""
    if d is None or not (d.too_long or d.too_short):
        return ()
    steps = _figures(d.timescale)
    if d.too_long:
        title = (f"weight decay barely acts: its timescale 1/(lr·weight_decay) is {steps} steps, "
                 f"{_figures(d.timescale / d.run)}x the {d.run}-step run")
    else:
        title = (f"weight decay forgets within an epoch: its timescale 1/(lr·weight_decay) is {steps} steps, "
                 f"an epoch {d.epoch:.0f}")
    window = (f"weight_decay from {fmt(d.low)} (τ = the run) to {fmt(d.high)} (τ = one epoch, {d.epoch:.0f} steps)"
              if d.high is not None else f"weight_decay of about {fmt(d.low)} (τ = the run)")
    detail = (f"Trial {d.trial} ran AdamW with lr={fmt(d.lr)} and weight_decay={fmt(d.weight_decay)} in PyTorch's "
              f"convention (each step multiplies the weights by 1 - lr·weight_decay; τ taken at the peak lr). The "
              f"timescale rule (Wang & Aitchison 2024) puts a good τ between one epoch and the whole run: at this "
              f"lr, {window}.")
    return (Finding("decay_timescale", INFO, title, detail, (d.trial,)),)
