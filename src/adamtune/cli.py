"""The `adamtune` command line: it reads the options, calls adamtune's modules and prints what they
return; the modules are imported inside each command, so `--help` does not wait for torch."""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import re
import sys
import warnings
from typing import TYPE_CHECKING, Iterator, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from adamtune.errors import AdamtuneError, OutputClosed
from adamtune.storage import DAMAGED, DEFAULT_STORAGE, damaged, redact

if TYPE_CHECKING:
    from pathlib import Path

    from adamtune.results import TuneResult

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Tune Adam, AdamW and Adadelta for PyTorch models the way the Deep Learning Tuning Playbook says to.",
)


def _to_devnull(stream=None) -> None:
    """Point ``stream`` (stdout by default) at /dev/null, so nothing printed later (nor
    Python's last flush) fails."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), (stream or sys.stdout).fileno())


class _Console(Console):
    """A console whose closed output (``| head``, a pager quit) stops the command as Ctrl-C does;
    rich's own ends the process with status 1 wherever it is, counted as a trial's failure."""

    def on_broken_pipe(self) -> None:
        _to_devnull()
        raise OutputClosed("the output was closed (broken pipe)")


class _Stderr(Console):
    """Standard error, closed too when it shares the output's pipe (``2>&1 | head``): what was
    left to say has no reader and is dropped, and the command ends with its own status (141);
    rich's own ends the process with status 1."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        _to_devnull(sys.stderr)


console = _Console()
err = _Stderr(stderr=True)

STORAGE_HELP = "Optuna storage URL: sqlite:///file.db (default sqlite:///adamtune.db) or postgresql://user@host/db."


