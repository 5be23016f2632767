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
from adamtune.confirmed import CONFIRM_ATTR, Confirmation, Retrained, best_first
from adamtune.engine import Outcome, data_seed, init_seed, train_trial
from adamtune.engine.batched import NotBatchable, members_per_chunk, train_members, why_not_batchable
from adamtune.errors import AdamtuneError, StudyError, WorkloadError, first_line, integral
from adamtune.results import TuneResult
from adamtune.study import check_device, warn, workload_changes
from adamtune.trials import TrialRecord, ranked
from adamtune.workloads import Workload, describe, load_workload

MAX_TOP, MAX_SEEDS = 16, 64


def check_counts(top: object, seeds: object) -> tuple[int, int]:
    """``(top, seeds)`` as whole numbers in their ranges, else one line saying what must hold."""
    n_top, n_seeds = integral(top), integral(seeds)
    if n_top is None or not 1 <= n_top <= MAX_TOP:
        raise StudyError(f"top must be a whole number of trials in 1..{MAX_TOP}, got {top!r}")
    if n_seeds is None or not 2 <= n_seeds <= MAX_SEEDS:
        raise StudyError(f"seeds must be a whole number in 2..{MAX_SEEDS} (one seed tells nothing of the noise), "
                         f"got {seeds!r}")
    return n_top, n_seeds


def confirm(result: TuneResult, workload: Workload | str | None = None, *, top: int = 3, seeds: int = 5,
            device: str | None = None, notice: Callable[[str], None] | None = None,
            on_seed: Callable[[int, int], None] | None = None) -> Confirmation:
    """Train ``result``'s ``top`` best completed trials again with ``seeds`` other seeds each and
    store what they reach in the study.

    Seed ``r`` (1..seeds) trains every candidate from the same initial weights and in the same
    minibatch order, those of study seed ``seed + r`` (a paired comparison; none is the study's
    own draw). The candidates train as one stacked model per seed where the model can be
    vmapped (in chunks that fit the memory budget), else one at a time.

    Args:
        workload: the study's workload (default: the one it stored, a built-in or file reference);
            needed for a study made from a Workload object, and held to the setup the study was
            trained with (objective, direction, steps, batch size, evaluation interval, data sizes).
        on_seed: called with ``(r, seeds)`` as seed ``r`` is done.

    Raises:
        StudyError: an objective-mode study (adamtune cannot train it), no completed trial, a
            workload other than the study's, bad ``top``/``seeds``, or the training failing (the
            workload's code raising).
    """
    n_top, n_seeds = check_counts(top, seeds)
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
    dev = check_device(device)
    configs = [Config(**t.config) for t in candidates]
    say = notice or warn
    outcomes: list[list[Outcome]] = []
    try:
        model = w.build_model()
        batchable = why_not_batchable(model) is None
        chunk = members_per_chunk(w, dev, None, model) if batchable else len(configs)
        parts = [configs[i:i + chunk] for i in range(0, len(configs), chunk)]
        for r in range(1, n_seeds + 1):
            study_seed = s.seed + r
            init, data = init_seed(study_seed, 0), data_seed(study_seed)
            runs: list[Outcome] = []
            for part in parts:
                if batchable and len(part) > 1:
                    try:
                        runs += train_members(w, part, init_seeds=[init] * len(part), data_seed=data, device=dev)
                        continue
                    except NotBatchable as e:  # every part after it trains one at a time too
                        say(f"training the candidates one at a time: {e}")
                        batchable = False
                runs += [train_trial(w, c, init_seed=init, data_seed=data, device=dev) for c in part]
            outcomes.append(runs)
            if on_seed is not None:
                on_seed(r, n_seeds)
    except (AdamtuneError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - the workload's code: one line, as a failed trial's
        raise StudyError(f"training the candidates failed: {type(e).__name__}: {first_line(e)}; nothing of this "
                         "confirmation is kept") from None
    failed = next((o for seed_runs in outcomes for o in seed_runs if o.status == "failed"), None)
    if failed is not None:  # the workload's metric at fault (NaN while the loss was finite), not divergence
        raise StudyError(f"training the candidates failed: {failed.error}; nothing of this confirmation is kept")
    retrained = []
    for j, t in enumerate(candidates):
        mine = [seed_runs[j] for seed_runs in outcomes]
        retrained.append(Retrained(t.number, t.value, tuple(o.value for o in mine),
                                   tuple(_last(o, s.metric) for o in mine)))
    found = Confirmation(name, s.metric, s.direction, n_seeds, best_first(retrained, s.direction), result.best.number)
    try:
        result.study.set_user_attr(CONFIRM_ATTR, json.dumps(found.to_json()))
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


