"""Confirm a study's best trials with other seeds before adopting one.

A trial's value is its best evaluation on one seed: one draw of the initial weights and of the
minibatch order. On a noisy curve, the study's best is partly that draw's luck (the playbook's
"Determining whether to adopt a change": rerun the candidates with a few seeds). ``confirm``
trains the study's top trials again with ``seeds`` other seeds each -- new initial weights and a
new minibatch order per seed, one stacked (vmapped) model per seed holding every candidate --
and says which configuration is best on average and whether its lead exceeds the seeds' noise.
The results are kept in the study (attribute ``adamtune_confirm``), beside its trials.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

from adamtune.config import Config
from adamtune.analysis import progress, progress_findings
from adamtune.confirmed import CONFIRM_ATTR, Confirmation, Retrained, best_first, stored
from adamtune.engine import Outcome, data_seed, init_seed, train_trial
from adamtune.engine.batched import NotBatchable, members_per_chunk, train_members, why_not_batchable
from adamtune.errors import AdamtuneError, StudyError, WorkloadError, first_line, integral
from adamtune.results import TuneResult
from adamtune.study import check_device, warn, workload_changes
from adamtune.trials import TrialRecord, ranked
from adamtune.usercode import where
from adamtune.workloads import Workload, describe, load_workload

MAX_TOP, MAX_SEEDS = 16, 64


def check_counts(top: object, seeds: object, names: tuple[str, str] = ("top", "seeds")) -> tuple[int, int]:
    """``(top, seeds)`` as whole numbers in their ranges, else one line saying what must hold
    (``names``: what the caller calls them, ``--top`` on the command line)."""
    n_top, n_seeds = integral(top), integral(seeds)
    if n_top is None or not 1 <= n_top <= MAX_TOP:
        raise StudyError(f"{names[0]} must be a whole number of trials in 1..{MAX_TOP}, got {top!r}")
    if n_seeds is None or not 2 <= n_seeds <= MAX_SEEDS:
        raise StudyError(f"{names[1]} must be a whole number in 2..{MAX_SEEDS} (one seed tells nothing of the noise), "
                         f"got {seeds!r}")
    return n_top, n_seeds


def confirm(result: TuneResult, workload: Workload | str | None = None, *, top: int = 3, seeds: int = 5,
            device: str | None = None, notice: Callable[[str], None] | None = None,
            on_seed: Callable[[int, int], None] | None = None, names: tuple[str, str] = ("top", "seeds")) -> Confirmation:
    """Train ``result``'s ``top`` best completed trials again with ``seeds`` other seeds each and
    store what they reach in the study.

    Seed ``r`` (1..seeds) trains every candidate from the same initial weights and in the same
    minibatch order, those of study seed ``seed + r`` (a paired comparison; none is the study's
    own draw). The candidates train as one stacked model per seed where the model can be
    vmapped (in chunks that fit the memory budget), else one at a time. Where the study keeps a
    confirmation of the same candidates, its seeds are reused (seed r is the same draw) and only
    the seeds beyond them train; a confirmation of other candidates is replaced, with a notice.

    Args:
        workload: the study's workload (default: the one it stored, a built-in or file reference);
            needed for a study made from a Workload object, and held to the setup the study was
            trained with (objective, direction, steps, batch size, evaluation interval, data sizes).
        on_seed: called with ``(r, seeds)`` as seed ``r`` is done.
        names: what the messages call ``top`` and ``seeds`` (``--top`` on the command line).

    Raises:
        StudyError: an objective-mode study (adamtune cannot train it), no completed trial, a
            study that learned nothing (its best is noise), a workload other than the study's, bad
            ``top``/``seeds``, or the training failing (the workload's code raising, its metric
            returning NaN while the loss is finite).
    """
    n_top, n_seeds = check_counts(top, seeds, names)
    s = result.settings
    name = result.study_name
    if s.metric == "value":
        raise StudyError(f"study {name!r} trains with your own objective function: adamtune cannot train it again; "
                         "rerun its best configurations in your loop with other seeds")
    w = _workload_of(result, workload)
    if (w.objective, w.direction) != (s.metric, s.direction):
        raise StudyError(f"study {name!r} {s.direction}s {s.metric}, workload {w.name!r} {w.direction}s "
                         f"{w.objective}: give the study's own workload")
    changed = workload_changes(s, describe(w))
    if changed:
        raise StudyError(f"study {name!r} was trained with another workload setup ({', '.join(changed)}): its trials "
                         "would not compare with this confirmation's; give the study's own workload")
    candidates: Sequence[TrialRecord] = ranked(result.trials, s.direction)[:n_top]
    if not candidates:
        raise StudyError(f"study {name!r} has no completed trial to confirm yet")
    learned = progress_findings(progress(result), s.metric)
    if learned:
        raise StudyError(f"study {name!r} learned nothing ({learned[0].title}): its best trial is best by noise, so "
                         "there is nothing to confirm; run the next search its findings give (adamtune report)")
    dev = check_device(device)
    configs = [Config(**t.config) for t in candidates]
    say = notice or warn
    if len(candidates) < n_top:
        n = len(candidates)
        say(f"study {name!r} has {n} completed trial{'' if n == 1 else 's'}: confirming {_those(n)}")
    earlier, kept = stored(result), 0
    if earlier is not None and {r.number for r in earlier.retrained} == {t.number for t in candidates}:
        kept = earlier.seeds  # seed r is the same draw for the same candidates: kept, not trained again
        if kept > n_seeds:  # fewer asked for than kept: none is thrown away
            say(f"the study keeps {kept} seeds of these trials, more than the {n_seeds} asked for: all {kept} are used")
            n_seeds = kept
        else:
            say(f"{_seeds(1, kept)} {'is' if kept == 1 else 'are'} the confirmation kept in the study"
                + (f"; training {_seeds(kept + 1, n_seeds)}" if kept < n_seeds else ""))
    elif earlier is not None:
        say(f"this replaces the confirmation kept in the study (trials "
            f"{', '.join(str(r.number) for r in earlier.retrained)} with {earlier.seeds} seeds)")
    elif CONFIRM_ATTR in result.attrs:
        say("this replaces the confirmation kept in the study, made before its best trial changed")
    outcomes: list[list[Outcome]] = []
    try:
        model = w.build_model()
        batchable = why_not_batchable(model) is None
        chunk = members_per_chunk(w, dev, None, model) if batchable else len(configs)
        parts = [configs[i:i + chunk] for i in range(0, len(configs), chunk)]
        for r in range(kept + 1, n_seeds + 1):
            study_seed = s.seed + r
            init, data = init_seed(study_seed, 0), data_seed(study_seed)
            runs: list[Outcome] = []
            for part in parts:
                if batchable and len(part) > 1:
                    try:
                        runs += train_members(w, part, init_seeds=[init] * len(part), data_seed=data, device=dev)
                        continue
                    except NotBatchable as e:  # every part after it trains one at a time too
                        say(f"training the candidates one at a time: {e}{where(e.__cause__)}")
                        batchable = False
                runs += [train_trial(w, c, init_seed=init, data_seed=data, device=dev) for c in part]
            outcomes.append(runs)
            if on_seed is not None:
                on_seed(r, n_seeds)
    except (AdamtuneError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - the workload's code: one line, as a failed trial's
        raise StudyError(f"training the candidates failed: {type(e).__name__}: {first_line(e)}{where(e)}; nothing of this "
                         "confirmation is kept") from None
    for r, seed_runs in enumerate(outcomes, start=kept + 1):
        for t, o in zip(candidates, seed_runs):
            if o.status == "failed":  # the workload's metric at fault (NaN while the loss was finite), not divergence
                raise StudyError(f"training the candidates failed: trial {t.number} with seed {r}: {o.error}; "
                                 "nothing of this confirmation is kept")
    before = {r.number: r for r in earlier.retrained} if kept else {}
    retrained = []
    for j, t in enumerate(candidates):
        mine = [seed_runs[j] for seed_runs in outcomes]
        old = before.get(t.number)
        retrained.append(Retrained(t.number, t.value,
                                   (*(old.best[:kept] if old else ()), *(o.value for o in mine)),
                                   (*(old.end[:kept] if old else ()), *(_last(o, s.metric) for o in mine))))
    finished = sum(1 for t in result.trials if t.finished)
    found = Confirmation(name, s.metric, s.direction, n_seeds, best_first(retrained, s.direction), result.best.number,
                         finished, n_top)
    try:
        text = json.dumps(found.to_json())
        result.study.set_user_attr(CONFIRM_ATTR, text)
        if isinstance(result.attrs, dict):  # the attributes read with the study: ``result`` shows it from now on
            result.attrs[CONFIRM_ATTR] = text
    except Exception as e:  # noqa: BLE001 - read-only media, a server gone: the results are still printed
        cause = e.__cause__ or e  # Optuna's StorageInternalError over the database's own words
        say(f"the results could not be kept in study {name!r} (its storage refused the write: "
            f"{first_line(getattr(cause, 'orig', None) or cause)}); they are shown only")
    return found


def _workload_of(result: TuneResult, workload: Workload | str | None) -> Workload:
    """The workload to train ``result``'s trials with: ``workload``, else the one its study stored."""
    if workload is not None:
        return load_workload(workload) if isinstance(workload, str) else workload
    ref = result.settings.workload
    if ref is None:
        raise StudyError(f"study {result.study_name!r} was made from a Workload object: give it (adamtune confirm "
                         "--workload FILE.py:ATTR, or adamtune.confirm(result, workload) in Python)")
    try:
        return load_workload(ref)
    except WorkloadError as e:  # a relative path is relative to where the study was made
        raise WorkloadError(f"study {result.study_name!r} tunes workload {ref!r}, which cannot be loaded from here: "
                            f"{e}; run adamtune from the directory the study was made in, or give --workload") from None


def _last(outcome: Outcome, metric: str) -> float:
    if outcome.status != "complete":
        return math.nan
    values = outcome.curve.get(metric) or []
    return float(values[-1]) if values else math.nan


def _those(n: int) -> str:
    return "it" if n == 1 else f"those {n}"


def _seeds(first: int, last: int) -> str:
    return f"seed {first}" if first == last else f"seeds {first}..{last}"
