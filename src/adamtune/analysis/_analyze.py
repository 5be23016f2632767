"""Everything the report and the terminal show about a study, computed once."""

from __future__ import annotations

import dataclasses

from adamtune.analysis._boundary import LOWER, MIN_COMPLETED, UPPER, BoundaryCheck, boundary_check, boundary_findings
from adamtune.analysis._clipping import WARMUP_FIRST, ClipAdvice, clip_advice, clip_findings
from adamtune.analysis._decay import DecayTimescale, decay_findings, decay_timescale, next_lr_limit
from adamtune.analysis._curves import (
    CurveDiagnosis, Progress, Stability, curve_findings, diagnose_best, progress, progress_findings, stability,
    stability_findings,
)
from adamtune.analysis._failures import Failures, failure_findings, failure_limited, failures
from adamtune.analysis._finding import WARNING, Finding, fmt
from adamtune.analysis._format import window_text
from adamtune.analysis._importance import Importance, importance
from adamtune.analysis._next import NARROW_MIN_COMPLETED, NextSpace, change_lr, change_study, next_space
from adamtune.analysis._plots import (
    AxisPlotInfo, CurvesInfo, HeatmapInfo, IsolationInfo, axis_plot_info, curves_info, heatmap_info,
    isolation_info, sorted_for_table,
)
from adamtune.analysis._select import top_trials
from adamtune.commands import command_line
from adamtune.confirmed import Confirmation, stored
from adamtune.results import StudySettings, TuneResult, stored_spaces
from adamtune.space import Dimension, SearchSpace
from adamtune.trials import TrialRecord, TrialState, completed, trials_text


@dataclasses.dataclass(frozen=True)
class StudyAnalysis:
    """A study turned into decisions: findings with actions, the next search space, and plot data.

    Attributes:
        result: the study analysed.
        findings: every finding, warnings first (nothing learned, boundary, instability, failed
            trials, curves, clipping, decay timescale). When nothing was learned, the boundary check's
            and the decay timescale's findings are left out: the best trials are then best by noise,
            and where they sit says nothing. The overfitting finding's "raise weight_decay" names what
            the weight_decay findings give (``_with_decay_advice``), so the page pulls λ one way.
            A clipping threshold or a weight_decay window to try comes with its ``new_study``
            (``TRIED``); a boundary finding's window is the next search's own.
        boundary: the boundary check of each tuned dimension (lr's upper edge not raised when
            every lr above the trials that trained failed: ``_failures.failure_limited``;
            weight_decay widened up only as far as the next search does: ``_decay.next_lr_limit``).
        stability: diverged trials and the lrs around them.
        progress: whether any trial learned anything.
        failures: the failed trials, their most common error and the dimension they sort by.
        curves: the diagnosis of the best trials' curves, best first.
        clip: clipping advice (None when no best trial recorded gradient norms).
        next_space: the proposed next search space.
        importance: which hyperparameters mattered.
        top: the best trials, best first.
        completed: how many trials completed (diverged ones do not).
        table: every trial in the order the report's table lists them.
        axes, isolation, heatmaps, curve_plots: what the plots show.
        storage: the storage URL the commands it proposes name (None: the default storage).
        confirmation: the study's best trials trained again with other seeds (``adamtune confirm``),
            as kept in the study; None when none was made since its best trial changed.
    """

    result: TuneResult
    findings: tuple[Finding, ...]
    boundary: tuple[BoundaryCheck, ...]
    stability: Stability
    progress: Progress
    failures: Failures
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
    confirmation: Confirmation | None = None

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

    @property
    def keep_text(self) -> str:
        """Why the next search keeps every window and continues this study, and what more trials of it
        give -- or that the error comes first, when the trials failed and none completed: the terminal's
        ``Next:`` line and the report's lead over the next search say these words."""
        ns, s = self.next_space, self.result.settings
        if self.progress.nothing_learned:
            # lr is kept, not raised, only where the larger lrs failed (``next_space``)
            why = ", and the larger lrs failed" if self.failures.lr_ceiling is not None else ""
            return (f"no trial learned anything{why}: more trials of this study would repeat that; the findings say "
                    "what to look at first")
        failed = len(self.failures.failed)
        if (self.completed == 0 and failed and self.failures.lr_ceiling is None
                and failed >= max(self.result.count(TrialState.DIVERGED), self.result.count(TrialState.PRUNED))):
            # Nothing completed because the code raised, at no lr in particular: more trials raise too.
            ran = self.failures.ran
            who = "every trial failed" if failed == ran else f"{failed} of {ran} trials failed"
            tracebacks = command_line("show", "--json", storage=self.storage, study=self.result.study_name)
            return (f"fix the error first: {who} and none completed, so more trials of this study would fail the same "
                    f"way; the failed-trials finding gives the error, and every traceback: {tracebacks}; once it is "
                    f"fixed, this command runs more trials")
        if ns.too_few_to_narrow:
            n = ns.completed
            text = (f"too few completed trials to move the windows, {n} of the {MIN_COMPLETED} it takes to widen one "
                    f"and {NARROW_MIN_COMPLETED} to narrow" if n < MIN_COMPLETED else
                    f"too few completed trials to narrow the windows, {n} of the {NARROW_MIN_COMPLETED} it takes")
            more = "more trials of this study give them"
            if s.pruner != "none" and self.result.count(TrialState.PRUNED):
                more += ", or --pruner none, which completes every trial"
            return f"{text}: {more}"
        text = ("the windows hold: where the best trials sit gives no reason to move them; more trials of this study "
                "try new points of the same search")
        return text + ("; add --sampler tpe to exploit what it found" if s.sampler == "quasi-random" else "")

    @property
    def tuned_lr_text(self) -> str:
        """Why the next search tunes an lr the study fixed (``NextSpace.tuned_lr``): the terminal's
        ``Next search:`` line and the report's lead over it say these words ("" when it does not)."""
        ns, s = self.next_space, self.result.settings
        if ns.tuned_lr is None:
            return ""
        window = f"{window_text(ns.tuned_lr)}, the lr window adamtune searches for {s.optimizer}"
        x = ns.fixed_lr
        if x is None:
            text = f"no trial learned anything, and lr was not tuned: the next search tunes it over {window}"
        elif x < ns.tuned_lr.low or x > ns.tuned_lr.high:
            side = "below" if x < ns.tuned_lr.low else "above"
            text = (f"no trial learned anything with lr fixed at {fmt(x)}, {side} {window}: the next search tunes lr "
                    f"over that window")
        else:
            text = f"no trial learned anything with lr fixed at {fmt(x)}: the next search tunes lr over {window}"
        text += " and keeps the rest; a study continued would keep its fixed lr"
        if x is not None and ns.tuned_lr.low <= x <= ns.tuned_lr.high:
            text += "; if no lr there learns either, look at the model, the data and the loss"
        return text


