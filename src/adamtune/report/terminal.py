"""Rendering a study for the terminal (rich tables) and as JSON. Computes nothing new."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from adamtune.analysis import ENDED_AS_GOOD, Progress, diagnose_curve, progress, progress_findings
from adamtune.commands import command_line
from adamtune.config import Config
from adamtune.confirmed import Confirmation, adopted, stored
from adamtune.results import TuneResult
from adamtune.trials import TrialRecord, TrialState, ranked, trials_text

_STATE_STYLE = {
    TrialState.COMPLETE: "green", TrialState.PRUNED: "yellow", TrialState.DIVERGED: "red",
    TrialState.FAILED: "magenta", TrialState.RUNNING: "cyan", TrialState.WAITING: "dim",
}


def fmt(x: float | None) -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.4g}"


def trial_value_text(t: TrialRecord) -> str:
    if t.state == TrialState.DIVERGED:
        return "diverged" + (f" @{t.steps}" if t.steps else "")
    if t.state == TrialState.FAILED:
        return "failed"
    return fmt(t.value)


def print_table(console: Console, make: Callable[[bool], Table]) -> None:
    """Print the table ``make(compact)`` builds without cutting a cell short.

    Rich fits a table to the console (80 columns when output goes to a file or a pipe) by
    cutting cells to ``…``: a number cut to ``0.00…`` is worse than no number. So: the table as
    it is when it fits; else ``make(True)``, whose headers may break at ``_``; and when even
    that does not fit, printed as wide as it needs (a terminal wraps the lines; a file keeps them).
    """
    table = make(False)
    if _least_width(console, table) > console.width:
        table = make(True)
    need = _least_width(console, table)
    if need <= console.width:
        console.print(table)
        return
    width = console.width
    console.width = need
    try:
        console.print(table, crop=False)
    finally:
        console.width = width


def _least_width(console: Console, table: Table) -> int:
    """The narrowest ``table`` renders without cutting a word (a number is one word)."""
    return Measurement.get(console, console.options.update(width=1 << 16), table).minimum


def header(name: str, compact: bool) -> str:
    """A column header; ``compact``: broken after each ``_`` (``weight_`` / ``decay``)."""
    return name.replace("_", "_\n") if compact else name


def trials_table(result: TuneResult, trials: list[TrialRecord] | None = None, title: str | None = None,
                 compact: bool = False) -> Table:
    """One row per trial: number, state, tuned hyperparameters, objective, steps (print it
    with ``print_table``, which sets ``compact`` when the table is too wide)."""
    s = result.settings
    trials = list(result.trials) if trials is None else trials
    # compact: no vertical rules and one space of padding: 3 characters fewer per column
    table = Table(title=title, title_justify="left", header_style="bold",
                  **({"box": box.SIMPLE_HEAD, "show_edge": False, "padding": (0, 1, 0, 0)} if compact else {}))
    table.add_column("trial", justify="right")
    table.add_column("state")
    for name in s.space.tuned:
        table.add_column(header(name, compact), justify="right")
    table.add_column(escape(header(s.metric, compact)), justify="right")
    table.add_column("steps", justify="right")
    for t in trials:
        style = _STATE_STYLE[t.state]
        mark = " ★" if result.best is not None and t.number == result.best.number else ""
        table.add_row(
            f"{t.number}{mark}", f"[{style}]{t.state.value}[/]",
            *[fmt(t.params.get(n)) for n in s.space.tuned],
            trial_value_text(t), str(t.steps),
        )
    return table


def best_trials(result: TuneResult, n: int = 5) -> list[TrialRecord]:
    return ranked(result.trials, result.settings.direction)[:n]


def state_counts(result: TuneResult) -> dict[str, int]:
    return {s.value: result.count(s) for s in TrialState if result.count(s)}


def counts_line(result: TuneResult) -> str:
    """``"3 complete, 13 pruned"``; failed trials cut short are said to be (they do not use
    up the budget)."""
    cut = result.cut_short
    parts = []
    for state, n in state_counts(result).items():
        note = f" ({cut} cut short, not counted in the budget)" if state == TrialState.FAILED.value and cut else ""
        parts.append(f"{n} {state}{note}")
    return ", ".join(parts) or "no trials yet"


def retries_line(result: TuneResult) -> str | None:
    """``"2 trials reran trials cut short, with the same hyperparameters and initial weights:
    8 for 4, 9 for 5"``, or None if no trial did."""
    first = result.reruns
    if not first:
        return None
    pairs = ", ".join(f"{n} for {o}" for n, o in first.items())
    return f"{trials_text(len(first))} reran trials cut short, with the same hyperparameters and initial weights: {pairs}"