@contextlib.contextmanager
def _user_errors(tuning: bool = False) -> Iterator[None]:
    """Bad input or a failing database -> one line on stderr and exit status 2; Ctrl-C ->
    status 130 and SIGTERM -> 143, trials kept. ``tuning``: the command writes trials (tune),
    and a database failing says that those stored before it are kept."""
    import optuna
    import sqlalchemy.exc

    from adamtune.errors import Terminated, first_line

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        yield
    except AdamtuneError as e:
        err.print(f"adamtune: error: {e}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as e:
        # the database failed mid-run (disk full, file made read-only, server gone), or its file
        # is damaged
        cause = e.__cause__ or e.__context__ or e
        if tuning:  # a file damaged before this run: nothing of this run's to keep
            reason = first_line(cause)
            kept = DAMAGED if damaged(reason) else "; every trial stored before is kept"
            err.print(f"adamtune: error: the study storage failed: {reason}{kept}", markup=False, highlight=False,
                      soft_wrap=True)
        else:  # a command that only reads has nothing of its own to keep: it says what failed
            reason = first_line(getattr(cause, "orig", None) or cause)  # the driver's words, without SQLAlchemy's
            reason += DAMAGED if damaged(reason) else ""
            err.print(f"adamtune: error: cannot read the study storage: {reason}", markup=False, highlight=False,
                      soft_wrap=True)
        raise typer.Exit(2) from None
    except (OutputClosed, BrokenPipeError) as e:  # the reader of a pipe ended: 128 + SIGPIPE, as the shell's own
        _to_devnull()
        if tuning and isinstance(e, OutputClosed):
            err.print("adamtune: the output was closed (broken pipe); stopped, every finished trial is kept in the "
                      "storage", highlight=False, soft_wrap=True)
        raise typer.Exit(141) from None
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        err.print(f"adamtune: {'terminated (SIGTERM)' if terminated else 'interrupted'}; every finished trial "
                  "is kept in the storage", highlight=False)
        raise typer.Exit(143 if terminated else 130) from None


def _whole(option: str, text: Optional[str]) -> Optional[int]:
    """An integer option's text as an int (ASCII digits, an optional sign), or one line naming it."""
    from adamtune.errors import whole_number

    if text is None:
        return None
    number = whole_number(text)
    if number is None:
        raise AdamtuneError(f"{option} must be a whole number, got {text!r}")
    return number


def _count(text: str) -> int | str:
    """An integer option's text as an int, or the text itself for the check that names its range."""
    from adamtune.errors import whole_number

    number = whole_number(text)
    return text if number is None else number


def _on_disk(storage: str) -> str:
    """``storage``, refused if it is in-memory SQLite: a command's study would end with it."""
    from adamtune.errors import StorageError
    from adamtune.storage import in_memory

    if in_memory(storage):
        raise StorageError(f"storage {storage!r} is in memory and would lose every trial when the command ends; "
                           "name a file, e.g. sqlite:///adamtune.db")
    return storage


@app.command()
def tune(
    workload: Optional[str] = typer.Option(
        None, "--workload", "-w", metavar="WORKLOAD",
        help="Built-in (digits-mlp, digits-cnn, charlm), path/file.py:ATTR or module:ATTR. "
             "Default: the study's own, else digits-mlp."),
    optimizer: Optional[str] = typer.Option(None, metavar="NAME", help="adamw, adam or adadelta. Default: the study's own, else adamw."),
    task: Optional[str] = typer.Option(None, metavar="TASK", help="Preset windows: generic, cnn, transformer (fine-tuning a pretrained model: lr up to 3e-4; a Transformer trained from scratch wants generic, or llm for a language model), llm (pretraining; also fixes beta2 at 0.95 while the budget does not tune it; otherwise untuned values are PyTorch's defaults). Default: the study's own, else the workload's."),
    budget: Optional[str] = typer.Option(
        None, metavar="N",
        help="Total trials of the study, 1 to 1000000 (default: the study's own, else 16). It also picks what is tuned: AdamW: lr; 6-9 "
             "+weight_decay; 10-24 +beta1; 25-49 +eps; 50+ +beta2. Adam: the same without weight_decay. Adadelta: lr; "
             "10-24 +rho; 25+ +eps (it has no betas). Re-running continues the study; a budget it has reached runs "
             "nothing."),
    set_: Optional[List[str]] = typer.Option(
        None, "--set", metavar="NAME=WINDOW",
        help="NAME=LOW:HIGH[:log|:linear|:log1m] tunes NAME over a window (log1m: log of 1-x, for beta1, beta2, rho); "
             "NAME=VALUE fixes it. NAME: lr, eps, weight_decay, beta1 and beta2 (Adam, AdamW), rho (Adadelta), "
             "max_grad_norm (clipping; none or off: no clipping), warmup (a fraction of the steps, below 1), "
             "schedule (a value only: constant or cosine). Repeatable; a NAME given twice is refused."),
    sampler: Optional[str] = typer.Option(
        None, metavar="NAME", help="quasi-random (scrambled Sobol), tpe, gp or random. Default: the study's last, else quasi-random; "
                   "it may change between runs of a study."),
    pruner: Optional[str] = typer.Option(
        None, metavar="NAME", help="asha, median or none. Default: the study's last, else asha; it may change between runs."),
    storage: str = typer.Option(DEFAULT_STORAGE, metavar="URL", show_default=False, help=STORAGE_HELP),
    study: Optional[str] = typer.Option(None, metavar="NAME", help="Study name. Default: the workload's name. An existing study is continued."),
    seed: Optional[str] = typer.Option(
        None, metavar="N", help="Seed of the sampler, the initial weights and the data order: 0 to 2**32-1. Default: the study's own, else 0."),
    device: Optional[str] = typer.Option(None, metavar="DEVICE", help="cpu, cuda or cuda:N. Default: cuda when available."),
    batch: str = typer.Option(
        "auto", metavar="auto|K", show_default=False, help="Trials trained at once as one vmapped model: auto (default: batched whenever the model "
                     "allows it), or a number; 1 = one at a time."),
    max_memory: Optional[str] = typer.Option(
        None, metavar="SIZE", help="Memory the stacked trials may use, e.g. 2GB or 512MB. Default: 80% of free GPU memory, "
                   "or a quarter of free RAM. Larger batches run in chunks that fit."),
    workers: Optional[str] = typer.Option(
        None, metavar="N",
        help="Workers that share the study and train at once, 1 to 1024, started by Ray (pip install -c "
             "constraints.txt -e '.\\[ray]'): on a local Ray cluster started for this run, unless --ray-address names "
             "one. The trials left are split evenly between them. Default: this process alone, without Ray."),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", metavar="ADDRESS",
        help="The Ray cluster the workers run on: auto (the one `ray start --head` made on this machine), "
             "HOST:6379 (the head's GCS address) or ray://HOST:10001; a cluster with token authentication also "
             "needs RAY_AUTH_MODE=token and its token. A cluster of several machines needs a storage they all reach "
             "(postgresql://...). Default with --workers: a local cluster for this run."),
    cpus_per_worker: Optional[str] = typer.Option(
        None, metavar="N", help="CPUs Ray reserves for each worker, and the threads its torch uses. Default 1."),
    no_report: bool = typer.Option(
        False, "--no-report", metavar="",
        help="Do not write the HTML report (default: it is written next to a SQLite storage and named after it, "
             "runs/x.db -> runs/x-report-STUDY.html; for another storage, adamtune-report-STUDY.html in the "
             "working directory)."),
) -> None:
    """Run (or continue) a study and print the best configuration as ready-to-paste PyTorch code.

    Ctrl-C (exit 130) or SIGTERM (exit 143) stops it: every finished trial is kept, and running
    it again first runs the trials cut short again, with the same hyperparameters and initial
    weights.
    """
    from adamtune.confirmed import stored
    from adamtune.guide import task_text
    from adamtune.report.terminal import (best_snippet, best_step_note, best_trials, confirm_hint, confirmed_best,
                                         counts_line, fmt, noise_note, print_table, trial_value_text, trials_table)
    from adamtune.trials import TrialState, last_line, trials_text
    from adamtune.results import fixed_description, tuned_description
    from adamtune.study import tune as run_tune

    with _user_errors(tuning=True):
        progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("trials"),
            TextColumn("best [bold]{task.fields[best]}"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), console=console, transient=False,
        )
        state: dict = {}

        def held_notice(msg: str) -> None:  # held until the study's header is printed: it is about this study
            state.setdefault("held", []).append(msg)
            if state.get("started"):
                flush_notes()

        def flush_notes() -> None:
            for msg in state.pop("held", []):
                progress.console.print(f"[yellow]note:[/] {escape(msg)}", highlight=False, soft_wrap=True)

        def on_start(settings, remaining: int) -> None:
            name = study or settings.workload_name
            console.print(
                f"study [bold]{escape(name)}[/] · workload {escape(settings.workload or settings.workload_name)} · "
                f"optimizer {settings.optimizer} · task {task_text(settings.task)} · sampler {settings.sampler} · "
                f"pruner {settings.pruner} · seed {settings.seed}", highlight=False, soft_wrap=True)
            console.print(tuned_description(settings), highlight=False, markup=False)
            if settings.space.dimensions:
                console.print(f"search space: {settings.space.describe()}", highlight=False, markup=False,
                              soft_wrap=True)
            fixed = fixed_description(settings)
            if fixed is not None:
                console.print(fixed, highlight=False, markup=False, soft_wrap=True)
            state["started"] = True
            flush_notes()
            if remaining == 0:
                console.print(f"the study already has its {settings.budget} trials; pass a larger --budget to run more")
                state["nothing_to_run"] = True
                return  # no progress bar for no trials
            # The study's progress to its budget, other workers' trials too: the trials it has
            # already (some may be in training elsewhere), then every trial finished.
            state["done"] = settings.budget - remaining
            state["task"] = progress.add_task("tuning", total=settings.budget, completed=state["done"], best="—")
            progress.start()

        def on_trial(record, so_far) -> None:
            params = " ".join(f"{k}={fmt(v)}" for k, v in record.params.items())
            why = ""  # a failure's own line: the error and where in the user's code it came from
            if record.state == TrialState.FAILED:
                why = "  (cut short)" if record.interrupted else f"  {last_line(record.error) or ''}".rstrip()
            progress.console.print(
                f"  trial {record.number:>3} {record.state.value:<9} {so_far.settings.metric} "
                f"{trial_value_text(record):<12} {params}{why}", highlight=False, soft_wrap=True, markup=False)
            state["done"] = max(state["done"], min(so_far.finished - so_far.cut_short, so_far.settings.budget))  # never back
            progress.update(state["task"], completed=state["done"], best=fmt(so_far.best_value))

        options = dict(
            optimizer=optimizer, task=task, budget=_whole("--budget", budget), space=set_ or None,
            sampler=sampler, pruner=pruner, storage=_on_disk(storage), study=study, seed=_whole("--seed", seed),
            device=device, on_trial=on_trial, on_start=on_start, batch=batch, max_memory=parse_size(max_memory),
            notice=held_notice,
        )
        n_workers = _whole("--workers", workers)
        cpus = _whole("--cpus-per-worker", cpus_per_worker)
        if cpus is not None and cpus < 1:
            raise AdamtuneError(f"--cpus-per-worker must be a whole number >= 1, got {cpus_per_worker!r}")
        if ray_address is not None and n_workers is None:
            n_workers = 1  # one worker on the cluster named
        if cpus is not None and n_workers is None:
            raise AdamtuneError("--cpus-per-worker is for the workers that --workers starts on Ray; give --workers N")
        try:
            if n_workers is None:
                result = run_tune(workload, **options)
            else:
                from adamtune.cluster import tune_on_ray

                result = tune_on_ray(workload, workers=n_workers, address=ray_address, cpus_per_worker=cpus, **options)
            if "task" in state:  # as the study stands at the end: trials still in training elsewhere are not done
                progress.update(state["task"], completed=min(result.finished - result.cut_short, result.settings.budget))
        finally:
            if progress.live.is_started:  # stopping a progress never started prints an empty line
                progress.stop()
            flush_notes()  # a run that failed before its header still says what it noticed
        console.print()
        elsewhere = result.count(TrialState.RUNNING)
        if elsewhere:
            console.print(f"{elsewhere} of its trials {'are' if elsewhere > 1 else 'is'} still in training elsewhere "
                          "(another worker): what follows is the study so far; `adamtune show` follows them",
                          highlight=False, markup=False, soft_wrap=True)
        best = best_trials(result)
        if best:
            print_table(console, lambda compact: trials_table(result, best, title="Best trials", compact=compact))
        console.print(f"{trials_text(len(result.trials))}: {counts_line(result)}", highlight=False)
        snippet = best_snippet(result)
        noise = noise_note(result) if snippet is not None else None
        if snippet is None:
            console.print("no trial completed, so there is no best configuration yet")
        elif noise is not None:  # no result to paste: the findings and the next search follow
            console.print(Text(f"\nBest: trial {result.best.number}, {result.settings.metric} = "
                               f"{fmt(result.best_value)}, {noise}: no configuration to paste yet; the next "
                               "search below says what to run instead"), soft_wrap=True, highlight=False)
        else:
            found = stored(result)
            chosen, said = confirmed_best(result, found)
            best = f"\nBest: trial {result.best.number}, {result.settings.metric} = {fmt(result.best_value)}"
            if chosen is not result:  # adamtune confirm chose another trial: its code
                console.print(Text(f"{best}; {said}. Paste (trial {chosen.best.number}):\n"), highlight=False,
                              soft_wrap=True)
                print(chosen.paste_code())
            else:  # where the seeds said something, they speak for the best, not its own curve's step
                note = best_step_note(result) if said is None else None
                console.print(Text(f"{best}{f' ({note})' if note else ''}. Paste:\n"), highlight=False)
                print(snippet)
            hint = confirm_hint(result, storage) if found is None else said if chosen is result else None
            if hint:  # the command to confirm a dip; or, kept, that none is safe or that it misses trials
                console.print(f"\n{hint}", highlight=False, markup=False, soft_wrap=True)
        finish_study(console, result, storage, write_report=not no_report, errors=err)