# The kinds of finding whose --set suggestion is a change to try in a study of its own.
TRIED = ("clip", "decay_timescale", "unstable")


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
    failed = failures(result)
    decay = decay_timescale(result)
    checks = failure_limited(boundary_check(result, stab=stab, decay=decay), failed)
    learned = progress(result)
    diagnoses = diagnose_best(result)
    clip = clip_advice(result, stab=stab)
    lr_at_upper_edge = any(c.name == "lr" and c.edge == UPPER for c in checks) and not learned.nothing_learned
    taken = _taken(result)
    ns = next_space(result, checks=checks, storage=storage, taken=taken, stab=stab, learned=learned, clip=clip,
                    failed=failed)
    # weight_decay widened up as the next search widens it: within lr·weight_decay = 0.5 at its lr's top
    checks = tuple(next_lr_limit(c, ns.lr_window.high if ns.lr_window else None) for c in checks)
    n_completed = len(completed(result.trials))
    too_few = (n_completed, NARROW_MIN_COMPLETED) if n_completed < NARROW_MIN_COMPLETED else None  # lr not settled
    test_lr = _test_lr(s, ns)
    findings = (*progress_findings(learned, s.metric), *(() if learned.nothing_learned else boundary_findings(checks)),
                *stability_findings(stab), *failure_findings(failed, result.study_name, storage),
                *curve_findings(diagnoses, s.metric), *clip_findings(clip),
                *decay_findings(decay, checks, too_few=too_few, nothing_learned=learned.nothing_learned, test_lr=test_lr,
                                test_lr_why=ns.cut_lr_text if change_lr(ns, "weight_decay") else ""))
    findings = _with_decay_advice(findings, () if learned.nothing_learned else checks, decay)
    if lr_at_upper_edge:
        # Slow progress at the top of the lr window is the lr's doing first: longer runs would
        # pay for what a larger lr gives.
        findings = tuple(dataclasses.replace(f, title=STILL_IMPROVING_AT_LR_EDGE) if f.kind == "still_improving"
                         else f for f in findings)
    if clip is not None and clip.warmup_first:  # a study that clipped and still diverged too
        # the playbook's first fix for instability near the best lr, before clipping: a study of its own
        findings = tuple(dataclasses.replace(f, suggestion=(f"--set warmup={WARMUP_FIRST:g}",))
                         if f.kind == "unstable" and f.severity == WARNING else f for f in findings)
    findings = tuple(sorted(findings, key=lambda f: f.severity != WARNING))  # stable: keeps the order above
    findings = tuple(
        dataclasses.replace(f, new_study=change_study(
            s, f.suggestion[0], ns, result.study_name, storage, taken,
            lr=decay.lr_window_to_try(test_lr) if f.kind == "decay_timescale" and decay is not None else None))
        if f.kind in TRIED and f.suggestion else f for f in findings)
    return StudyAnalysis(
        result=result, findings=findings, boundary=checks, stability=stab, progress=learned, failures=failed,
        curves=diagnoses, clip=clip, next_space=ns,
        importance=importance(result),
        top=tuple(top_trials(result.trials, s.direction)), completed=len(completed(result.trials)),
        table=sorted_for_table(result),
        axes=axis_plot_info(result), isolation=isolation_info(result), heatmaps=heatmap_info(result),
        curve_plots=curves_info(result), storage=storage, confirmation=stored(result),
    )


