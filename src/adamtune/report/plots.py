"""Draw the analysis records as inline SVG (matplotlib, no pyplot, no network). Computes nothing new.

Every function takes a record from ``adamtune.analysis`` and returns an ``<svg>`` element as
text, ready to be placed in an HTML page. One visual language throughout: completed trials
are blue dots, the best trial a gold star, pruned trials hollow grey rings, diverged trials
red crosses on the dashed "diverged" line at the worse edge of the plot, and failed trials (the
user's code raised; axis plots only) dark hollow squares on that line.
"""

from __future__ import annotations

import functools
import io
import math
import re
from collections.abc import Callable, Sequence

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullLocator

from adamtune.analysis import (
    AxisPlotInfo, AxisPoint, BoundaryCheck, ClipAdvice, CurvesInfo, HeatmapInfo, IsolationInfo, log_axis, window_text,
)
from adamtune.space import Dimension
from adamtune.trials import TrialState

BLUE = "#2563eb"
GOLD = "#f59e0b"
GREY = "#9ca3af"
RED = "#dc2626"
INK = "#1f2937"
MUTED = "#6b7280"
GRID = "#e5e7eb"
EDGE_FILL = "#fde68a"
TOP_COLORS = ("#f59e0b", "#7c3aed", "#0d9488", "#db2777", "#65a30d")

_RC = {
    "svg.fonttype": "none",  # text stays text: smaller files, crisp in the browser, findable in the DOM
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial"],
    "font.size": 9,
    "axes.edgecolor": "#d1d5db",
    "axes.labelcolor": INK,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "legend.frameon": False,
    "legend.fontsize": 8,
}
_counter = [0]


def _styled(draw: Callable[..., str]) -> Callable[..., str]:
    """Run a drawing function under adamtune's matplotlib style (rcParams apply at creation)."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> str:
        with matplotlib.rc_context(_RC):
            return draw(*args, **kwargs)

    return wrapper


def _label(text: str) -> str:
    """User text (metric names) as a literal matplotlib label: ``$`` would start mathtext."""
    return text.replace("$", r"\$")


def to_svg(fig: Figure) -> str:
    """``fig`` as an inline ``<svg>`` element (no XML prolog, no metadata)."""
    _counter[0] += 1
    # The salt keeps clip-path ids unique across the figures of one page.
    with matplotlib.rc_context({**_RC, "svg.hashsalt": f"adamtune-{_counter[0]}"}):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    # matplotlib names every group (id="figure_1", "axes_1", ...) the same in every figure; a page
    # must not repeat an id, so keep only the ids something refers to (salted hashes, unique).
    used = set(re.findall(r"#([^\s\"')]+)", text))
    text = re.sub(r' id="([^"]+)"', lambda m: m.group(0) if m.group(1) in used else "", text)
    return text.replace("<svg ", '<svg class="figure" role="img" ', 1)


def _figure(width: float = 4.4, height: float = 3.4, *, left: float = 0.16, right: float = 0.93,
            bottom: float = 0.27, top: float = 0.9) -> tuple[Figure, object]:
    # Fixed margins rather than bbox_inches="tight" or a layout engine: each of those draws the
    # figure once more, and a report has a dozen figures.
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left, right=right, bottom=bottom, top=top)
    ax = fig.add_subplot()
    # Few ticks: laying out tick labels is most of the drawing time.
    ax.xaxis.set_major_locator(MaxNLocator(6))
    ax.yaxis.set_major_locator(MaxNLocator(5))
    ax.grid(True, color=GRID, linewidth=0.6)
    ax.set_axisbelow(True)
    return fig, ax


def _log_ticks(axis, lo: float, hi: float) -> None:
    """Ticks between the decades too when ``lo``..``hi`` spans under two: else one label or none."""
    ratio = hi / lo
    if ratio < 100:
        subs = (1.0, 2.0, 5.0) if ratio >= 10 else (1.0, 2.0, 3.0, 5.0) if ratio >= 3 else tuple(range(1, 10))
        axis.set_major_locator(LogLocator(subs=subs))


def _finish_y(fig: Figure, ax) -> None:
    """Once the y axis holds its data: enough ticks on a short log axis, and room for the labels."""
    if ax.get_yscale() == "log":
        _log_ticks(ax.yaxis, *sorted(ax.get_ylim()))
    _fit_left(fig, ax)


def _fit_left(fig: Figure, ax) -> None:
    """Widen the left margin until the y label clears the widest y tick label ("100000", "diverged").

    The margins are fixed (see ``_figure``), so the width is estimated from the labels' length
    rather than measured, which would mean drawing the figure once more.
    """
    lo, hi = sorted(ax.get_ylim())
    locs = [v for v in ax.yaxis.get_major_locator()() if lo <= v <= hi]
    chars = max((len(t) for t in ax.yaxis.get_major_formatter().format_ticks(locs)), default=0)
    size = matplotlib.rcParams["font.size"]
    # glyphs ~0.64 em wide; tick, pad, label pad and the label's own line height
    need = chars * 0.64 * size + 3.5 + 3.5 + 4 + 1.3 * size + 3
    fig.subplots_adjust(left=max(fig.subplotpars.left, need / (fig.get_figwidth() * 72)))


def _tick_text(v: float, _pos: object = None) -> str:
    """``1e-5`` rather than mathtext's 10^-5: plain text is much faster to lay out."""
    text = f"{v:g}"
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + ("-" if m.group(1) == "-" else "") + m.group(2), text)