def finish_study(console: Console, result: TuneResult, storage: str | None, *, write_report: bool = True,
                 errors: Console | None = None) -> Path | None:
    """What ``adamtune tune`` prints at the end of a study: the findings and where the report went.

    The report goes next to the storage (``default_report_path``). A report that cannot be written
    does not undo a finished study: it gets a one-line warning on ``errors`` and None is returned.
    """
    from adamtune.analysis import analyze
    from adamtune.report.findings import print_findings

    analysis = analyze(result, storage=storage)
    console.print()
    print_findings(console, analysis)
    if not write_report:
        return None
    # Only now: the report's plots import matplotlib (seconds on a busy laptop).
    from adamtune.report.html import ReportError, default_report_path
    from adamtune.report.html import write_report as write

    path = default_report_path(storage, result.study_name)
    try:
        written = write(analysis, path, storage)
    except ReportError as e:
        (errors or console).print(Text(f"adamtune: warning: {e}"), soft_wrap=True)
        return None
    console.print(Text.assemble(("Report: ", "bold"), os.fspath(written)), soft_wrap=True, highlight=False)
    return written


# `adamtune show` prints the last line of this many failed trials' tracebacks, then how many more.
SHOWN_FAILURES = 3


@app.command()
def show(
    storage: str = typer.Option(DEFAULT_STORAGE, metavar="URL", show_default=False, help=STORAGE_HELP),
    study: Optional[str] = typer.Option(None, metavar="NAME", help="Study name (may be omitted when the storage holds one)."),
    as_json: bool = typer.Option(
        False, "--json", metavar="",
        help="Print one JSON object instead of a table (strict JSON: a NaN or infinite number, as a diverged trial's "
             "last evaluation, is null)."),
) -> None:
    """Every trial of a study: number, state, hyperparameters, objective, steps.

    Then the last line of the last 3 failed trials' tracebacks, and how many more failed;
    --json has every traceback.
    """
    from adamtune.commands import command_line
    from adamtune.heartbeat import lost, lost_text
    from adamtune.report.terminal import counts_line, print_table, retries_line, trials_table, to_json
    from adamtune.trials import last_line, trials_text
    from adamtune.results import fixed_description, load, tuned_description

    with _user_errors():
        result = load(study, _on_disk(storage))
        if as_json:
            print(json.dumps(to_json(result), indent=2, allow_nan=False))
            return
        s = result.settings
        console.print(f"study [bold]{escape(result.study_name)}[/] · workload {escape(s.workload or s.workload_name)} · "
                      f"optimizer {s.optimizer} · {s.direction} {escape(s.metric)}", highlight=False)
        console.print(tuned_description(s), highlight=False, markup=False)
        fixed = fixed_description(s)
        if fixed is not None:
            console.print(fixed, highlight=False, markup=False, soft_wrap=True)
        print_table(console, lambda compact: trials_table(result, compact=compact))
        console.print(f"{trials_text(len(result.trials))}: {counts_line(result)}", highlight=False)
        again = retries_line(result)
        if again:
            console.print(again, highlight=False, markup=False, soft_wrap=True)
        failed = [t for t in result.trials if t.error and not t.interrupted]  # cut short: counted above
        for t in failed[-SHOWN_FAILURES:]:
            console.print(f"trial {t.number} failed: {last_line(t.error) or ''}", highlight=False, markup=False,
                          soft_wrap=True)
        if failed:
            more = len(failed) - SHOWN_FAILURES
            every = command_line("show", "--json", storage=storage, study=result.study_name)
            console.print(f"... and {more} more failed; every traceback: {every}" if more > 0
                          else f"every traceback: {every}", highlight=False, markup=False, soft_wrap=True)
        gone = lost(result.study)
        if gone:
            console.print(f"{trials_text(len(gone))} ({', '.join(str(t.number) for t in gone)}) running but lost: "
                          f"{lost_text(gone)}; the next `adamtune tune` on the study ends "
                          f"{'them' if len(gone) > 1 else 'it'} as cut short and makes up for "
                          f"{'them' if len(gone) > 1 else 'it'}",
                          highlight=False, markup=False, soft_wrap=True)