def _with_decay_advice(findings: tuple[Finding, ...], checks: tuple[BoundaryCheck, ...],
                       decay: DecayTimescale | None) -> tuple[Finding, ...]:
    """The overfitting finding with a sentence that agrees with the weight_decay findings.

    Its action says "raise weight_decay"; next to a boundary proposal, a decay window to test, or
    best trials at weight_decay's lower edge, its detail names that window or says why not, in
    this order: the next search's window widened up, the decay finding's window to test, a window
    held at its top (decay already as strong as adamtune proposes), best trials at the lower edge
    of a window that reached decay that acts within the run (weaker decay did better in this very
    study; in a window where decay barely acts anywhere, where they sit says nothing).
    """
    wd = next((c for c in checks if c.name == "weight_decay"), None)
    test = next((f.suggestion[0] for f in findings if f.kind == "decay_timescale" and f.suggestion), None)
    if wd is not None and wd.edge == UPPER and wd.proposal is not None:
        note = (f" A larger weight_decay is what the boundary check proposes too: --set {wd.set_argument}, "
                f"in the next search.")
    elif test is not None:
        note = f" To raise weight_decay, test the window the weight-decay timescale finding gives: {test}."
    elif wd is not None and wd.edge == UPPER:
        note = (f" But weight_decay's window {window_text(wd.window)} already reaches the strongest decay adamtune "
                f"proposes (at the best trial's lr, or at the top of the next lr window: its finding says why): "
                f"regularise otherwise (dropout, data augmentation, more data), or keep the checkpoint of the best "
                f"evaluation.")
    elif wd is not None and wd.edge == LOWER and not (decay is not None and decay.above_window):
        note = (f" But weaker decay did better in this study: its best trials sit at the lower edge of weight_decay's "
                f"window {window_text(wd.window)}, so a larger weight_decay goes against its trials: regularise "
                f"otherwise (dropout, data augmentation, more data), or keep the checkpoint of the best evaluation.")
    else:
        return findings
    return tuple(dataclasses.replace(f, detail=f.detail + note) if f.kind == "overfitting" else f for f in findings)


def _test_lr(settings: StudySettings, ns: NextSpace) -> Dimension | None:
    """The lr window a weight_decay window to test would be tried over but for the narrowing around
    the best trial's lr (``DecayTimescale.lr_window_to_try``): the next search's where it cuts lr,
    else the study's (None: lr fixed)."""
    return change_lr(ns, "weight_decay") or next((d for d in settings.space.dimensions if d.name == "lr"), None)


def _taken(result: TuneResult) -> dict[str, SearchSpace | None]:
    """The studies in ``result``'s storage, so the next study's name is not one of another space."""
    if result.study is None:  # made by hand, not read from a storage
        return {}
    return stored_spaces(result.study)
