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
from adamtune.confirmed import CONFIRM_ATTR, Confirmation, Retrained
from adamtune.engine import Outcome, data_seed, init_seed, train_trial
from adamtune.engine.batched import NotBatchable, train_members, why_not_batchable
from adamtune.errors import StudyError, integral
from adamtune.results import TuneResult
from adamtune.study import check_device, warn
from adamtune.trials import TrialRecord, oriented, ranked
from adamtune.workloads import Workload, load_workload

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


def confirm(result: TuneResult, workload: Workload | str | None = None, *, top: int = 3, seeds: int = 3,
            device: str | None = None, notice: Callable[[str], None] | None = None) -> Confirmation:
    """Train ``result``'s ``top`` best completed trials again with ``seeds`` other seeds each and
    store what they reach in the study.

    Seed ``r`` (1..seeds) trains every candidate from the initial weights and in the minibatch
    order of study seed ``seed + r``, so the candidates meet the same draws (a paired
    comparison) and none meets the study's own. The candidates train as one stacked model per
    seed where the model can be vmapped, else one at a time.

    Args:
        workload: the study's workload (default: the one it stored, a built-in or file reference);
            needed for a study made from a Workload object.

    Raises:
        StudyError: an objective-mode study (adamtune cannot train it), no completed trial, or
            bad ``top``/``seeds``.
    """
    n_top, n_seeds = check_counts(top, seeds)
    s = result.settings
    if s.metric == "value":
        raise StudyError(f"study {result.study_name!r} trains with your own objective function: adamtune cannot "
                         "train it again; rerun its best configurations in your loop with other seeds")
    if workload is None:
        if s.workload is None:
            raise StudyError(f"study {result.study_name!r} was made from a Workload object: pass it "
                             "(adamtune.confirm(result, workload))")
        workload = s.workload
    w = load_workload(workload) if isinstance(workload, str) else workload
    candidates: Sequence[TrialRecord] = ranked(result.trials, s.direction)[:n_top]
    if not candidates:
        raise StudyError(f"study {result.study_name!r} has no completed trial to confirm yet")
    dev = check_device(device)
    configs = [Config(**t.config) for t in candidates]
    say = notice or warn
    outcomes: list[list[Outcome]] = []
    batched = len(configs) > 1 and why_not_batchable(w.build_model()) is None
    for r in range(1, n_seeds + 1):
        study_seed = s.seed + r
        inits = [init_seed(study_seed, t.number) for t in candidates]
        if batched:
            try:
                outcomes.append(train_members(w, configs, init_seeds=inits, data_seed=data_seed(study_seed), device=dev))
                continue
            except NotBatchable as e:
                say(f"training the candidates one at a time: {e}")
                batched = False
        outcomes.append([train_trial(w, c, init_seed=i, data_seed=data_seed(study_seed), device=dev)
                         for c, i in zip(configs, inits)])
    retrained = []
    for j, t in enumerate(candidates):
        runs = [seed_runs[j] for seed_runs in outcomes]
        retrained.append(Retrained(t.number, t.value, tuple(o.value for o in runs),
                                   tuple(_last(o, s.metric) for o in runs)))
    retrained.sort(key=lambda x: (x.diverged, oriented(x.mean, s.direction), x.number))
    found = Confirmation(result.study_name, s.metric, s.direction, n_seeds, tuple(retrained), result.best.number)
    result.study.set_user_attr(CONFIRM_ATTR, json.dumps(found.to_json()))
    return found


def _last(outcome: Outcome, metric: str) -> float:
    if outcome.status != "complete":
        return math.nan
    values = outcome.curve.get(metric) or []
    return float(values[-1]) if values else math.nan