def _plain_log(axis) -> None:
    axis.set_major_formatter(FuncFormatter(_tick_text))
    axis.set_minor_locator(NullLocator())


_BETA_TICKS = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9998, 0.9999, 0.99995, 0.99999)


def set_scale(ax, dim: Dimension, axis: str = "x") -> None:
    """Give ``axis`` the dimension's own scale: log, linear, or log of 1-x with beta-valued ticks."""
    setter = ax.set_xscale if axis == "x" else ax.set_yscale
    target = ax.xaxis if axis == "x" else ax.yaxis
    if dim.scale == "log":
        setter("log")
        _plain_log(target)
        _log_ticks(target, dim.low, dim.high)
    elif dim.scale == "log1m":
        setter("function", functions=(_log1m, _log1m_inv))
        lo, hi = dim.from_unit(-0.6), dim.from_unit(1.6)
        ticks = [t for t in _BETA_TICKS if lo <= t <= hi] or [dim.low, dim.high]
        target.set_major_locator(FixedLocator(ticks))
        target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        target.set_minor_locator(NullLocator())


def _log1m(x):
    import numpy as np

    return -np.log10(np.clip(1 - np.asarray(x, dtype=float), 1e-300, None))


def _log1m_inv(y):
    import numpy as np

    return 1 - np.power(10.0, -np.asarray(y, dtype=float))


def _objective_label(metric: str, direction: str) -> str:
    return f"{_label(metric)} ({'lower' if direction == 'minimize' else 'higher'} is better)"


def _scatter_states(ax, points, x_of, y_of) -> None:
    done = [p for p in points if p.state == TrialState.COMPLETE and not p.is_best and not p.at_edge]
    pruned = [p for p in points if p.state == TrialState.PRUNED and not p.at_edge]
    diverged = [p for p in points if p.at_edge and p.state != TrialState.FAILED]
    failed = [p for p in points if p.at_edge and p.state == TrialState.FAILED]
    best = [p for p in points if p.is_best]
    if done:
        ax.scatter([x_of(p) for p in done], [y_of(p) for p in done], s=28, color=BLUE, alpha=0.85, zorder=3,
                   linewidths=0)
    if pruned:
        ax.scatter([x_of(p) for p in pruned], [y_of(p) for p in pruned], s=28, facecolors="none",
                   edgecolors=GREY, linewidths=1.2, zorder=3)
    if diverged:
        ax.scatter([x_of(p) for p in diverged], [y_of(p) for p in diverged], s=40, marker="x", color=RED,
                   linewidths=1.6, zorder=4)
    if failed:
        ax.scatter([x_of(p) for p in failed], [y_of(p) for p in failed], s=36, marker="s", facecolors="none",
                   edgecolors=INK, linewidths=1.3, zorder=4)
    if best:
        ax.scatter([x_of(p) for p in best], [y_of(p) for p in best], s=150, marker="*", color=GOLD,
                   edgecolors=INK, linewidths=0.6, zorder=5)