@app.command()
def best(
    storage: str = typer.Option(DEFAULT_STORAGE, metavar="URL", show_default=False, help=STORAGE_HELP),
    study: Optional[str] = typer.Option(None, metavar="NAME", help="Study name (may be omitted when the storage holds one)."),
) -> None:
    """Print the best configuration as ready-to-paste PyTorch code.

    Its first lines are comments naming the study, the best trial and its value, that it is
    best by noise and no recommendation when no trial learned anything, and the step to stop at
    when the trial's best evaluation was not its last.
    """
    from adamtune.errors import StudyError
    from adamtune.confirmed import stored
    from adamtune.report.terminal import best_snippet, best_step_note, confirmed_best, fmt, noise_note
    from adamtune.results import load

    with _user_errors():
        result = load(study, _on_disk(storage))
        snippet = best_snippet(result)
        if snippet is None:
            raise StudyError(f"study {result.study_name!r} has no completed trial yet")
        print(f"# study {result.study_name}: best trial {result.best.number}, "
              f"{result.settings.metric} = {fmt(result.best_value)}")
        noise = noise_note(result)
        if noise:
            print(f"# {noise}")
        chosen, said = confirmed_best(result, stored(result), noise)
        if chosen is not result:  # what to adopt is the configuration best on average: its code
            print(f"# {said}; its code:")
            snippet = chosen.paste_code()
        else:  # where the seeds said something, they speak for the best, not its own curve's step
            note = best_step_note(result) if said is None else None
            for line in (note, said):
                if line:
                    print(f"# {line}")
        print(snippet)


