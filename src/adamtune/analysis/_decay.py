"""AdamW's weight decay read as a timescale: does the best trial's decay act within its run?

PyTorch's AdamW multiplies the weights by ``1 - lr·λ`` each step, so the weights are an
exponential moving average of recent updates over ``τ = 1/(lr·λ)`` steps (Wang & Aitchison
2024; ``guide.decay_timescale``). A good τ lies between about one epoch and the whole run. A λ
whose τ is far longer than the run barely decays anything; one whose τ is shorter than an
epoch forgets what the model learned from most of the data. Only AdamW's decoupled decay has
this reading: Adam's and Adadelta's weight_decay is an L2 term added to the gradient.

A short run at a small lr needs a large λ for its τ to fit in the run: the advised range may lie
above the window the study searched, or above ``guide.STRONG_WEIGHT_DECAY`` (0.1), which the guide
calls over-regularising for typical lrs and long runs. The finding then says so, and gives the
``--set weight_decay=LOW:HIGH`` that tests the range: only the validation loss can tell.
"""

from __future__ import annotations

import dataclasses
import math

from adamtune import guide
from adamtune.analysis._finding import INFO, Finding, fmt
from adamtune.analysis._format import set_argument
from adamtune.analysis._select import Study, top_trials, unpack
from adamtune.errors import AdamtuneError
from adamtune.results import StudySettings
from adamtune.space import Dimension

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
        searched: the top of the weight_decay window the study searched (None: not tuned).
    """

    trial: int
    lr: float
    weight_decay: float
    timescale: float
    run: int
    epoch: float | None
    low: float
    high: float | None
    searched: float | None = None

    @property
    def too_long(self) -> bool:
        return self.timescale > BEYOND * self.run

    @property
    def above_window(self) -> bool:
        """The advised range starts above the weight_decay window the study searched."""
        return self.searched is not None and self.low > self.searched

    @property
    def above_usual(self) -> bool:
        """The advised range starts above the window searched or ``guide.STRONG_WEIGHT_DECAY``."""
        return self.above_window or self.low > guide.STRONG_WEIGHT_DECAY

    def window_to_try(self) -> Dimension | None:
        """The weight_decay window that tests the advised range: τ from the run down to one epoch
        (without an epoch, or with a run shorter than one: down to a tenth of the run)."""
        high = self.high if self.high is not None and self.high > self.low else 10 * self.low
        try:
            return Dimension("weight_decay", self.low, high, "log")
        except AdamtuneError:  # a λ too large to be a number
            return None

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
    searched = next((d.high for d in settings.space.dimensions if d.name == "weight_decay"), None)
    examples, batch = info.get("train_examples"), info.get("batch_size")
    epoch = examples / batch if isinstance(examples, int) and isinstance(batch, int) and batch > 0 else None
    return DecayTimescale(
        trial=best.number, lr=float(lr), weight_decay=float(wd), timescale=guide.decay_timescale(lr, wd), run=int(run),
        epoch=epoch, low=guide.weight_decay_for_timescale(lr, run),
        high=guide.weight_decay_for_timescale(lr, epoch) if epoch else None, searched=searched,
    )


def _figures(x: float) -> str:
    """``x`` to three significant figures, as a whole number with thousands separators: 59,500."""
    return f"{float(f'{x:.3g}'):,.0f}" if math.isfinite(x) else "∞"


def decay_findings(d: DecayTimescale | None, lr_at_upper_edge: bool = False,
                   too_few: bool = False) -> tuple[Finding, ...]:
    """An info finding when the best trial's τ lies far outside one epoch .. the whole run.

    Args:
        lr_at_upper_edge: the best trials sit at the top of the lr window. The advised λ falls as
            lr rises, so a window to test a strong decay waits until lr is settled.
        too_few: fewer trials completed than the other checks need; the best one's lr, at which
            the window is computed, is not settled either, so the window to test waits too.
    """
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
    suggestion: tuple[str, ...] = ()
    test = d.window_to_try() if d.too_long and d.above_usual else None
    if test is not None:
        where = (f"the top of the weight_decay window this study searched ({fmt(d.searched)})" if d.above_window else
                 f"{guide.STRONG_WEIGHT_DECAY:g}, above which the guide calls AdamW's weight_decay over-regularising "
                 f"(a rule of thumb for lrs near 1e-3 and long runs)")
        detail += (f" That range starts above {where}: a {d.run}-step run at lr {fmt(d.lr)} needs decay this strong "
                   f"for it to act at all.")
        if lr_at_upper_edge:
            detail += (" But the best trials sit at the upper edge of the lr window: settle lr first (a larger lr "
                       "needs a smaller weight_decay for the same τ).")
        elif too_few:
            detail += (" But too few trials completed to settle the lr it is computed at: run more trials of this "
                       "study first (a larger lr needs a smaller weight_decay for the same τ).")
        else:
            suggestion = (f"--set {set_argument(test)}",)
            tenth = "τ from the run down to a tenth of it; " if d.high is None or d.high <= d.low else ""
            detail += (f" Only the validation loss can tell whether it helps: test it in a study of its own, with "
                       f"{suggestion[0]} ({tenth}a new --study name: a study continued keeps its own search space).")
    return (Finding("decay_timescale", INFO, title, detail, (d.trial,), suggestion),)