def best_snippet(result: TuneResult) -> str | None:
    return result.paste_code()


def noise_note(result: TuneResult, learned: Progress | None = None) -> str | None:
    """``"best by noise, not a recommendation (nothing learned: ...)"`` when no trial learned
    anything (the *nothing learned* finding's title), else None: the best trial is then no result
    to paste. ``learned``: the study's progress, if already computed."""
    learned = learned if learned is not None else progress(result)
    found = progress_findings(learned, result.settings.metric)
    return f"best by noise, not a recommendation ({found[0].title})" if found else None


def best_step_note(result: TuneResult) -> str | None:
    """Where the best trial's value comes from when it is not its last evaluation (the objective
    is a trial's best evaluation): the step to stop at, or None."""
    best = result.best
    if best is None:
        return None
    values = best.curve.metrics.get(result.settings.metric, ())
    if not values or len(values) != len(best.curve.steps) or values[-1] == best.value:
        return None
    hits = [step for step, v in zip(best.curve.steps, values) if v == best.value]
    if not hits:
        return None
    where = f"its best evaluation, at step {hits[0]} of {best.steps}"
    gap = abs(values[-1] - best.value) / max(abs(best.value), 1e-12)
    if gap < ENDED_AS_GOOD:  # noise between evaluations: nothing to act on
        return f"{where}; it ended within {ENDED_AS_GOOD:.0%} of it, at {fmt(values[-1])}"
    curve = diagnose_curve(best.curve, result.settings.metric, result.settings.direction, best.number)
    if curve.judged and curve.within_noise:
        # Up and down after the best (or late in training) by more than the end lies above it: the
        # best evaluation is one dip of that noise; retrained (another seed, other minibatches) the
        # curve dips elsewhere, so a shorter run is no better. The curve findings say the same.
        # from where the swing was measured: the best's step, or the late part's when the best comes later
        when = ("late in training" if curve.late_variance or curve.swing_from != hits[0]
                else f"after step {hits[0]}")
        return (f"{where}; it ended at {fmt(values[-1])}: the curve swings up and down {when}, so step "
                f"{hits[0]} is a dip of that noise, not a better length to train (another seed dips elsewhere); "
                "a decaying lr schedule steadies it")
    config = best.config or {}
    if config.get("warmup") or config.get("schedule", "constant") != "constant":
        # Training fewer steps would squeeze the schedule, which is set in fractions of the steps.
        return (f"{where}; it ended at {fmt(values[-1])}: keep the checkpoint of step {hits[0]} of a "
                f"{best.steps}-step run (training {hits[0]} steps instead would squeeze its lr schedule)")
    return (f"{where}; it ended at {fmt(values[-1])}: keep the checkpoint of step {hits[0]}, or train "
            f"{hits[0]} steps")


def confirm_hint(result: TuneResult, storage: str | None) -> str | None:
    """When the best trial's value is a dip of its curve's noise (one seed's luck), the command
    that retrains the best trials with other seeds before one is adopted; else None. Only a
    managed workload's study (adamtune trains it again)."""
    best = result.best
    if best is None or result.settings.metric == "value":
        return None
    curve = diagnose_curve(best.curve, result.settings.metric, result.settings.direction, best.number)
    if not (curve.judged and curve.within_noise):
        return None
    how = (command_line("confirm", storage=storage, study=result.study_name) if result.settings.workload is not None
           else "adamtune.confirm(result, workload) in Python (the study was made from a Workload object)")
    return f"Its value is one seed's dip of a noisy curve; before adopting it, train the best trials again with " \
           f"other seeds: {how}"