@app.command()
def confirm(
    storage: str = typer.Option(DEFAULT_STORAGE, metavar="URL", show_default=False, help=STORAGE_HELP),
    study: Optional[str] = typer.Option(None, metavar="NAME", help="Study name (may be omitted when the storage holds one)."),
    top: str = typer.Option("3", metavar="N", help="How many of the best completed trials to train again, 1 to 16."),
    seeds: str = typer.Option("5", metavar="N", help="Other seeds each is trained with, 2 to 64: new initial weights "
                                                     "and a new minibatch order per seed, the same for every candidate."),
    workload: Optional[str] = typer.Option(None, "--workload", "-w", metavar="WORKLOAD",
                                           help="The study's workload, where it cannot be read from the study. Default: the study's own."),
    device: Optional[str] = typer.Option(None, metavar="DEVICE", help="cpu, cuda or cuda:N. Default: cuda when available."),
) -> None:
    """Train the study's best trials again with other seeds, and say which to adopt.

    A trial's value is one seed's best evaluation; on a noisy curve the study's best is partly
    that seed's luck. Each seed trains every candidate at once as one vmapped model, from the same
    initial weights and minibatches. The means and spreads are kept in the study (`best`, `tune`
    and the report follow them); the paste code is the configuration to adopt: the one best on
    average where its lead beats the seeds' noise and it ends training no worse, else the study's
    best. Asked again for the same trials with more seeds, only the new seeds train.
    """
    from adamtune.confirmation import confirm as run_confirm
    from adamtune.confirmed import adopted, summary
    from adamtune.errors import Terminated
    from adamtune.study import sigterm_as_interrupt
    from adamtune.results import load

    with _user_errors():
        result = load(study, _on_disk(storage))
        try:
            with sigterm_as_interrupt():
                found = run_confirm(result, workload, top=_count(top), seeds=_count(seeds), names=("--top", "--seeds"),
                                    device=device,
                                    notice=lambda m: err.print(f"note: {m}", highlight=False, markup=False),
                                    on_seed=lambda r, n: err.print(f"seed {r} of {n} trained", highlight=False))
        except KeyboardInterrupt as e:  # nothing is stored before the end: the study is as it was
            err.print(f"adamtune: {'terminated (SIGTERM)' if isinstance(e, Terminated) else 'interrupted'}; nothing "
                      "of this confirmation is kept, the study is as it was", highlight=False)
            raise typer.Exit(143 if isinstance(e, Terminated) else 130) from None
        for line in summary(found):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        if not found.best.diverged:
            chosen = adopted(result, found)
            console.print(f"\nPaste (trial {chosen.best.number}, the one to adopt):", highlight=False)
            print(chosen.paste_code())


