"""Training-curve diagnosis of the best trials, and where training becomes unstable.

Every threshold is a module constant, stated relative to the curve itself so that it means
the same for a loss near 2 and an accuracy near 0.97. Curves are turned so that lower is
better (an accuracy is negated) before they are judged. "Improvement" is how far a curve
came down from its first evaluation to its best; a curve that moved less than
``MIN_IMPROVEMENT`` of its own level is not judged for saturation or progress (it never
learned; the axis plots and the boundary check speak to that).

- **within_noise**: the objective ends above its best evaluation (by ``ENDED_AS_GOOD``, 1% of
  its level, or more), but by no more than it swings up and down from the earlier of that
  evaluation and the late part of training (``LATE_START``) to its end -- the smaller of its
  total rise and total fall there -- and by no more than ``DIP_RISE_AT_MOST`` (25%) of its
  improvement. The best evaluation is then a dip of that noise, not a turning point: neither
  overfitting nor a better length to train. Judging from the best on, not only from
  mid-training, catches a spike after an early best that comes back down (a second half that is
  mostly the way back down swings little). Three such curves of the advice audit (digits-mlp,
  digits-cnn), retrained with 10-16 fresh seeds each, were 13-60% worse on average at their best
  step than at their end, and the retrained curves ended up to 14% of their improvement above
  their own best from noise alone. An end further above than ``DIP_RISE_AT_MOST`` is a run that
  got worse (a loss spike not recovered from), and its best is a checkpoint to keep.
- **overfitting**: the validation objective ends at least ``OVERFIT_RISE`` (10%) of its
  improvement above its best evaluation, the training loss fell by at least
  ``TRAIN_STILL_FALLING`` (2%) after that evaluation, and the rise is not ``within_noise``.
- **late_variance**: in the second half of training (``LATE_START``; at least the last 3
  evaluations) the curve goes both up and down by at least ``LATE_JITTER`` (10%) of its
  improvement: the smaller of the total rise and the total fall. A steady climb is
  overfitting, a steady descent is progress; back and forth is variance. Checked on the
  validation objective and on the training loss, for a curve that moved (a flat one's jitter
  is minibatch noise measured against no improvement at all).
- **still_improving**: over the last quarter of training (``STILL_IMPROVING_FROM``; at least
  the last 2 evaluations) the objective improved by at least ``STILL_IMPROVING_GAIN`` (5%) of
  its improvement, and its last evaluation is its best.
- **saturated_early**: the objective came within ``SATURATED_TOL`` (2%) of its best by
  ``SATURATED_BY`` (half) of training -- 2% of its improvement and 2% of its level, whichever is
  smaller -- and neither of the two above holds, nor ``within_noise`` (a best that is a dip
  says nothing of when the curve stopped improving).

A finding is reported when it holds for the best trial or for most of the
``CURVE_TRIALS`` best trials.

Over the whole study, **no_learning**: no trial that trained (complete or pruned) moved its
objective by ``MIN_IMPROVEMENT`` of its level from its first evaluation, and their best values
lie within that much of each other (so none learned before its first evaluation either).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from adamtune.analysis._finding import INFO, WARNING, Finding, fmt, trial_list
from adamtune.analysis._select import Study, lr_of, unpack
from adamtune.results import StudySettings
from adamtune.trials import Curve, TrialState, oriented, ranked

MIN_EVALUATIONS = 4
MIN_IMPROVEMENT = 0.01
OVERFIT_RISE = 0.10
TRAIN_STILL_FALLING = 0.02
LATE_START = 0.5
LATE_JITTER = 0.10
STILL_IMPROVING_FROM = 0.75
STILL_IMPROVING_GAIN = 0.05
SATURATED_TOL = 0.02
SATURATED_BY = 0.5
CURVE_TRIALS = 3
# A last evaluation within this fraction of the best's level ended as good as it got: no gap to judge.
ENDED_AS_GOOD = 0.01
# The most of its improvement an end may lie above the best evaluation and still be a dip of noise.
DIP_RISE_AT_MOST = 0.25
# lr at which a trial diverged, within this factor of the best trial's lr: instability limits the study.
UNSTABLE_NEAR = 3.0
# Every trial diverged by this step, and one at step 1 (its loss non-finite before any update) or
# at lrs this far apart: not the learning rate's doing, but the data's or the loss's.
EARLY_STEPS = 3
NOT_THE_LR_SPAN = 100.0

TRAIN_LOSS = "train_loss"
# What a curve can show, as ``guide.ACTIONS`` keys and CurveDiagnosis flags, in report order.
KINDS = ("overfitting", "late_variance", "still_improving", "saturated_early")


@dataclasses.dataclass(frozen=True)
class CurveDiagnosis:
    """What one training curve shows.

    Attributes:
        number: the trial (None for a curve judged on its own).
        evaluations: how many evaluations had a finite objective.
        judged: False when the curve is too short (< ``MIN_EVALUATIONS``) to say anything.
        best_step, final_step: step of the best evaluation, and of the last one.
        best, final: the objective there (in its own direction).
        overfitting, late_variance, still_improving, saturated_early: the findings.
        rise: how much the objective got worse after its best, as a fraction of its improvement.
        jitter: the late back-and-forth as a fraction of the improvement (the larger of the
            objective's and the training loss's).
        late_gain: improvement over the last quarter as a fraction of the whole improvement.
        saturated_at: the step by which it came within ``SATURATED_TOL`` of its best.
        saturated_value: the objective at that step.
        train_drop: the training loss's fall after the best evaluation, relative to its value there.
        swing: how far the objective goes up and down from the earlier of its best evaluation and
            the late part of training, as a fraction of the improvement: what ``rise`` is judged against.
        swing_from: the step that swing is measured from (the best's, or the late part's first).
        within_noise: the end lies above the best evaluation by no more than ``swing`` and
            ``DIP_RISE_AT_MOST`` (and by at least ``ENDED_AS_GOOD`` of its level): the best is a dip
            of that noise, not a length to train.
    """

    number: int | None
    evaluations: int
    judged: bool
    best_step: int | None = None
    final_step: int | None = None
    best: float | None = None
    final: float | None = None
    overfitting: bool = False
    late_variance: bool = False
    still_improving: bool = False
    saturated_early: bool = False
    rise: float = 0.0
    jitter: float = 0.0
    late_gain: float = 0.0
    saturated_at: int | None = None
    saturated_value: float | None = None
    train_drop: float | None = None
    swing: float = 0.0
    within_noise: bool = False
    swing_from: int | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        """The findings that hold, as ``guide.ACTIONS`` keys."""
        return tuple(n for n in KINDS if getattr(self, n))


def _series(curve: Curve, name: str) -> tuple[list[int], list[float]]:
    values = curve.metrics.get(name, ())
    pairs = [(s, v) for s, v in zip(curve.steps, values) if v is not None and math.isfinite(v)]
    return [s for s, _ in pairs], [v for _, v in pairs]


def _improvement(v: list[float]) -> float:
    level = abs(min(v))
    return max(v[0] - min(v), MIN_IMPROVEMENT * level, 1e-12)


def _moved(v: list[float]) -> bool:
    """Whether an oriented curve came down from its first evaluation by ``MIN_IMPROVEMENT`` of its best."""
    return v[0] - min(v) >= MIN_IMPROVEMENT * abs(min(v))


def _late(steps: list[int], start: float, at_least: int) -> int:
    """Index of the first evaluation of the late part of training."""
    final = steps[-1]
    first = next(i for i, s in enumerate(steps) if s >= start * final)
    return min(first, max(0, len(steps) - at_least))


def _jitter(v: list[float]) -> float:
    rises = sum(max(0.0, b - a) for a, b in zip(v, v[1:]))
    falls = sum(max(0.0, a - b) for a, b in zip(v, v[1:]))
    return min(rises, falls)


def diagnose_curve(curve: Curve, metric: str, direction: str = "minimize", number: int | None = None) -> CurveDiagnosis:
    """Judge one training curve by the rules in this module's docstring.

    Args:
        curve: the trial's evaluations (``TrialRecord.curve``).
        metric: the objective's name in the curve (``"val_loss"``, ``"val_accuracy"``, ...).
        direction: ``"minimize"`` or ``"maximize"``: the objective's.
        number: the trial number, carried into the result.
    """
    steps, raw = _series(curve, metric)
    if len(raw) < MIN_EVALUATIONS:
        return CurveDiagnosis(number, len(raw), False)
    v = [oriented(x, direction) for x in raw]
    n = len(v)
    b = min(range(n), key=lambda i: (v[i], i))
    vmin, level = v[b], abs(v[b])
    improvement = _improvement(v)
    moved = _moved(v)

    # overfitting: worse at the end than at the best, while training loss kept falling.
    rise = (v[-1] - vmin) / max(v[0] - vmin, 1e-12) if b < n - 1 else 0.0
    train_drop = None
    t_steps, t_vals = _series(curve, TRAIN_LOSS)
    train_at = dict(zip(t_steps, t_vals))
    if steps[b] in train_at and t_steps and t_steps[-1] > steps[b]:
        tb = train_at[steps[b]]
        train_drop = (tb - t_vals[-1]) / max(abs(tb), 1e-12)

    # within noise: the end lies above the best by no more than the curve swings from the best
    # (or from the late part, when the best comes later) to the end. One verdict for the curve:
    # the Best line's step note and the findings below both follow it.
    late = _late(steps, LATE_START, 3)
    swing = _jitter(v[min(b, late):])
    gap = v[-1] - vmin
    within_noise = 0 < gap <= swing and gap >= ENDED_AS_GOOD * level and rise <= DIP_RISE_AT_MOST
    overfitting = (
        b < n - 1 and rise >= OVERFIT_RISE and v[-1] - vmin >= MIN_IMPROVEMENT * level
        and train_drop is not None and train_drop >= TRAIN_STILL_FALLING and not within_noise
    )

    # late variance: back and forth in the second half, on the objective and the training loss.
    jitter = _jitter(v[late:]) / improvement
    if len(t_vals) >= MIN_EVALUATIONS:
        t_late = _late(t_steps, LATE_START, 3)
        jitter = max(jitter, _jitter(t_vals[t_late:]) / _improvement(t_vals))
    late_variance = moved and jitter >= LATE_JITTER

    # still improving: a real gain in the last quarter, ending on the best evaluation.
    last_q = _late(steps, STILL_IMPROVING_FROM, 2)
    late_gain = (v[last_q] - v[-1]) / improvement
    still_improving = moved and b == n - 1 and late_gain >= STILL_IMPROVING_GAIN

    # saturated early: close to the best by half of training, and nothing above holds. Close
    # means within SATURATED_TOL of the improvement and of the level: a loss that fell from 2.3
    # to 0.14 by mid-training and then to 0.098 was not done at 0.14.
    sat_i = next(i for i in range(n) if v[i] <= vmin + SATURATED_TOL * min(v[0] - vmin, level))
    saturated_at = steps[sat_i]
    saturated_early = (
        moved and saturated_at <= SATURATED_BY * steps[-1] and not overfitting and not still_improving
        and not within_noise
    )
    return CurveDiagnosis(
        number=number, evaluations=n, judged=True, best_step=steps[b], final_step=steps[-1],
        best=raw[b], final=raw[-1], overfitting=overfitting, late_variance=late_variance,
        still_improving=still_improving, saturated_early=saturated_early, rise=rise, jitter=jitter,
        late_gain=late_gain, saturated_at=saturated_at, saturated_value=raw[sat_i], train_drop=train_drop,
        swing=swing / improvement, within_noise=within_noise, swing_from=steps[min(b, late)],
    )


def diagnose_best(study: Study, settings: StudySettings | None = None) -> tuple[CurveDiagnosis, ...]:
    """Diagnose the curves of the ``CURVE_TRIALS`` best completed trials, best first."""
    trials, settings = unpack(study, settings)
    best = ranked(trials, settings.direction)[:CURVE_TRIALS]
    return tuple(diagnose_curve(t.curve, settings.metric, settings.direction, t.number) for t in best)


def curve_findings(diagnoses: Sequence[CurveDiagnosis], metric: str) -> tuple[Finding, ...]:
    """One finding per kind that holds for the best trial or for most of the diagnosed trials."""
    judged = [d for d in diagnoses if d.judged]
    if not judged:
        return ()
    out = []
    for kind in KINDS:
        hits = [d for d in judged if getattr(d, kind)]
        if not hits or not (getattr(judged[0], kind) or 2 * len(hits) > len(judged)):
            continue
        d = hits[0]
        who = trial_list([h.number for h in hits]) if hits[0].number is not None else "the curve"
        if kind == "overfitting":
            title = f"overfitting: {metric} turns worse while the training loss falls"
            detail = (
                f"In {who}: the best {metric} ({fmt(d.best)}) came at step {d.best_step} of {d.final_step}; "
                f"it ended at {fmt(d.final)} ({d.rise:.0%} of its improvement lost) while the training loss "
                f"fell another {d.train_drop:.0%}."
            )
        elif kind == "late_variance":
            title = "high step-to-step variance late in training"
            detail = (
                f"In {who}: in the second half of training the curves go up and down by "
                f"{d.jitter:.0%} of their whole improvement."
            )
            if d.within_noise:  # the Best line's note calls its best a dip: say why nothing else is raised
                name = f"Trial {d.number}" if d.number is not None else "The curve"
                detail += (f" {name} ends {d.rise:.0%} of its improvement above its best evaluation (step "
                           f"{d.best_step}), less than its curve swings: that shows neither overfitting nor a "
                           "better, shorter run.")
        elif kind == "still_improving":
            title = "still improving at the end: train longer"
            detail = (
                f"In {who}: {metric} improved by {d.late_gain:.0%} of its whole improvement in the last "
                f"quarter of training and was best at the last evaluation ({fmt(d.final)} at step {d.final_step})."
            )
        else:
            title = "saturated early: train shorter"
            if d.saturated_at == d.best_step:  # "within 2% of its best" would compare it with itself
                detail = (f"In {who}: {metric} reached its best ({fmt(d.best)}) at step {d.best_step} of "
                          f"{d.final_step} and was no better after.")
            else:
                detail = (
                    f"In {who}: {metric} was {fmt(d.saturated_value)} by step {d.saturated_at} of {d.final_step}, "
                    f"within {SATURATED_TOL:.0%} of its best ({fmt(d.best)}, at step {d.best_step})."
                )
        severity = INFO if kind == "saturated_early" else WARNING
        out.append(Finding(kind, severity, title, detail, tuple(h.number for h in hits if h.number is not None)))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class Progress:
    """Whether any trial learned anything (the module docstring's **no_learning**).

    Attributes:
        trained: the trials judged: complete or pruned, with at least 2 finite evaluations.
        moved: those whose objective moved by ``MIN_IMPROVEMENT`` of its level.
        spread: how far apart the judged trials' best values lie, as a fraction of the best.
        start: the median first evaluation of the judged trials (None without any).
        best: the best value among them.
        largest_lr: the largest lr among them.
    """

    trained: tuple[int, ...]
    moved: tuple[int, ...]
    spread: float
    start: float | None
    best: float | None
    largest_lr: float | None

    @property
    def nothing_learned(self) -> bool:
        return bool(self.trained) and not self.moved and self.spread < MIN_IMPROVEMENT


def progress(study: Study, settings: StudySettings | None = None) -> Progress:
    """Whether any trial that trained moved its objective (see ``Progress``)."""
    trials, settings = unpack(study, settings)
    judged, moved, starts, bests, lrs = [], [], [], [], []
    for t in trials:
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        _, raw = _series(t.curve, settings.metric)
        if len(raw) < 2:
            continue
        v = [oriented(x, settings.direction) for x in raw]
        judged.append(t.number)
        if _moved(v):
            moved.append(t.number)
        starts.append(raw[0])
        bests.append(min(v))
        lrs.append(lr_of(t))
    if not judged:
        return Progress((), (), 0.0, None, None, None)
    spread = (max(bests) - min(bests)) / max(abs(min(bests)), 1e-12)
    best = oriented(min(bests), settings.direction)  # back in the objective's own direction
    known = [x for x in lrs if x is not None]
    return Progress(tuple(judged), tuple(moved), spread, sorted(starts)[len(starts) // 2], best,
                    max(known) if known else None)


def progress_findings(p: Progress, metric: str) -> tuple[Finding, ...]:
    """A warning when no trial learned anything."""
    if not p.nothing_learned:
        return ()
    n = len(p.trained)
    who = "the only trial that trained" if n == 1 else f"all {n} trials that trained"
    detail = f"{who[0].upper()}{who[1:]} stayed at {metric} ≈ {fmt(p.start)} (best {fmt(p.best)})"
    if p.largest_lr is not None:
        detail += f", with lr up to {fmt(p.largest_lr)}"
    return (Finding(
        "no_learning", WARNING,
        f"nothing learned: no trial moved {metric} by {MIN_IMPROVEMENT:.0%} from its first evaluation",
        detail + ".", p.trained,
    ),)


@dataclasses.dataclass(frozen=True)
class Stability:
    """Which trials diverged, and the learning rates on either side of the unstable region.

    Attributes:
        diverged: numbers of the diverged trials.
        trained: how many trials trained without diverging (complete or pruned).
        lr_tuned: whether lr was a tuned dimension (else the lrs are the fixed value).
        largest_stable_lr: the largest lr of a trial that trained to the end (a pruned trial
            may have stopped before it would have diverged, so it proves nothing).
        smallest_diverged_lr: the smallest lr of a trial that diverged.
        best_lr: the best trial's lr.
        completed: how many trials trained to the end.
        diverged_steps: the step at which each diverged trial diverged (1 = the loss of the
            initial weights on the first minibatch).
        largest_diverged_lr: the largest lr of a trial that diverged.
    """

    diverged: tuple[int, ...]
    trained: int
    lr_tuned: bool
    largest_stable_lr: float | None
    smallest_diverged_lr: float | None
    best_lr: float | None
    completed: int = 0
    diverged_steps: tuple[int, ...] = ()
    largest_diverged_lr: float | None = None

    @property
    def from_the_start(self) -> bool:
        """Every trial diverged within ``EARLY_STEPS`` steps, one at its very first step or at lrs
        ``NOT_THE_LR_SPAN`` apart, and none trained: NaN/inf from the data, the loss or the
        model's initial output, which no learning rate explains or fixes."""
        if not self.diverged or self.trained or len(self.diverged_steps) != len(self.diverged):
            return False
        if max(self.diverged_steps) > EARLY_STEPS:
            return False
        if min(self.diverged_steps) <= 1:
            return True
        lo, hi = self.smallest_diverged_lr, self.largest_diverged_lr
        return lo is not None and hi is not None and hi >= NOT_THE_LR_SPAN * lo

    @property
    def how_many_diverged(self) -> str:
        """``"every trial diverged"`` or ``"most trials diverged"``: why the lr window moves down."""
        return "most trials diverged" if self.trained else "every trial diverged"

    @property
    def window_too_high(self) -> bool:
        """The lr window lies mostly past what the model tolerates: lr is tuned, at least half of
        the trials that ran diverged, fewer than 2 trained to the end, and none of those at or
        above an lr that diverged. Then the lr window moves down before anything else."""
        return (self.lr_tuned and self.smallest_diverged_lr is not None and len(self.diverged) >= self.trained
                and self.completed < 2 and not self.overlap and not self.from_the_start)

    @property
    def overlap(self) -> bool:
        """Some trial diverged below an lr that trained fine: other hyperparameters matter too."""
        return (self.largest_stable_lr is not None and self.smallest_diverged_lr is not None
                and self.smallest_diverged_lr <= self.largest_stable_lr)

    @property
    def limits_best(self) -> bool:
        """Trials diverged within ``UNSTABLE_NEAR`` x of the best lr (or lr was not tuned)."""
        if not self.diverged:
            return False
        if not self.lr_tuned or self.best_lr is None or self.smallest_diverged_lr is None:
            return True
        return self.smallest_diverged_lr <= UNSTABLE_NEAR * self.best_lr


def stability(study: Study, settings: StudySettings | None = None) -> Stability:
    """Where training became unstable: diverged trials and the lrs bounding them."""
    trials, settings = unpack(study, settings)
    diverged = [t for t in trials if t.state == TrialState.DIVERGED]
    stable = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    d_lrs = [x for x in (lr_of(t) for t in diverged) if x is not None]
    s_lrs = [x for x in (lr_of(t) for t in stable if t.state == TrialState.COMPLETE) if x is not None]
    best = ranked(trials, settings.direction)
    return Stability(
        diverged=tuple(t.number for t in diverged), trained=len(stable),
        lr_tuned="lr" in settings.space.tuned,
        largest_stable_lr=max(s_lrs) if s_lrs else None,
        smallest_diverged_lr=min(d_lrs) if d_lrs else None,
        best_lr=lr_of(best[0]) if best else None,
        completed=sum(1 for t in stable if t.state == TrialState.COMPLETE),
        diverged_steps=tuple(t.steps for t in diverged if t.steps),
        largest_diverged_lr=max(d_lrs) if d_lrs else None,
    )


def stability_findings(s: Stability) -> tuple[Finding, ...]:
    """A finding when any trial diverged: a warning when it happened near the best lr, and one
    of kind ``lr_too_high`` when the lr window lies mostly where the model diverges."""
    if not s.diverged:
        return ()
    n = len(s.diverged)
    total = n + s.trained
    if s.lr_tuned and s.smallest_diverged_lr is not None:
        title = f"unstable: {n} of {total} trials diverged, from lr ≈ {fmt(s.smallest_diverged_lr)}"
        parts = [f"The smallest lr that diverged was {fmt(s.smallest_diverged_lr)}"]
        if s.largest_stable_lr is not None:
            parts.append(f"the largest that trained to the end without diverging {fmt(s.largest_stable_lr)}")
        detail = "; ".join(parts) + "."
        if s.overlap:
            detail += " The two overlap: whether a trial diverges depends on the other hyperparameters too."
        if s.best_lr is not None and not s.window_too_high:  # too high: the window moves, its action says so
            if s.limits_best:
                detail += f" The best trial's lr ({fmt(s.best_lr)}) is close to that unstable region."
            else:
                detail += (f" The best trial's lr ({fmt(s.best_lr)}) is well below it, so this only marks "
                           "where the window's unstable end begins.")
    else:
        title = f"unstable: {n} of {total} trials diverged"
        detail = f"{trial_list(list(s.diverged))} diverged (loss NaN/inf or far above its start)."
    if s.from_the_start:
        steps = sorted(set(s.diverged_steps))
        at = f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}-{steps[-1]}"
        lrs = (f", at lrs from {fmt(s.smallest_diverged_lr)} to {fmt(s.largest_diverged_lr)}"
               if s.lr_tuned and s.smallest_diverged_lr is not None else "")
        first = (" A loss non-finite at step 1 is the initial weights' on the first minibatch, before any update."
                 if steps[0] <= 1 else "")
        return (Finding(
            "nonfinite_start", WARNING,
            f"every trial diverged in its first steps{lrs}: look at the data and the loss, not the lr",
            f"{trial_list(list(s.diverged))} diverged at {at}{lrs}.{first} A learning rate does not do that.",
            s.diverged,
        ),)
    if s.window_too_high:  # not instability near a good lr: the window is too high; its action says so
        return (Finding("lr_too_high", WARNING, title.replace("unstable: ", "lr window too high: ", 1), detail,
                        s.diverged),)
    return (Finding("unstable", WARNING if s.limits_best else INFO, title, detail, s.diverged),)