def legend_handles(points: Sequence[AxisPoint]) -> list[Line2D]:
    """One legend entry per kind of trial among ``points``: no "best" entry when no trial completed."""
    handles = []
    if any(p.is_best for p in points):
        handles.append(Line2D([], [], marker="*", color="none", markerfacecolor=GOLD, markeredgecolor=INK,
                              markersize=11, label="best"))
    if any(p.state == TrialState.COMPLETE and not p.is_best and not p.at_edge for p in points):
        handles.append(Line2D([], [], marker="o", color="none", markerfacecolor=BLUE, markeredgecolor="none",
                              markersize=6, label="complete"))
    if any(p.state == TrialState.PRUNED and not p.at_edge for p in points):
        handles.append(Line2D([], [], marker="o", color="none", markerfacecolor="none", markeredgecolor=GREY,
                              markersize=6, label="pruned"))
    if any(p.at_edge and p.state != TrialState.FAILED for p in points):
        handles.append(Line2D([], [], marker="x", color="none", markeredgecolor=RED, markersize=7,
                              markeredgewidth=1.6, label="diverged"))
    if any(p.at_edge and p.state == TrialState.FAILED for p in points):
        handles.append(Line2D([], [], marker="s", color="none", markerfacecolor="none", markeredgecolor=INK,
                              markersize=6, markeredgewidth=1.3, label="failed"))
    return handles


def edge_label(points: Sequence[AxisPoint]) -> str:
    """The name of the line the trials without an objective sit on: what sits there."""
    kinds = [name for name, here in (
        ("diverged", any(p.at_edge and p.state != TrialState.FAILED for p in points)),
        ("failed", any(p.at_edge and p.state == TrialState.FAILED for p in points))) if here]
    return "/".join(kinds) or "diverged"


def _edge_bands(ax, dim: Dimension, check: BoundaryCheck | None) -> None:
    """Shade the outer bands the boundary check looks at; the one it fired on stands out."""
    if check is None:
        return
    band = check.band
    for edge, (a, b) in (("lower", (0.0, band)), ("upper", (1 - band, 1.0))):
        fired = check.edge == edge
        ax.axvspan(dim.from_unit(a), dim.from_unit(b), color=EDGE_FILL if fired else "#f3f4f6",
                   alpha=0.9 if fired else 0.7, zorder=0, linewidth=0)
    if check.proposal is not None:
        inside = dim.high if check.edge == "upper" else dim.low
        arrow_y = 0.92
        ax.annotate("", xy=(dim.from_unit(1.22 if check.edge == "upper" else -0.22), arrow_y),
                    xytext=(inside, arrow_y), xycoords=("data", "axes fraction"),
                    arrowprops={"arrowstyle": "-|>", "color": GOLD, "lw": 1.8})
        low_text, high_text = window_text(check.proposal).split("..")  # as the --set suggestion prints it
        ax.text(dim.from_unit(1.02 if check.edge == "upper" else -0.02), 0.97,
                f"widen to {high_text if check.edge == 'upper' else low_text}",
                transform=ax.get_xaxis_transform(), ha="left" if check.edge == "upper" else "right",
                va="top", fontsize=8, color="#b45309", fontweight="bold")


def _edge_tick(ax, info: AxisPlotInfo) -> None:
    """Name the diverged (or failed) line on the y axis, where no trial's marker can hide it.

    Value ticks keep to the finite values and clear of the line; with no finite value at all
    the line's name is the only label, since the axis has no values to show.
    """
    finite = [p.y for p in info.points if not p.at_edge]
    ticks = []
    if finite:
        lo, hi = min(finite), max(finite)
        clear = 0.15 * (hi - lo)
        ticks = [t for t in MaxNLocator(5).tick_values(lo, hi) if lo <= t <= hi and abs(t - info.edge_y) > clear]
    ax.set_yticks(ticks + [info.edge_y], labels=[_tick_text(t) for t in ticks] + [edge_label(info.points)])
    ax.get_yticklabels()[-1].set_color(RED)