@app.command()
def studies(storage: str = typer.Option(DEFAULT_STORAGE, metavar="URL", show_default=False, help=STORAGE_HELP)) -> None:
    """List the studies in a storage.

    Optuna studies not made by adamtune are named on a line after the table. A study whose
    stored settings or trials were changed outside adamtune is listed as malformed, with one
    line on stderr saying what is wrong, and the exit status is 2.
    """
    from rich.table import Table

    from adamtune.report.terminal import counts_line, fmt, print_table
    from adamtune.results import list_studies

    with _user_errors():
        table = Table(header_style="bold")
        for col in ("study", "workload", "optimizer", "trials", "best"):
            table.add_column(col)
        malformed: dict = {}
        others: list = []
        for r in list_studies(_on_disk(storage), malformed=malformed, others=others):
            s = r.settings
            table.add_row(Text(r.study_name), Text(s.workload or s.workload_name), s.optimizer, counts_line(r),
                          Text(f"{s.metric} {fmt(r.best_value)}"))
        for name in malformed:
            table.add_row(Text(name), "—", "—", "malformed", "—")
        if table.row_count:
            print_table(console, lambda compact: table)  # a long study name is not cut
        elif not others:
            console.print(f"this storage holds no study yet; `adamtune tune --storage {redact(storage)}` makes one",
                          highlight=False, markup=False, soft_wrap=True)
        if others:
            one = len(others) == 1
            console.print(f"{len(others)} {'study' if one else 'studies'} not made by adamtune: {', '.join(others)} "
                          f"(adamtune show cannot read {'it' if one else 'them'}; optuna-dashboard can)",
                          highlight=False, markup=False, soft_wrap=True)
        for e in malformed.values():
            err.print(f"adamtune: error: {e}", markup=False, highlight=False, soft_wrap=True)
        if malformed:
            raise typer.Exit(2)