def confirmed_best(result: TuneResult, found: Confirmation | None,
                   noise: str | None = None) -> tuple[TuneResult, str | None]:
    """What the places that show the study's best (``tune``'s end, ``adamtune best``, the report's
    card) show after ``adamtune confirm``: ``result`` with the trial to adopt as its best (another
    trial where the seeds chose it), and what to say with it: that choice, that the seeds found
    none safe, that trials now among the best were not trained again; None with nothing to say.
    Where nothing was learned (``noise``: ``noise_note``) a confirmation changes nothing."""
    if found is None or noise is not None:
        return result, None
    other = found.other_choice()
    said = "; ".join(x for x in (other or found.caution() or found.luck(), found.stale()) if x) or None
    return (adopted(result, found) if other else result), said


def config_dict(config: Config) -> dict[str, Any]:
    return {"optimizer": config.optimizer, **config.params()}


def _num(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


def _strict(x: Any) -> Any:
    """``x`` with every NaN or infinite float, however deep in lists and dicts, as None: strict
    JSON has no NaN or Infinity (JavaScript's JSON.parse, Go's encoding/json refuse them)."""
    if isinstance(x, float):
        return _num(x)
    if isinstance(x, dict):
        return {k: _strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict(v) for v in x]
    return x


def to_json(result: TuneResult) -> dict[str, Any]:
    """The study as one object of strict JSON (``adamtune show --json``): a NaN or infinite number
    (a diverged trial's last evaluation, a gradient norm that overflowed) is None (null)."""
    s = result.settings
    trials = []
    first = result.reruns
    for t in result.trials:
        row: dict[str, Any] = {
            "number": t.number, "state": t.state.value, "params": dict(t.params),
            "value": _num(t.value), "steps": t.steps, "engine": t.engine, "worker": t.worker,
            "config": config_dict(Config(**t.config)) if t.config else None,
            "curve": t.curve.to_dict(),
        }
        if t.grad_norms is not None:
            row["grad_norms"] = {**t.grad_norms.to_dict(), "sample_steps": t.grad_norms.sample_steps()}
        if t.error:
            row["error"] = t.error
        if t.interrupted:
            row["interrupted"] = True
        if t.number in first:
            row["retry_of_trial"] = first[t.number]
        trials.append(row)
    best = None
    if result.best is not None:
        best = {"number": result.best.number, "value": result.best.value, "config": config_dict(result.best_config)}
    return _strict({
        "study": result.study_name, "metric": s.metric, "direction": s.direction,
        "workload": s.workload or s.workload_name, "optimizer": s.optimizer, "task": s.task,
        "budget": s.budget, "seed": s.seed, "sampler": s.sampler, "pruner": s.pruner,
        "space": s.space.to_dict(), "counts": state_counts(result), "trials": trials, "best": best,
        "confirmed": _confirmed_json(stored(result)),
    })


def _confirmed_json(found: Confirmation | None) -> dict[str, Any] | None:
    """``adamtune confirm``'s result as kept in the study: the trial to adopt, the verdict, and each
    candidate's per-seed values (best first); None when the study keeps none for its best."""
    if found is None:
        return None
    return {
        "seeds": found.seeds, "adopt": None if found.caution() else found.adopt(), "verdict": found.verdict(),
        "stale": found.stale(), "finished_trials": found.finished,
        "trials": [{"number": r.number, "tuned": r.tuned, "mean": r.mean, "sd": r.sd, "end_mean": r.end_mean,
                    "best": list(r.best), "end": list(r.end)} for r in found.retrained],
    }