@_styled
def axis_plot(info: AxisPlotInfo, check: BoundaryCheck | None = None) -> str:
    """Objective against one hyperparameter: every trial, diverged and failed ones on the edge line."""
    fig, ax = _figure()
    dim = info.dimension
    set_scale(ax, dim)
    _edge_bands(ax, dim, check)
    _scatter_states(ax, info.points, lambda p: p.x, lambda p: p.y)
    if info.log_y:
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
    else:
        lo, hi = info.y_range
        pad = 0.06 * (hi - lo or 1.0)
        ax.set_ylim(lo - pad, hi + pad)
    if info.edge_y is not None:
        ax.axhline(info.edge_y, color=RED, linestyle=(0, (4, 3)), linewidth=0.9, zorder=1)
        _edge_tick(ax, info)
    if check is not None and check.proposal is not None:
        ax.set_xlim(check.proposal.from_unit(-0.02 if check.edge == "upper" else -0.05),
                    check.proposal.from_unit(1.05 if check.edge == "upper" else 1.02))
    else:
        ax.set_xlim(dim.from_unit(-0.04), dim.from_unit(1.04))
    ax.axvline(dim.low, color=MUTED, linewidth=0.8, zorder=1)
    ax.axvline(dim.high, color=MUTED, linewidth=0.8, zorder=1)
    ax.set_xlabel(f"{dim.name} (window {dim.low:.3g}–{dim.high:.3g})")
    ax.set_ylabel(_objective_label(info.metric, info.direction))
    ax.set_title(f"{_label(info.metric)} vs {dim.name}")
    handles = legend_handles(info.points)
    # all five kinds do not fit one row under the plot: two rows of three, not a row cut off at the right
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4 if len(handles) <= 4 else 3)
    _finish_y(fig, ax)
    return to_svg(fig)