@app.command()
def explain(
    param: Optional[str] = typer.Argument(None, metavar="PARAM", help="lr, beta1, beta2, eps, weight_decay, rho, max_grad_norm, warmup or schedule. Omit for all."),
    optimizer: str = typer.Option("adamw", metavar="NAME", help="adamw, adam or adadelta."),
    task: Optional[str] = typer.Option(None, metavar="TASK", help="Show typical values for one task: generic, cnn, transformer, llm."),
) -> None:
    """What each hyperparameter does, typical values, PyTorch's exact update rule, weight-decay conventions."""
    from adamtune.report.explain import render_explain

    with _user_errors():
        console.print(render_explain(param, optimizer=optimizer, task=task))


def parse_size(text: Optional[str]) -> Optional[int]:
    """``"2GB"`` -> bytes. Raises StudyError on anything else."""
    from adamtune.errors import StudyError

    if text is None:
        return None
    # 2GB, 2GiB, 2G, 2 gb, 1.5e3MB, 4096 (bytes); ASCII digits only
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)\s*(?:([KMGTkmgt])(?:[iI]?[bB])?|[bB])?\s*", text)
    if m is None:
        raise StudyError(f"--max-memory must be a size like 2GB or 512MB, got {text!r}")
    number, unit = m.group(1), m.group(2)
    value = float(number) * (1 << (10 * " KMGT".index(unit.upper())) if unit else 1)
    if not math.isfinite(value) or value < 1:
        raise StudyError(f"--max-memory must be a finite size of at least 1 byte, like 2GB or 512MB, got {text!r}")
    return int(value)


@app.command()
def report(
    storage: str = typer.Option(DEFAULT_STORAGE, metavar="URL", show_default=False, help=STORAGE_HELP),
    study: Optional[str] = typer.Option(None, metavar="NAME", help="Study name (may be omitted when the storage holds one)."),
    out: Optional[str] = typer.Option(
        None, "--out", "-o", metavar="FILE",
        help="HTML file to write, never the storage or another SQLite database. Default: next to a SQLite storage and "
             "named after it, runs/x.db -> runs/x-report-STUDY.html; for another storage, adamtune-report-STUDY.html "
             "in the working directory."),
) -> None:
    """Write a self-contained HTML report: best configuration, findings with actions, plots, every trial."""
    from adamtune.analysis import analyze
    from adamtune.report.findings import print_findings
    from adamtune.report.html import check_report_path, default_report_path, write_report
    from adamtune.results import load

    with _user_errors():
        result = load(study, _on_disk(storage))
        path = check_report_path(out if out is not None else default_report_path(storage, result.study_name), storage)
        analysis = analyze(result, storage=storage)
        path = write_report(analysis, path, storage)
        print_findings(console, analysis)
        console.print(f"Report: {path}", highlight=False, markup=False, soft_wrap=True)


