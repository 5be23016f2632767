"""What the report's plots show, computed without drawing (report/plots.py draws these records).

Diverged trials have no objective; they stay on every plot, placed at the "worse" edge (the
top when minimising, the bottom when maximising) with their own marker. Pruned trials show
their last evaluation, marked as pruned. Failed trials (the user's code raised) have no
objective either: the axis plots place them at the same edge with a marker of their own, since
failures that crowd one end of a window (a loss that raises when it explodes, at the largest
lrs) say where not to search; the other plots leave them to the trial table. Trials cut short
(Ctrl-C, a stopped study) are on no plot.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence

from adamtune.analysis._select import Study, top_trials, unit, unpack
from adamtune.space import Dimension
from adamtune.results import StudySettings
from adamtune.trials import TrialRecord, TrialState, oriented, ranked

PLOTTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.DIVERGED)
HEATMAP_PAIRS = (("lr", "beta1"), ("lr", "weight_decay"))
EDGE_MARGIN = 0.08  # diverged points sit this fraction of the value range beyond the worst value
# Scores that live in [0, 1]: on a log axis their good values (0.9 and up) crowd into one line.
_SCORE = re.compile(r"(?:^|[^a-z])(acc|accuracy|f1|precision|recall|auc|auroc)(?:[^a-z]|$)")


def log_axis(metric: str, values: Sequence[float | None]) -> bool:
    """Whether ``metric``'s ``values`` need a log axis: positive and spanning more than 20x.

    A score in [0, 1] (accuracy, F1, precision, recall, AUC, by its name) keeps a linear axis
    whatever its spread, so that 0.93 and 0.98 stay apart; a loss does not.
    """
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals or min(vals) <= 0 or max(vals) / min(vals) <= 20:
        return False
    return not (_SCORE.search(metric.lower()) and max(vals) <= 1)


@dataclasses.dataclass(frozen=True)
class AxisPoint:
    """One trial on an axis plot: ``x`` in the hyperparameter's units, ``y`` where it is drawn.

    ``at_edge`` is True when the trial has no objective (diverged or failed) and ``y`` is the edge.
    """

    number: int
    x: float
    y: float
    state: TrialState
    at_edge: bool
    is_best: bool


@dataclasses.dataclass(frozen=True)
class AxisPlotInfo:
    """Objective against one tuned hyperparameter, every trial.

    Attributes:
        dimension: the window searched (its scale is the x axis's).
        metric, direction: the objective.
        points: every plotted trial, failed ones too (not those cut short).
        y_range: ``(low, high)`` of the finite objective values, widened to include the edge.
        edge_y: where trials without an objective are drawn (None when there are none).
    """

    dimension: Dimension
    metric: str
    direction: str
    points: tuple[AxisPoint, ...]
    y_range: tuple[float, float]
    edge_y: float | None

    @property
    def log_y(self) -> bool:
        """Whether the objective axis is log (never with an edge line: it sits at a linear margin)."""
        return self.edge_y is None and log_axis(self.metric, [p.y for p in self.points])


def _value_range(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if hi == lo:
        pad = abs(hi) * 0.1 or 1.0
        return lo - pad, hi + pad
    return lo, hi


def axis_plot_info(study: Study, settings: StudySettings | None = None) -> tuple[AxisPlotInfo, ...]:
    """One axis plot per tuned hyperparameter: objective vs value for every trial, failed ones at the edge."""
    trials, settings = unpack(study, settings)
    best = ranked(trials, settings.direction)
    best_number = best[0].number if best else None
    shown = [t for t in trials if t.state in PLOTTED or t.state == TrialState.FAILED and not t.interrupted]
    finite = [t.value for t in shown if t.value is not None and math.isfinite(t.value) and t.state != TrialState.DIVERGED]
    lo, hi = _value_range(finite)
    margin = EDGE_MARGIN * (hi - lo)
    edge = hi + margin if settings.direction == "minimize" else lo - margin
    needs_edge = any(t.state in (TrialState.DIVERGED, TrialState.FAILED) or t.value is None for t in shown)
    y_range = (min(lo, edge), max(hi, edge)) if needs_edge else (lo, hi)
    out = []
    for dim in settings.space.dimensions:
        points = []
        for t in shown:
            x = t.params.get(dim.name)
            if x is None:
                continue
            no_value = (t.state in (TrialState.DIVERGED, TrialState.FAILED) or t.value is None
                        or not math.isfinite(t.value))
            points.append(AxisPoint(t.number, x, edge if no_value else t.value, t.state, no_value, t.number == best_number))
        out.append(AxisPlotInfo(dim, settings.metric, settings.direction, tuple(points), y_range,
                                edge if needs_edge else None))
    return tuple(out)


def bucket_count(n: int, lo: int = 3, hi: int = 10) -> int:
    """Buckets per axis for ``n`` trials: about sqrt(n), between ``lo`` and ``hi``."""
    return max(lo, min(hi, round(math.sqrt(max(n, 1)))))


def _bucket(dim: Dimension, t: TrialRecord, n: int) -> int | None:
    u = unit(dim, t)
    if u is None:
        return None
    return min(n - 1, max(0, int(u * n + 1e-9)))  # a value on a bucket edge (up to rounding) goes up


def _best_of(group: Sequence[TrialRecord], direction: str) -> tuple[float | None, int | None]:
    """``(value, number)`` of the best completed trial in ``group``, or ``(None, None)``."""
    done = ranked(group, direction)
    return (done[0].value, done[0].number) if done else (None, None)


def _edges(dim: Dimension, n: int) -> tuple[float, ...]:
    return tuple(dim.from_unit(i / n) for i in range(n + 1))


@dataclasses.dataclass(frozen=True)
class IsolationBucket:
    """One bucket of an isolation plot: the best completed trial in ``low``..``high``.

    ``trials`` counts every plotted trial in the bucket, ``diverged`` and ``pruned`` those states.
    """

    low: float
    high: float
    best: float | None
    best_trial: int | None
    trials: int
    diverged: int
    pruned: int


@dataclasses.dataclass(frozen=True)
class IsolationInfo:
    """The best objective per bucket of one hyperparameter (buckets equal on its scale)."""

    dimension: Dimension
    metric: str
    direction: str
    buckets: tuple[IsolationBucket, ...]

    @property
    def log_y(self) -> bool:
        """Whether the best values need a log axis."""
        return log_axis(self.metric, [b.best for b in self.buckets])


def isolation_info(study: Study, settings: StudySettings | None = None, buckets: int | None = None) -> tuple[IsolationInfo, ...]:
    """Isolation plots: per tuned hyperparameter, the best completed trial in each bucket.

    Buckets split the window evenly on its own scale (log for ``lr``, log of ``1 - beta`` for
    the betas); ``buckets`` defaults to about the square root of the number of trials (3-10).
    """
    trials, settings = unpack(study, settings)
    shown = [t for t in trials if t.state in PLOTTED]
    n = buckets or bucket_count(len(shown))
    out = []
    for dim in settings.space.dimensions:
        rows = []
        edges = _edges(dim, n)
        members: list[list[TrialRecord]] = [[] for _ in range(n)]
        for t in shown:
            b = _bucket(dim, t, n)
            if b is not None:
                members[b].append(t)
        for i, group in enumerate(members):
            rows.append(IsolationBucket(
                edges[i], edges[i + 1], *_best_of(group, settings.direction),
                len(group), sum(t.state == TrialState.DIVERGED for t in group),
                sum(t.state == TrialState.PRUNED for t in group),
            ))
        out.append(IsolationInfo(dim, settings.metric, settings.direction, tuple(rows)))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class HeatmapCell:
    """The best completed trial in one cell, and how many trials fell there and diverged."""

    best: float | None
    best_trial: int | None
    trials: int
    diverged: int


@dataclasses.dataclass(frozen=True)
class HeatmapInfo:
    """The best objective over a grid of two hyperparameters.

    Attributes:
        x, y: the two dimensions (x is lr).
        x_edges, y_edges: the cell boundaries in the hyperparameters' units.
        cells: ``cells[row][column]``, row along ``y``, column along ``x``.
        points: ``(trial number, x value, y value, state)`` of every plotted trial.
        best_trial: the number of the study's best trial, None when no trial completed.
    """

    x: Dimension
    y: Dimension
    metric: str
    direction: str
    x_edges: tuple[float, ...]
    y_edges: tuple[float, ...]
    cells: tuple[tuple[HeatmapCell, ...], ...]
    points: tuple[tuple[int, float, float, TrialState], ...]
    best_trial: int | None


def heatmap_info(study: Study, settings: StudySettings | None = None, bins: int | None = None) -> tuple[HeatmapInfo, ...]:
    """lr x beta1 and lr x weight_decay heatmaps, for each pair the study tuned and has trials of."""
    trials, settings = unpack(study, settings)
    tuned = {d.name: d for d in settings.space.dimensions}
    shown = [t for t in trials if t.state in PLOTTED]
    n = bins or bucket_count(len(shown), 3, 6)
    _, best_number = _best_of(trials, settings.direction)
    out = []
    for xn, yn in HEATMAP_PAIRS:
        if xn not in tuned or yn not in tuned:
            continue
        xd, yd = tuned[xn], tuned[yn]
        groups: dict[tuple[int, int], list[TrialRecord]] = {}
        points = []
        for t in shown:
            bx, by = _bucket(xd, t, n), _bucket(yd, t, n)
            if bx is None or by is None:
                continue
            groups.setdefault((by, bx), []).append(t)
            points.append((t.number, t.params[xn], t.params[yn], t.state))
        if not points:
            continue
        cells = []
        for row in range(n):
            line = []
            for col in range(n):
                group = groups.get((row, col), [])
                line.append(HeatmapCell(*_best_of(group, settings.direction),
                                        len(group), sum(t.state == TrialState.DIVERGED for t in group)))
            cells.append(tuple(line))
        out.append(HeatmapInfo(xd, yd, settings.metric, settings.direction, _edges(xd, n), _edges(yd, n),
                               tuple(cells), tuple(points), best_number))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class CurveSeries:
    """One trial's curve of one metric.

    Attributes:
        number, state: the trial.
        steps, values: the evaluations (values may be NaN where not finite).
        rank: 0 for the best trial, 1.. for the next best trials, None otherwise.
    """

    number: int
    state: TrialState
    steps: tuple[int, ...]
    values: tuple[float, ...]
    rank: int | None


@dataclasses.dataclass(frozen=True)
class CurvesInfo:
    """Training curves of every trial for one metric (``val_loss``, ``train_loss``, ...)."""

    metric: str
    is_objective: bool
    direction: str | None
    series: tuple[CurveSeries, ...]

    @property
    def log_y(self) -> bool:
        """Whether the curves need a log axis (losses spanning orders of magnitude; never a score in [0, 1])."""
        return log_axis(self.metric, [v for s in self.series for v in s.values])


def curves_info(study: Study, settings: StudySettings | None = None) -> tuple[CurvesInfo, ...]:
    """Per metric recorded by any trial -- the objective first, then ``train_loss``, then the rest.

    A metric no trial has a finite value of is left out.
    """
    trials, settings = unpack(study, settings)
    shown = [t for t in trials if t.state in PLOTTED and t.curve.steps]
    names: list[str] = []
    for t in shown:
        for name in t.curve.metrics:
            if name not in names:
                names.append(name)
    order = [settings.metric] + ["train_loss"] + sorted(n for n in names if n not in (settings.metric, "train_loss"))
    top = {t.number: i for i, t in enumerate(top_trials(trials, settings.direction))}
    out = []
    for name in order:
        if name not in names:
            continue
        series = tuple(
            CurveSeries(t.number, t.state, t.curve.steps, tuple(t.curve.metrics[name]), top.get(t.number))
            for t in shown if name in t.curve.metrics
        )
        if not any(math.isfinite(v) for s in series for v in s.values):
            continue  # nothing to draw: every evaluation of it was NaN/inf
        is_obj = name == settings.metric
        direction = settings.direction if is_obj else ("minimize" if name.endswith("loss") else None)
        out.append(CurvesInfo(name, is_obj, direction, series))
    return tuple(out)


def sorted_for_table(study: Study, settings: StudySettings | None = None) -> tuple[TrialRecord, ...]:
    """Every trial for the report's table: completed best first, then pruned, diverged, failed, others."""
    trials, settings = unpack(study, settings)
    done = ranked(trials, settings.direction)
    numbers = {t.number for t in done}
    order = {TrialState.PRUNED: 1, TrialState.DIVERGED: 2, TrialState.FAILED: 3}
    rest = sorted((t for t in trials if t.number not in numbers),
                  key=lambda t: (order.get(t.state, 4), oriented(t.value, settings.direction) if t.value is not None else math.inf, t.number))
    return tuple(done) + tuple(rest)