@_styled
def isolation_plot(info: IsolationInfo) -> str:
    """Best completed trial per bucket of one hyperparameter, as steps across the window."""
    fig, ax = _figure()
    dim = info.dimension
    set_scale(ax, dim)
    best = [b for b in info.buckets if b.best is not None]
    values = [b.best for b in best]
    log_y = info.log_y
    if log_y:
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
    for b in info.buckets:
        if b.best is not None:
            ax.hlines(b.best, b.low, b.high, color=BLUE, linewidth=3, zorder=3)
    if len(best) > 1:
        mids = [dim.from_unit((dim.to_unit(b.low) + dim.to_unit(b.high)) / 2) for b in best]
        ax.plot(mids, values, color=BLUE, alpha=0.35, linewidth=1, zorder=2)
    winner = min(best, key=lambda b: b.best if info.direction == "minimize" else -b.best, default=None)
    if winner is not None:
        ax.hlines(winner.best, winner.low, winner.high, color=GOLD, linewidth=4, zorder=4)
    if values:
        lo, hi = min(values), max(values)
    else:
        lo, hi = 0.0, 1.0
    for b in info.buckets:
        mid_x = dim.from_unit((dim.to_unit(b.low) + dim.to_unit(b.high)) / 2)
        if b.diverged:  # on the worse edge of the plot, whatever the values: diverged trials have none
            y = 0.95 if info.direction == "minimize" else 0.05
            ax.scatter([mid_x], [y], marker="x", color=RED, s=40, linewidths=1.6, zorder=5,
                       transform=ax.get_xaxis_transform(), clip_on=False)
            ax.text(mid_x, y, f"  {b.diverged} diverged", transform=ax.get_xaxis_transform(), color=RED,
                    fontsize=7, va="center", ha="left")
        if b.best is not None:
            mid = dim.from_unit((dim.to_unit(b.low) + dim.to_unit(b.high)) / 2)
            ax.annotate(f"{b.best:.4g}", (mid, b.best), textcoords="offset points", xytext=(0, 5), ha="center",
                        fontsize=7, color=MUTED)
    for edge in (b.low for b in info.buckets[1:]):
        ax.axvline(edge, color=GRID, linewidth=0.8, zorder=1)
    ax.set_xlim(dim.low, dim.high)
    if not log_y and values:
        pad = 0.15 * (hi - lo or abs(hi) or 1.0)
        ax.set_ylim(lo - 2 * pad, hi + 2 * pad)  # room on either edge for the diverged marks
    ax.set_xlabel(f"{dim.name} ({len(info.buckets)} buckets)")
    ax.set_ylabel(f"best {_label(info.metric)}")
    ax.set_title(f"best {_label(info.metric)} per {dim.name} bucket")
    handles = [Line2D([], [], color=BLUE, linewidth=3, label="best in bucket"),
               Line2D([], [], color=GOLD, linewidth=4, label="best overall")]
    if any(b.diverged for b in info.buckets):
        handles.append(Line2D([], [], marker="x", color="none", markeredgecolor=RED, markeredgewidth=1.6,
                              label="diverged"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    _finish_y(fig, ax)
    return to_svg(fig)


_LABEL_HEIGHTS = (0.5, 0.78, 0.22)


def label_height(dots: Sequence[tuple[float, float, bool]]) -> float:
    """Where in a cell (0 bottom, 1 top) its value label covers the fewest trial marks.

    ``dots`` are the cell's trials as ``(x, y, is_best)`` in cell fractions; the best trial's
    star is larger than a dot. The middle wins ties.
    """
    def covered(h: float) -> int:
        return sum(abs(x - 0.5) < (0.36 if star else 0.3) and abs(y - h) < (0.22 if star else 0.15)
                   for x, y, star in dots)

    return min(_LABEL_HEIGHTS, key=covered)


@_styled
def heatmap(info: HeatmapInfo) -> str:
    """The best objective per cell of an lr x (beta1 | weight_decay) grid; diverged cells hatched red."""
    import numpy as np
    from matplotlib.colors import Normalize

    fig, ax = _figure(4.4, 3.4, bottom=0.15, right=0.86)  # the colorbar and its labels sit right of this
    ax.grid(False)
    set_scale(ax, info.x, "x")
    set_scale(ax, info.y, "y")
    grid = np.array([[c.best if c.best is not None else np.nan for c in row] for row in info.cells], dtype=float)
    finite = grid[np.isfinite(grid)]
    cmap = matplotlib.colormaps["YlGnBu" if info.direction == "maximize" else "YlGnBu_r"].with_extremes(bad="#f9fafb")
    norm = Normalize(vmin=float(finite.min()), vmax=float(finite.max())) if finite.size else Normalize(0, 1)
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 20:
        from matplotlib.colors import LogNorm

        norm = LogNorm(vmin=float(finite.min()), vmax=float(finite.max()))
    mesh = ax.pcolormesh(np.array(info.x_edges), np.array(info.y_edges), np.ma.masked_invalid(grid), cmap=cmap,
                         norm=norm, edgecolors="white", linewidth=1.5)
    n_x, n_y = len(info.x_edges) - 1, len(info.y_edges) - 1
    # Where each trial sits, in cells: column c spans c..c+1 (the edges are equal on the scale).
    spots = [((info.x.to_unit(x) - info.x.to_unit(info.x_edges[0])) * n_x
              / (info.x.to_unit(info.x_edges[-1]) - info.x.to_unit(info.x_edges[0])),
              (info.y.to_unit(y) - info.y.to_unit(info.y_edges[0])) * n_y
              / (info.y.to_unit(info.y_edges[-1]) - info.y.to_unit(info.y_edges[0])),
              number == info.best_trial) for number, x, y, _ in info.points]
    for r, row in enumerate(info.cells):
        for c, cell in enumerate(row):
            xm = info.x.from_unit((info.x.to_unit(info.x_edges[c]) + info.x.to_unit(info.x_edges[c + 1])) / 2)
            inside = [(u - c, v - r, star) for u, v, star in spots if c <= u <= c + 1 and r <= v <= r + 1]
            ym = info.y.from_unit(info.y.to_unit(info.y_edges[r]) + label_height(inside)
                                  * (info.y.to_unit(info.y_edges[r + 1]) - info.y.to_unit(info.y_edges[r])))
            if cell.best is None and cell.diverged:
                ax.fill_between([info.x_edges[c], info.x_edges[c + 1]], info.y_edges[r], info.y_edges[r + 1],
                                facecolor="#fee2e2", edgecolor=RED, hatch="///", linewidth=0, zorder=2)
                ax.text(xm, ym, "diverged", ha="center", va="center", fontsize=7, color=RED, zorder=3)
            elif cell.best is not None:
                shade = norm(cell.best)
                dark = (1 - shade) if info.direction == "minimize" else shade
                ax.text(xm, ym, f"{cell.best:.3g}" + (f"\n+{cell.diverged}✕" if cell.diverged else ""),
                        ha="center", va="center", fontsize=7, color="white" if dark > 0.55 else INK, zorder=3)
    for number, x, y, state in info.points:
        if number == info.best_trial:  # the axis plots' star; its light edge shows on the darkest cell too
            ax.scatter([x], [y], s=120, marker="*", color=GOLD, edgecolors="white", linewidths=1.0, zorder=6)
            continue
        style = {"marker": "x", "color": RED} if state == TrialState.DIVERGED else (
            {"marker": "o", "facecolors": "none", "edgecolors": MUTED} if state == TrialState.PRUNED
            else {"marker": "o", "color": INK})
        ax.scatter([x], [y], s=10, linewidths=0.8, zorder=4, alpha=0.7, **style)
    ax.set_xlim(info.x_edges[0], info.x_edges[-1])
    ax.set_ylim(info.y_edges[0], info.y_edges[-1])
    ax.set_xlabel(info.x.name)
    ax.set_ylabel(info.y.name)
    ax.set_title(f"best {_label(info.metric)}: {info.x.name} × {info.y.name}")
    bar = fig.colorbar(mesh, ax=ax, shrink=0.9, pad=0.03, fraction=0.06)
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    bar.ax.tick_params(labelsize=7)
    bar.outline.set_visible(False)
    return to_svg(fig)


@_styled
def curves_plot(info: CurvesInfo) -> str:
    """Every trial's curve of one metric: best gold, other top trials in colour, pruned dashed, diverged red."""
    fig, ax = _figure(4.4, 3.4, bottom=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(6, integer=True))  # steps: 24, 25, 26, never 24.5
    if info.log_y:
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
    ordered = sorted(info.series, key=lambda s: (s.rank is not None, -(s.rank or 0)))
    for s in ordered:
        xs, ys = list(s.steps), list(s.values)
        if s.rank is not None:
            color, width, alpha, style, z = TOP_COLORS[min(s.rank, len(TOP_COLORS) - 1)], 2.4 if s.rank == 0 else 1.6, 1.0, "-", 5
        elif s.state == TrialState.DIVERGED:
            color, width, alpha, style, z = RED, 1.1, 0.8, ":", 3
        elif s.state == TrialState.PRUNED:
            color, width, alpha, style, z = GREY, 1.0, 0.8, "--", 2
        else:
            color, width, alpha, style, z = BLUE, 1.0, 0.45, "-", 2
        ax.plot(xs, ys, color=color, linewidth=width, alpha=alpha, linestyle=style, zorder=z)
        if s.state == TrialState.DIVERGED:
            last = [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
            if last:
                ax.scatter([last[-1][0]], [last[-1][1]], marker="x", color=RED, s=36, linewidths=1.6, zorder=6)
        elif s.state == TrialState.PRUNED and xs:
            ax.scatter([xs[-1]], [ys[-1]], marker="o", facecolors="none", edgecolors=GREY, s=18, zorder=3)
    handles = []
    for s in sorted((s for s in info.series if s.rank is not None), key=lambda s: s.rank):
        handles.append(Line2D([], [], color=TOP_COLORS[min(s.rank, len(TOP_COLORS) - 1)], linewidth=2.2,
                              label=f"trial {s.number}" + (" (best)" if s.rank == 0 else "")))
    if any(s.rank is None and s.state == TrialState.COMPLETE for s in info.series):
        handles.append(Line2D([], [], color=BLUE, alpha=0.5, label="other complete"))
    if any(s.state == TrialState.PRUNED for s in info.series):
        handles.append(Line2D([], [], color=GREY, linestyle="--", label="pruned"))
    if any(s.state == TrialState.DIVERGED for s in info.series):
        handles.append(Line2D([], [], color=RED, linestyle=":", marker="x", label="diverged"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=3)
    ax.set_xlabel("training step")
    label = _label(info.metric)
    ax.set_ylabel(_objective_label(info.metric, info.direction) if info.is_objective else label)
    ax.set_title(label + (" (the objective)" if info.is_objective else ""))
    _finish_y(fig, ax)
    return to_svg(fig)


@_styled
def grad_norm_plot(advice: ClipAdvice) -> str:
    """The best trial's unclipped gradient norms over training, with the suggested threshold."""
    import numpy as np

    fig, ax = _figure(8.8, 2.8, left=0.08, right=0.98, bottom=0.17, top=0.88)
    n = len(advice.samples)
    xs = np.linspace(1, advice.steps or n, n) if n else np.array([])
    ys = np.array(advice.samples)
    above = ys > advice.threshold
    ax.plot(xs, ys, color=BLUE, linewidth=1, alpha=0.8)
    ax.scatter(xs[above], ys[above], color=RED, s=10, zorder=3, label="would be clipped")
    ax.axhline(advice.threshold, color=GOLD, linewidth=2,
               label=f"max_grad_norm ≈ {advice.threshold:.3g} ({advice.percentile:.0f}th percentile)")
    if advice.current is not None:
        ax.axhline(advice.current, color=MUTED, linestyle="--", linewidth=1, label=f"ran with {advice.current:.3g}")
    if log_axis("gradient norm", list(ys)):
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
    ax.set_xlabel("training step")
    ax.set_ylabel("unclipped gradient norm")
    ax.set_title(f"gradient norms of trial {advice.trial}")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=3)
    _finish_y(fig, ax)
    return to_svg(fig)