@app.command()
def dashboard(
    storage: str = typer.Option(DEFAULT_STORAGE, metavar="URL", show_default=False, help=STORAGE_HELP),
    host: str = typer.Option(
        "127.0.0.1", metavar="ADDRESS",
        help="Address to listen on. The default serves this machine only; 0.0.0.0 serves every interface (anyone "
             "who reaches this machine can read the studies, and change them)."),
    port: str = typer.Option("8080", metavar="PORT", help="Port to listen on (1-65535)."),
) -> None:
    """Open the study storage in optuna-dashboard (interactive plots of every study in it).

    Ctrl-C stops it (exit status 130).
    """
    from adamtune.storage import open_storage

    with _user_errors():
        try:
            import optuna_dashboard
        except ImportError:
            raise AdamtuneError(
                "the dashboard needs optuna-dashboard: pip install -c constraints.txt optuna-dashboard") from None
        port_number = _whole("--port", port)
        if not 1 <= port_number <= 65535:
            raise AdamtuneError(f"--port must be a TCP port in 1..65535, got {port}")
        if not host:  # "$HOST" unset: the server would listen on every interface
            raise AdamtuneError("--host must name an address, e.g. 127.0.0.1 (this machine only), or 0.0.0.0 to "
                                "serve every interface, got ''")
        # bad URL or missing file: one line, not a server error; the dashboard reads through the
        # storage opened here (a bare postgresql:// gets the driver that is installed)
        store = open_storage(_on_disk(storage), must_exist=True)
        _check_address(host, port_number)
        console.print(f"optuna-dashboard on http://{host}:{port_number}/ (Ctrl-C stops it)", highlight=False, markup=False)
        try:
            optuna_dashboard.run_server(store, host=host, port=port_number)
        except OSError as e:  # taken in the moment since the check
            raise AdamtuneError(f"cannot serve on {host}:{port_number}: {e.strerror or e}") from None
        # The server runs until Ctrl-C, which Bottle catches: stopped by it, as tune is (status 130).
        err.print("adamtune: interrupted; the dashboard stopped", highlight=False)
        raise typer.Exit(130)


def _check_address(host: str, port: int) -> None:
    """Bind ``host:port`` as the dashboard's server will (and let go at once), so that an address
    in use or a host that does not resolve is one line before the server prints anything."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as wsgiref's server binds
            s.bind((host, port))
    except (OSError, UnicodeError) as e:  # UnicodeError: a host name IDNA cannot encode
        raise AdamtuneError(f"cannot serve on {host}:{port}: {getattr(e, 'strerror', None) or e}") from None


# typer keeps the single line breaks of a docstring's later paragraphs, which then wrap mid-line
# on the terminal: each command's help is its docstring with every paragraph on one line.
for _command in app.registered_commands:
    _command.help = "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(_command.callback.__doc__).split("\n\n"))


def _command_path(args: List[str]) -> str:
    """``adamtune COMMAND`` for the command ``args`` name (an option missing its value says no
    command of its own), else ``adamtune``."""
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    first = next((a for a in args if not a.startswith("-")), None)
    return f"adamtune {first}" if first in commands else "adamtune"


def main() -> None:
    """The ``adamtune`` entry point: typer's own usage errors (an unknown option or command, a
    missing value) are one line and exit status 2 too, like every other bad input."""
    import sys

    from adamtune.report.plain import fit_output_encoding

    fit_output_encoding()  # a terminal that is not UTF-8 gets ASCII, not a UnicodeEncodeError
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as e:
        if type(e).__name__ != "NoArgsIsHelpError":  # no arguments: the help is printed already
            ctx = getattr(e, "ctx", None)
            where = ctx.command_path if ctx is not None else _command_path(sys.argv[1:])
            err.print(f"adamtune: error: {e.format_message()} (see {where} --help)", markup=False,
                      highlight=False, soft_wrap=True)
        sys.exit(getattr(e, "exit_code", 2))
    except typer.Abort:
        err.print("adamtune: aborted", highlight=False)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
