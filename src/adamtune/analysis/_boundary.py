"""The boundary check: do the best trials sit at an edge of a search window?

The playbook calls a search space suspicious when its best points lie near a boundary: the
optimum may lie beyond it. adamtune checks every tuned dimension on its own scale (log for
``lr``, log of ``1 - beta`` for the betas), so "near" means the same thing for every one.

The rule, per dimension and edge (positions are ``Dimension.to_unit``: 0 at ``low``, 1 at ``high``):

- the best trial lies within ``EDGE_BAND`` (10%) of the edge -- or within ``1/n`` of it for a
  study of ``n`` trials, since a quasi-random search of n points leaves gaps of about 1/n and
  cannot place a point any closer -- or it lies in the outer ``NEAR`` (quarter) of the window
  and another of the best trials lies within that band: best trials at 0.89, 0.95 and 0.99
  crowd the edge as much as 0.91, 0.80 and 0.75 do, and
- every one of the best trials (top 10% of the completed trials, at least 3) lies in the half
  of the window on that side, so one lucky trial in a dimension that does not matter does not
  fire it.

When the best trials are most of the completed ones (3 of at most 5; the rule's ``FEW``),
belonging to them says little: the third best of 4 is the second worst. Then another best trial
in the band counts only when its value is ``close`` to the best's: in the better half of the
completed trials' values (no further from the best's than from the worst's). A trial in the worse
half is no more like the best than like the worst, so its position says nothing about where the
good values are; the best trial's own position in the band still counts. The audit's
digits-cnn-next widened beta1 to 0.078..0.999 on the third best of 4 completed trials, 0.0633
against the best's 0.0415 and the worst's 0.0688, and the next study's best was no better.

It needs ``MIN_COMPLETED`` (2) completed trials: one trial is not "the best trials". It does
not fire when a trial at or beyond the best trial's position towards that edge diverged: then
the edge is the stability limit and there is nothing to gain beyond it (an info finding says
so). For a dimension other than ``lr``, a diverged trial whose lr is above every lr that
trained to the end is not counted: its lr explains its divergence.
When it fires, the proposal extends the window on that side by ``WIDEN`` (half its width) on
its own scale, within what the hyperparameter allows (``lr > 0``, betas below 1, ...); an edge
that already is such a hard limit is noted (``edge`` set) but proposes nothing.

AdamW's weight_decay is bounded by its decay timescale τ = 1/(lr·λ) at the best trial's lr
(``_decay.decay_window_limit``): not widened down where decay barely acts (τ far longer than the
run, what the decay-timescale finding says: smaller values act even less), and not widened up past
the λ whose τ is one epoch (``guide.shortest_decay_timescale``). Such an edge is noted with
``note`` saying why, and an info finding says so instead of a warning.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from types import EllipsisType

from adamtune import guide
from adamtune.analysis._curves import Stability, stability
from adamtune.analysis._decay import DecayTimescale, decay_timescale, decay_window_limit
from adamtune.analysis._finding import INFO, WARNING, Finding, fmt, trial_list
from adamtune.analysis._format import set_argument, window_text
from adamtune.analysis._select import Study, lr_of, top_trials, unit, unpack
from adamtune.errors import AdamtuneError
from adamtune.space import Dimension, SearchSpace
from adamtune.results import StudySettings
from adamtune.trials import TrialRecord, TrialState, ranked

EDGE_BAND = 0.1
NEAR = 0.25
# The best trials are "most of the completed ones" when more than this share of them.
FEW = 0.5
WIDEN = 0.5
MIN_COMPLETED = 2
LOWER, UPPER = "lower", "upper"


@dataclasses.dataclass(frozen=True)
class BoundaryCheck:
    """The boundary check of one tuned dimension.

    Attributes:
        name: the hyperparameter.
        window: the dimension as the study searched it.
        band: how close to an edge counts as "at the edge", in units of the window's width.
        best_position: where the best trial sits (0 = low, 1 = high, on the window's scale);
            None without a completed trial.
        top_positions: ``(trial number, position)`` of each of the best trials, best first.
        edge: ``"lower"`` or ``"upper"`` when the check fires, else None.
        stability_limit: diverged trials at or beyond the best trial towards an edge the best
            trials sit at; the edge is then not reported.
        proposal: the widened window when the check fires and the edge is not a hard limit.
        note: why the proposal stops short of the rule's, or why there is none although the check
            fired (AdamW's weight_decay: its decay timescale), in a sentence; "" otherwise.
    """

    name: str
    window: Dimension
    band: float
    best_position: float | None
    top_positions: tuple[tuple[int, float], ...]
    edge: str | None = None
    stability_limit: tuple[int, ...] = ()
    proposal: Dimension | None = None
    note: str = ""

    @property
    def set_argument(self) -> str | None:
        """``--set`` text of the proposal (``"lr=1e-06:0.001"``), or None."""
        return None if self.proposal is None else set_argument(self.proposal)


def boundary_check(study: Study, settings: StudySettings | None = None, stab: Stability | None = None,
                   decay: DecayTimescale | None | EllipsisType = ...) -> tuple[BoundaryCheck, ...]:
    """Check every tuned dimension for best trials at an edge of its window.

    Args:
        study: a TuneResult, or a sequence of TrialRecords (then ``settings`` is required).
        settings: the study's settings (taken from the TuneResult when omitted).
        stab: the study's stability, if already computed.
        decay: the best trial's decay timescale, if already computed (None: there is none).

    Returns:
        One BoundaryCheck per tuned dimension, in the search space's order.
    """
    trials, settings = unpack(study, settings)
    top = top_trials(trials, settings.direction)
    if len(top) < MIN_COMPLETED:
        top = []
    close = _close_to_the_best(trials, settings.direction)
    stab = stab if stab is not None else stability(trials, settings)
    stable_lr = stab.largest_stable_lr
    decay = decay_timescale(trials, settings) if decay is ... else decay
    out = []
    for dim in settings.space.dimensions:
        sampled = [t for t in trials if unit(dim, t) is not None and t.state != TrialState.FAILED]
        band = max(EDGE_BAND, 1.0 / len(sampled)) if sampled else EDGE_BAND
        positions = tuple((t.number, unit(dim, t)) for t in top if unit(dim, t) is not None)
        if not positions:
            out.append(BoundaryCheck(dim.name, dim, band, None, ()))
            continue
        best = positions[0][1]
        us = [u for _, u in positions]
        # the positions that may put the best trials in the band: the best's, and the others' when close
        counted = [best, *(u for n, u in positions[1:] if n in close)]
        edge = None
        if best <= NEAR and min(counted) <= band and all(u <= 0.5 for u in us):
            edge = LOWER
        elif best >= 1 - NEAR and max(counted) >= 1 - band and all(u >= 0.5 for u in us):
            edge = UPPER
        limit: tuple[int, ...] = ()
        if edge is not None:
            beyond = [
                t.number for t in trials if t.state == TrialState.DIVERGED and unit(dim, t) is not None
                and (unit(dim, t) >= best if edge == UPPER else unit(dim, t) <= best)
                and (dim.name == "lr" or not _lr_explains(t, stable_lr))
            ]
            if beyond:
                edge, limit = None, tuple(beyond)
        proposal = widen(dim, edge, settings.space) if edge is not None else None
        note = ""
        if edge is not None:
            proposal, note = decay_window_limit(dim, edge, proposal, decay)
        if proposal is not None:
            # Widened down, the top of the window is where every trial diverged: leave it out,
            # so the next budget is not spent there again.
            proposal = below_divergence(proposal, stab)
        out.append(BoundaryCheck(dim.name, dim, band, best, positions, edge, limit, proposal, note))
    return tuple(out)


def _close_to_the_best(trials: Sequence[TrialRecord], direction: str) -> set[int]:
    """Numbers of the completed trials whose place among the best trials counts (see the module's
    docstring): every one, unless the best trials are most of the completed ones; then those whose
    value is no further from the best's than from the worst completed trial's."""
    done = ranked(trials, direction)
    if len(top_trials(trials, direction)) <= FEW * len(done):
        return {t.number for t in done}
    best, worst = done[0].value, done[-1].value
    return {t.number for t in done if abs(t.value - best) <= abs(worst - t.value)}


def below_divergence(window: Dimension, stab: Stability) -> Dimension:
    """lr's ``window`` with its top lowered to the smallest lr that diverged (rounded down to one
    significant figure where that keeps every lr that trained), so a next search does not spend
    its budget where every trial diverged.

    The window is kept when it is not lr's, nothing diverged, some trial diverged below an lr that
    trained (other hyperparameters matter too), or no trial trained or ranked best.
    """
    cut = stab.smallest_diverged_lr
    kept = [x for x in (stab.largest_stable_lr, stab.best_lr) if x is not None]
    if window.name != "lr" or cut is None or stab.overlap or not kept:
        return window
    top = round_down(cut)
    if top <= max(kept):  # rounding would cut off an lr that trained: the diverged lr itself
        top = cut
    if not max(kept) < top < window.high:
        return window
    try:
        return Dimension(window.name, window.low, top, window.scale)
    except AdamtuneError:
        return window


def round_down(x: float) -> float:
    """``x`` rounded down to one significant figure (0.505 -> 0.5), a window edge that reads well."""
    scale = 10 ** math.floor(math.log10(x))
    return math.floor(x / scale * (1 + 1e-12)) * scale


def _lr_explains(trial: TrialRecord, stable_lr: float | None) -> bool:
    """Whether a diverged trial's lr is above every lr that trained to the end."""
    lr = lr_of(trial)
    return stable_lr is not None and lr is not None and lr > stable_lr


def widen(dim: Dimension, edge: str, space: SearchSpace | None = None, by: float = WIDEN) -> Dimension | None:
    """``dim`` extended past ``edge`` by ``by`` of its width on its own scale.

    The new bound is pulled back towards the old one (halving the extension) until it is a
    value the hyperparameter may take: ``Dimension``'s rules (log: > 0; log of 1-x: < 1) and,
    given ``space``, ``Config``'s (``weight_decay >= 0``, ...); ``warmup`` stops at the
    playbook's ``guide.MAX_WARMUP_FRACTION`` of the steps.

    Returns:
        The widened window, or None when the edge already is a hard limit (a linear
        ``weight_decay`` window starting at 0 cannot go lower).
    """
    if dim.name == "warmup" and edge == UPPER and dim.high >= guide.MAX_WARMUP_FRACTION:
        return None
    for _ in range(20):
        u = 1 + by if edge == UPPER else -by
        bound = dim.from_unit(u)
        if dim.name == "warmup":  # the playbook's cap, which guide states too
            bound = min(bound, guide.MAX_WARMUP_FRACTION)
        low, high = (dim.low, bound) if edge == UPPER else (bound, dim.high)
        try:
            candidate = Dimension(dim.name, low, high, dim.scale)
            if space is not None:
                space.config_with({dim.name: candidate.low})
                space.config_with({dim.name: candidate.high})
            if abs(candidate.to_unit(dim.low) - candidate.to_unit(dim.high)) < 0.99:  # gained at least 1%
                return candidate
        except (AdamtuneError, OverflowError, ValueError, ZeroDivisionError):
            pass
        by /= 2
    return None


def boundary_findings(checks: Sequence[BoundaryCheck]) -> tuple[Finding, ...]:
    """A warning for each dimension whose best trials sit at an edge, with the widened window; an
    info finding instead where the decay timescale holds the window (``note`` without a proposal)."""
    out = []
    for c in checks:
        if c.stability_limit:
            out.append(_limit_finding(c))
            continue
        if c.edge is not None and c.proposal is None and c.note:
            out.append(_held_finding(c))
            continue
        if c.edge is None or c.proposal is None:
            continue
        side_value = c.window.high if c.edge == UPPER else c.window.low
        beyond = "above" if c.edge == UPPER else "below"
        out.append(Finding(
            kind="boundary", severity=WARNING,
            title=f"{c.name}: the best trials sit at the {c.edge} edge of its window {window_text(c.window)}",
            detail=(
                f"{_where(c)} The optimum may lie {beyond} {fmt(side_value)}: widen the window to "
                f"{window_text(c.proposal)}." + (f" {c.note}" if c.note else "")
            ),
            trials=tuple(n for n, _ in c.top_positions),
            suggestion=(f"--set {c.set_argument}",),
        ))
    return tuple(out)


def _where(c: BoundaryCheck) -> str:
    """Where the best trials sit, in a sentence: "The best trial (8, lr=0.007) is 5% of ..."."""
    numbers = tuple(n for n, _ in c.top_positions)
    where = "top" if c.edge == UPPER else "bottom"
    nearest, u_nearest = min(c.top_positions, key=lambda p: _distance(p[1], c.edge))
    closer = ("" if nearest == numbers[0] else f" (trial {nearest}, {c.name}={fmt(c.window.from_unit(u_nearest))}, "
              f"is {_distance(u_nearest, c.edge):.0%})")
    n = len(numbers)
    every = ("it is the only completed trial and lies" if n == 1 else
             f"both best trials ({trial_list(numbers)}) lie" if n == 2 else
             f"all {n} best trials ({trial_list(numbers)}) lie")
    scale = {"log": "on a log scale", "log1m": "on a log scale of 1-x", "linear": "on a linear scale"}[c.window.scale]
    return (f"The best trial ({numbers[0]}, {c.name}={fmt(c.window.from_unit(c.best_position))}) is "
            f"{_distance(c.best_position, c.edge):.0%} of the window's width from its {where} ({scale}){closer}, "
            f"and {every} in that half.")


def _held_finding(c: BoundaryCheck) -> Finding:
    """The best trials sit at an edge, but the decay timescale says widening there adds nothing."""
    why = ("where decay barely acts: not widened down" if c.edge == LOWER else
           "where decay is already as strong as adamtune proposes: not widened up")
    return Finding(
        kind="decay_timescale", severity=INFO,
        title=f"{c.name}: the best trials sit at the {c.edge} edge of its window {window_text(c.window)}, {why}",
        detail=f"{_where(c)} {c.note}",
        trials=tuple(n for n, _ in c.top_positions),
    )


def _distance(u: float, edge: str) -> float:
    """How far position ``u`` is from ``edge``, in units of the window's width."""
    return 1 - u if edge == UPPER else u


def _limit_finding(c: BoundaryCheck) -> Finding:
    """The best trials sit at an edge, but trials beyond them diverged: not widened."""
    edge = UPPER if c.best_position is not None and c.best_position >= 0.5 else LOWER
    beyond = "above" if edge == UPPER else "below"
    return Finding(
        kind="unstable", severity=INFO,
        title=f"{c.name}: the best trials sit at the {edge} edge of {window_text(c.window)}, where training turns unstable",
        detail=(f"The best trial has {c.name}={fmt(c.window.from_unit(c.best_position))}; "
                f"{trial_list(list(c.stability_limit))} diverged at or {beyond} it, so the window is not "
                "widened there: the edge is the stability limit, not a missed optimum."),
        trials=c.stability_limit,
    )
