"""Everything the report and the terminal show about a study, computed once."""

from __future__ import annotations

import dataclasses

from adamtune.analysis._boundary import MIN_COMPLETED, BoundaryCheck, boundary_check, boundary_findings
from adamtune.analysis._clipping import ClipAdvice, clip_advice, clip_findings
from adamtune.analysis._decay import decay_findings, decay_timescale
from adamtune.analysis._curves import (
    CurveDiagnosis, Progress, Stability, curve_findings, diagnose_best, progress, progress_findings, stability,
    stability_findings,
)
from adamtune.analysis._finding import WARNING, Finding
from adamtune.analysis._importance import Importance, importance
from adamtune.analysis._next import NextSpace, next_space
from adamtune.analysis._plots import (
    AxisPlotInfo, CurvesInfo, HeatmapInfo, IsolationInfo, axis_plot_info, curves_info, heatmap_info,
    isolation_info, sorted_for_table,
)
from adamtune.analysis._select import top_trials
from adamtune.commands import command_line
from adamtune.results import TuneResult, stored_spaces
from adamtune.space import SearchSpace
from adamtune.trials import TrialRecord, TrialState, completed, trials_text


@dataclasses.dataclass(frozen=True)
class StudyAnalysis:
    """A study turned into decisions: findings with actions, the next search space, and plot data.

    Attributes:
        result: the study analysed.
        findings: every finding, warnings first (nothing learned, boundary, instability, curves,
            clipping). When nothing was learned, the boundary check's findings are left out: the
            best trials are then best by noise, and where they sit says nothing.
        boundary: the boundary check of each tuned dimension.
        stability: diverged trials and the lrs around them.
        progress: whether any trial learned anything.
        curves: the diagnosis of the best trials' curves, best first.
        clip: clipping advice (None when no best trial recorded gradient norms).
        next_space: the proposed next search space.
        importance: which hyperparameters mattered.
        top: the best trials, best first.
        completed: how many trials completed (diverged ones do not).
        table: every trial in the order the report's table lists them.
        axes, isolation, heatmaps, curve_plots: what the plots show.
        storage: the storage URL the commands it proposes name (None: the default storage).
    """

    result: TuneResult
    findings: tuple[Finding, ...]
    boundary: tuple[BoundaryCheck, ...]
    stability: Stability
    progress: Progress
    curves: tuple[CurveDiagnosis, ...]
    clip: ClipAdvice | None
    next_space: NextSpace
    importance: Importance
    top: tuple[TrialRecord, ...]
    completed: int
    table: tuple[TrialRecord, ...]
    axes: tuple[AxisPlotInfo, ...]
    isolation: tuple[IsolationInfo, ...]
    heatmaps: tuple[HeatmapInfo, ...]
    curve_plots: tuple[CurvesInfo, ...]
    storage: str | None = None

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == WARNING)

    def of_kind(self, kind: str) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.kind == kind)

    @property
    def too_few_to_judge(self) -> bool:
        """No completed trial, or fewer than the boundary check needs: silence then means little."""
        return self.completed == 0 or bool(self.result.settings.space.dimensions) and self.completed < MIN_COMPLETED

    @property
    def too_few_text(self) -> str:
        """Why there are too few completed trials to judge, and what to do, in a sentence."""
        r = self.result
        done = "no trial" if self.completed == 0 else f"only {trials_text(self.completed)}"
        failed = sum(1 for t in r.trials if t.state == TrialState.FAILED and not t.interrupted)
        diverged, pruned = r.count(TrialState.DIVERGED), r.count(TrialState.PRUNED)
        parts = [f"{n} {word}" for n, word in ((failed, "failed"), (diverged, "diverged"), (pruned, "pruned")) if n]
        text = f"{done} completed" + (f" ({', '.join(parts)})" if parts else "")
        if r.settings.space.dimensions:
            text += f": the boundary check needs at least {MIN_COMPLETED}"
        counted = sum(1 for t in r.trials if not t.interrupted)
        if counted < r.settings.budget and failed:
            text += f". The study stopped after {trials_text(counted)} of its budget of {r.settings.budget}"
        if failed and failed >= max(diverged, pruned):
            return text + f"; the errors: {command_line('show', storage=self.storage, study=r.study_name)}"
        if diverged and diverged >= pruned and self.stability.from_the_start:
            return text + "; every trial diverged in its first steps: look at the data and the loss first"
        if diverged and diverged >= pruned:
            return text + "; the diverging trials call for smaller learning rates first"
        return text + "; a larger --budget, or --pruner none, gives more"


STILL_IMPROVING_AT_LR_EDGE = ("still improving at the end: a larger lr first (the best trials sit at lr's upper edge), "
                              "then train longer")


def analyze(result: TuneResult, storage: str | None = None) -> StudyAnalysis:
    """Run every analysis over ``result``.

    Besides the trials, it reads one thing more from the study's storage: the name and search
    space of every study in it (one query), so the next study's name is free or of this space.

    Args:
        result: the study, e.g. from ``adamtune.load`` or ``adamtune.tune``.
        storage: its storage URL, so the proposed next command names it.
    """
    s = result.settings
    stab = stability(result)
    checks = boundary_check(result, stab=stab)
    learned = progress(result)
    diagnoses = diagnose_best(result)
    clip = clip_advice(result, stab=stab)
    lr_at_upper_edge = any(c.name == "lr" and c.edge == "upper" for c in checks) and not learned.nothing_learned
    findings = (*progress_findings(learned, s.metric), *(() if learned.nothing_learned else boundary_findings(checks)),
                *stability_findings(stab), *curve_findings(diagnoses, s.metric), *clip_findings(clip),
                *decay_findings(decay_timescale(result), lr_at_upper_edge,
                                too_few=len(completed(result.trials)) < MIN_COMPLETED))
    if lr_at_upper_edge:
        # Slow progress at the top of the lr window is the lr's doing first: longer runs would
        # pay for what a larger lr gives.
        findings = tuple(dataclasses.replace(f, title=STILL_IMPROVING_AT_LR_EDGE) if f.kind == "still_improving"
                         else f for f in findings)
    findings = tuple(sorted(findings, key=lambda f: f.severity != WARNING))  # stable: keeps the order above
    return StudyAnalysis(
        result=result, findings=findings, boundary=checks, stability=stab, progress=learned, curves=diagnoses,
        clip=clip,
        next_space=next_space(result, checks=checks, storage=storage, taken=_taken(result), stab=stab, learned=learned,
                              clip=clip),
        importance=importance(result),
        top=tuple(top_trials(result.trials, s.direction)), completed=len(completed(result.trials)),
        table=sorted_for_table(result),
        axes=axis_plot_info(result), isolation=isolation_info(result), heatmaps=heatmap_info(result),
        curve_plots=curves_info(result), storage=storage,
    )


def _taken(result: TuneResult) -> dict[str, SearchSpace | None]:
    """The studies in ``result``'s storage, so the next study's name is not one of another space."""
    if result.study is None:  # made by hand, not read from a storage
        return {}
    return stored_spaces(result.study)
