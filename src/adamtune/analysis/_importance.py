"""Which hyperparameters mattered: Optuna's fANOVA importance over the completed trials, and the
diverged ones counted at the worst completed value (whether a trial diverges is part of what a
hyperparameter decides: an lr that made half the trials diverge mattered)."""

from __future__ import annotations

import dataclasses
import warnings

import optuna

from adamtune.analysis._select import Study, unpack
from adamtune.quiet import quiet_optuna
from adamtune.results import StudySettings
from adamtune.trials import TrialState, completed

# fANOVA fits a random forest to the completed trials; with fewer it fits noise.
MIN_COMPLETED = 5
SEED = 0


@dataclasses.dataclass(frozen=True)
class Importance:
    """How much of the objective's variation each tuned hyperparameter explains.

    Attributes:
        values: ``(name, share)`` under adamtune's names (``beta1``, not ``1-beta1``), the
            shares summing to 1, largest first; empty when not computed.
        method: the evaluator used.
        completed: how many completed trials it saw.
        reason: why it was not computed (None when it was).
        diverged: how many diverged trials it saw, each at the worst completed value.
    """

    values: tuple[tuple[str, float], ...]
    method: str
    completed: int
    reason: str | None = None
    diverged: int = 0


def importance(study: Study, settings: StudySettings | None = None) -> Importance:
    """Parameter importance by fANOVA (``optuna.importance.FanovaImportanceEvaluator(seed=0)``).

    Completed trials count with their values, diverged ones with the worst completed value;
    pruned and failed ones not at all. Gives a reason instead of numbers with fewer than 2 tuned
    dimensions or fewer than ``MIN_COMPLETED`` completed trials.
    """
    trials, settings = unpack(study, settings)
    method = "fANOVA (Optuna, seed 0)"
    done = completed(trials)
    dims = settings.space.dimensions
    if len(dims) < 2:
        return Importance((), method, len(done), "only one hyperparameter was tuned")
    done = [t for t in done if all(d.name in t.params for d in dims)]
    if len(done) < MIN_COMPLETED:
        return Importance((), method, len(done), f"needs at least {MIN_COMPLETED} completed trials, the study has {len(done)}")
    diverged = [t for t in trials if t.state == TrialState.DIVERGED and all(d.name in t.params for d in dims)]
    if len({t.value for t in done}) < 2 and not diverged:
        return Importance((), method, len(done), "every completed trial has the same objective")
    worst = (max if settings.direction == "minimize" else min)(t.value for t in done)
    # A study of our own, in memory: only the trials that count, under Optuna's parameter names.
    with quiet_optuna():  # no "A new study created in memory" line
        study_ = optuna.create_study(direction=settings.direction)
    dists = {d.optuna_name: d.distribution() for d in dims}
    for t, value in [(t, t.value) for t in done] + [(t, worst) for t in diverged]:
        params = {}
        for d in dims:
            x = 1 - t.params[d.name] if d.scale == "log1m" else t.params[d.name]
            dist = dists[d.optuna_name]
            params[d.optuna_name] = min(max(x, dist.low), dist.high)  # 1 - (1 - x) may round past a bound
        study_.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = optuna.importance.get_param_importances(
            study_, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=SEED),
        )
    back = {d.optuna_name: d.name for d in dims}
    values = sorted(((back[k], float(v)) for k, v in raw.items()), key=lambda kv: (-kv[1], kv[0]))
    return Importance(tuple(values), method, len(done), diverged=len(diverged))
