"""The one place that composes an Optuna study, its sampler and pruner, and an engine.

A study remembers its settings (workload, optimizer, task, search space, budget, seed) in
its storage, so ``tune(study=..., storage=...)`` alone continues it, and ``show``/``report``
can describe it without being told anything.
"""

from __future__ import annotations

import dataclasses
import json
import math
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Union

import optuna
import torch

from adamtune import guide
from adamtune.config import Config
from adamtune.engine import Outcome, better, data_seed, infeasible, init_seed, train_trial
from adamtune.engine.monitor import summarize_norms
from adamtune.errors import SpaceError, StudyError
from adamtune.space import SearchSpace, preset, with_overrides
from adamtune.storage import DEFAULT_STORAGE, check_url, is_new_file, open_storage, study_names
from adamtune.trials import (
    ATTR_CONFIG, ATTR_CURVE, ATTR_DIVERGED_AT, ATTR_GRAD_NORMS, ATTR_STATE, ATTR_STEPS, ATTR_TRACEBACK,
    TrialRecord, TrialState, record_from_optuna,
)
from adamtune.workloads import Workload, describe, load_workload

SAMPLERS: tuple[str, ...] = ("quasi-random", "tpe", "gp", "random")
PRUNERS: tuple[str, ...] = ("asha", "median", "none")
SETTINGS_ATTR = "adamtune"
DEFAULT_BUDGET = 16
TrialPruned = optuna.TrialPruned
Objective = Callable[[Config, "Trial"], float]


@dataclasses.dataclass(frozen=True)
class StudySettings:
    """What a study was created with; stored as the study attribute ``adamtune``."""

    workload: str | None  # a reference that reloads it; None for objective mode or a Python object
    workload_name: str
    optimizer: str
    task: str
    space: SearchSpace
    budget: int
    seed: int
    sampler: str
    pruner: str
    metric: str
    direction: str
    workload_info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["space"] = self.space.to_dict()
        d["workload_info"] = dict(self.workload_info)
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> StudySettings:
        d = json.loads(text)
        d["space"] = SearchSpace.from_dict(d["space"])
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class TuneResult:
    """A study read back from storage: its settings, every trial, and the best one."""

    study_name: str
    settings: StudySettings
    trials: tuple[TrialRecord, ...]
    best: TrialRecord | None
    study: optuna.Study

    @property
    def best_config(self) -> Config | None:
        return Config(**self.best.config) if self.best is not None and self.best.config else None

    @property
    def best_value(self) -> float | None:
        return self.best.value if self.best is not None else None

    def count(self, state: TrialState) -> int:
        return sum(1 for t in self.trials if t.state == state)

    @property
    def finished(self) -> int:
        return sum(1 for t in self.trials if t.finished)


class Trial:
    """What an objective function receives in objective mode (the user's own training loop).

    Call ``report(step, value)`` at each evaluation (extra metrics as keywords, e.g.
    ``train_loss=...``), ``should_prune()`` to ask the pruner -- then ``raise
    adamtune.TrialPruned()`` -- and optionally ``log_grad_norm(norm)`` every step so the report
    can recommend a clipping threshold (``adamtune.clip_gradients`` returns that norm).
    """

    def __init__(self, trial: optuna.trial.Trial, config: Config, metric: str) -> None:
        self._trial = trial
        self.config = config
        self._metric = metric
        self._curve: dict[str, list] = {"step": []}
        self._norms: list[float] = []
        self.last_step = 0
        self.saw_nonfinite = False

    @property
    def number(self) -> int:
        return self._trial.number

    def report(self, step: int, value: float, **metrics: float) -> None:
        value = float(value)
        self.last_step = int(step)
        self._curve["step"].append(int(step))
        n = len(self._curve["step"])
        for name, v in {self._metric: value, **metrics}.items():
            v = float(v)
            col = self._curve.setdefault(name, [float("nan")] * (n - 1))
            col.append(v if math.isfinite(v) else float("nan"))
        for col in self._curve.values():
            col.extend([float("nan")] * (n - len(col)))
        if not math.isfinite(value):
            self.saw_nonfinite = True
            return
        self._trial.report(value, int(step))

    def should_prune(self) -> bool:
        return self._trial.should_prune()

    def log_grad_norm(self, norm: float) -> None:
        self._norms.append(float(norm))

    def _outcome(self, value: float, direction: str) -> Outcome:
        norms = summarize_norms(torch.tensor(self._norms, dtype=torch.float64), self.config.max_grad_norm) if self._norms else None
        if self.saw_nonfinite or not math.isfinite(value):
            return Outcome("diverged", infeasible(direction), self.last_step, self._curve, norms, self.last_step)
        return Outcome("complete", value, self.last_step, self._curve, norms)


class _KnownSpaceQMC(optuna.samplers.QMCSampler):
    """Optuna's QMC sampler told the search space up front.

    The stock sampler infers the space from the first trial and samples that trial with its
    independent (random) sampler; adamtune knows the space, so every trial -- the first one
    too -- is a point of the scrambled Sobol sequence.
    """

    def __init__(self, search_space: dict[str, optuna.distributions.BaseDistribution], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._known_space = dict(search_space)

    def infer_relative_search_space(self, study, trial):  # noqa: D102 - Optuna's contract
        return dict(self._known_space)


def make_sampler(name: str, seed: int, space: SearchSpace, n_existing: int = 0) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for ``name``; seeded so a fresh study is reproducible.

    Stateless samplers are seeded with ``seed + n_existing`` so that continuing a study does
    not replay the points it already tried; the QMC sampler keeps its place in the sequence
    through the study itself.
    """
    if name == "quasi-random":
        return _KnownSpaceQMC(space.distributions(), qmc_type="sobol", scramble=True, seed=seed)
    s = seed + n_existing
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=s, n_startup_trials=min(10, max(4, len(space.tuned) * 3)))
    if name == "gp":
        return optuna.samplers.GPSampler(seed=s, n_startup_trials=min(10, max(4, len(space.tuned) * 3)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=s)
    raise StudyError(f"sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")


def make_pruner(name: str, workload: Workload | None) -> optuna.pruners.BasePruner:
    """ASHA (successive halving), median, or no pruning, fitted to the workload's evaluations."""
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "asha":
        if workload is None:
            return optuna.pruners.SuccessiveHalvingPruner(reduction_factor=3)
        # First rung after about a quarter of training, on an evaluation step; rungs x3 after.
        # Earlier rungs judge slow starters (small lr, large beta) before they can show anything.
        e = workload.eval_every
        first = max(e, math.ceil(workload.steps / 4 / e) * e)
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=3)
    if name == "median":
        warm = workload.steps // 4 if workload is not None else 0
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warm)
    raise StudyError(f"pruner must be one of {', '.join(PRUNERS)}, got {name!r}")


def read_settings(study: optuna.Study) -> StudySettings:
    text = study.user_attrs.get(SETTINGS_ATTR)
    if text is None:
        raise StudyError(f"study {study.study_name!r} was not created by adamtune (it has no adamtune settings)")
    return StudySettings.from_json(text)


def _load_existing(storage, name: str) -> optuna.Study | None:
    if name not in study_names(storage):
        return None
    return optuna.load_study(study_name=name, storage=storage)


def result_of(study: optuna.Study, settings: StudySettings | None = None) -> TuneResult:
    """Read every trial of ``study`` into records and pick the best completed one."""
    settings = settings or read_settings(study)
    records = tuple(
        record_from_optuna(t, settings.space.params_from_optuna(t.params)) for t in study.get_trials(deepcopy=False)
    )
    best = None
    for r in records:
        if r.state == TrialState.COMPLETE and r.value is not None:
            if best is None or better(r.value, best.value, settings.direction):
                best = r
    return TuneResult(study.study_name, settings, records, best, study)


def load(study: str | None = None, storage: str | None = None) -> TuneResult:
    """Read a study back. ``study`` may be omitted when the storage holds exactly one.

    Raises:
        StorageError: the storage cannot be opened or does not exist.
        StudyError: no such study, or several and none named.
    """
    store = open_storage(storage or DEFAULT_STORAGE, must_exist=True)
    names = study_names(store)
    if study is None:
        if len(names) != 1:
            listing = ", ".join(names) if names else "none"
            raise StudyError(f"name a study with --study; this storage holds {len(names)}: {listing}")
        study = names[0]
    existing = _load_existing(store, study)
    if existing is None:
        raise StudyError(f"no study {study!r} in this storage; it holds: {', '.join(names) or 'none'}")
    return result_of(existing)


def list_studies(storage: str | None = None) -> list[TuneResult]:
    store = open_storage(storage or DEFAULT_STORAGE, must_exist=True)
    out = []
    for name in study_names(store):
        s = optuna.load_study(study_name=name, storage=store)
        if SETTINGS_ATTR in s.user_attrs:
            out.append(result_of(s))
    return out


def _pick(name: str, explicit: Any, stored: Any, default: Any, study: str) -> Any:
    if explicit is not None and stored is not None and explicit != stored:
        raise StudyError(
            f"study {study!r} was created with {name} {stored!r}, not {explicit!r}; "
            "use a new --study name to change it"
        )
    for v in (explicit, stored, default):
        if v is not None:
            return v
    return None


def tune(
    workload_or_objective: Union[str, Workload, Objective, None] = None,
    *,
    optimizer: str | None = None,
    task: str | None = None,
    budget: int | None = None,
    space: Union[SearchSpace, Iterable[str], None] = None,
    sampler: str | None = None,
    pruner: str | None = None,
    storage: str | None = None,
    study: str | None = None,
    seed: int | None = None,
    direction: str | None = None,
    device: str | None = None,
    on_trial: Callable[[TrialRecord, TuneResult | None], None] | None = None,
    on_start: Callable[[StudySettings, int], None] | None = None,
    max_consecutive_failures: int = 3,
) -> TuneResult:
    """Tune an Adam-family optimizer and keep every trial in ``storage``.

    Managed mode: pass a Workload or a reference (``"digits-mlp"``, ``"file.py:ATTR"``,
    ``"module:ATTR"``); adamtune trains each trial. Objective mode: pass
    ``objective(config, trial) -> float``; it trains and calls ``trial.report(step, value)``.

    Args:
        optimizer: ``adamw`` (default), ``adam`` or ``adadelta``.
        task: preset windows: generic, cnn, transformer, llm (default: the workload's).
        budget: total trials the study should have (default 16); re-running continues.
        space: a SearchSpace, or ``--set`` strings applied to the preset
            (``"lr=1e-4:1e-2"``, ``"beta1=0.9"``).
        sampler: ``quasi-random`` (default; scrambled Sobol), ``tpe``, ``gp``, ``random``.
        pruner: ``asha`` (default), ``median``, ``none``.
        storage: an Optuna storage URL (default ``sqlite:///adamtune.db``).
        study: the study name (default: the workload's name, or the objective's).
        seed: fixes the sampler, every trial's initial weights and the minibatch order.
        direction: objective mode only: ``minimize`` (default) or ``maximize``.
        on_trial: called with each finished trial's record and the study so far.
        on_start: called once with the settings and the number of trials to run.

    Raises:
        AdamtuneError: any bad input, with a message naming what must hold.
    """
    url = storage or DEFAULT_STORAGE
    check_url(url)
    # A new SQLite file is created only once every argument has been checked.
    store = None if is_new_file(url) else open_storage(url)
    objective_fn: Objective | None = None
    workload: Workload | None = None
    workload_ref: str | None = None
    if isinstance(workload_or_objective, (str, Workload)):
        workload = load_workload(workload_or_objective)
        workload_ref = workload_or_objective if isinstance(workload_or_objective, str) else None
    elif workload_or_objective is not None:
        if not callable(workload_or_objective):
            raise StudyError("tune() needs a Workload, a workload reference, or an objective(config, trial) function")
        objective_fn = workload_or_objective

    name = study
    if name is None:
        if workload is not None:
            name = workload.name
        elif objective_fn is not None:
            name = getattr(objective_fn, "__name__", "objective")
        else:
            name = "digits-mlp"
    existing = _load_existing(store, name) if store is not None else None
    stored = read_settings(existing) if existing is not None else None

    if workload is None and objective_fn is None:
        ref = stored.workload if stored is not None else "digits-mlp"
        if stored is not None and ref is None:
            raise StudyError(
                f"study {name!r} was created from Python (objective mode or a Workload object); continue it from Python"
            )
        workload, workload_ref = load_workload(ref), ref
    if stored is not None and workload_ref is not None and stored.workload not in (None, workload_ref):
        raise StudyError(f"study {name!r} tunes workload {stored.workload!r}, not {workload_ref!r}; use a new --study name")

    opt = _pick("optimizer", optimizer, stored and stored.optimizer, "adamw", name)
    the_task = _pick("task", task, stored and stored.task, workload.task if workload else "generic", name)
    n_budget = budget if budget is not None else (stored.budget if stored is not None else DEFAULT_BUDGET)
    if isinstance(n_budget, bool) or not isinstance(n_budget, int) or n_budget < 1:
        raise SpaceError(f"budget must be a whole number of trials >= 1, got {n_budget!r}")
    the_seed = _pick("seed", seed, stored and stored.seed, 0, name)
    if isinstance(the_seed, bool) or not isinstance(the_seed, int) or the_seed < 0:
        raise StudyError(f"seed must be an integer >= 0, got {the_seed!r}")
    the_sampler = sampler or (stored.sampler if stored is not None else "quasi-random")
    the_pruner = pruner or (stored.pruner if stored is not None else "asha")
    if the_sampler not in SAMPLERS:
        raise StudyError(f"sampler must be one of {', '.join(SAMPLERS)}, got {the_sampler!r}")
    if the_pruner not in PRUNERS:
        raise StudyError(f"pruner must be one of {', '.join(PRUNERS)}, got {the_pruner!r}")

    if isinstance(space, SearchSpace):
        the_space = space
        if the_space.optimizer != opt:
            raise SpaceError(f"the search space is for {the_space.optimizer}, but the optimizer is {opt}")
    elif stored is not None:
        the_space = stored.space
        if space is not None and with_overrides(the_space, list(space)) != the_space:
            raise StudyError(f"study {name!r} has its own search space ({the_space.describe()}); use a new --study name to change it")
    else:
        the_space = with_overrides(preset(opt, the_task, n_budget), list(space or ()))
    if stored is not None and isinstance(space, SearchSpace) and space != stored.space:
        raise StudyError(f"study {name!r} has its own search space ({stored.space.describe()}); use a new --study name to change it")

    if workload is not None:
        metric, the_direction = workload.objective, workload.direction
        if direction is not None and direction != the_direction:
            raise StudyError(f"direction comes from the workload ({the_direction}); set it there")
    else:
        metric = "value"
        the_direction = direction or (stored.direction if stored is not None else "minimize")
        if the_direction not in ("minimize", "maximize"):
            raise StudyError(f"direction must be minimize or maximize, got {the_direction!r}")

    settings = StudySettings(
        workload=workload_ref if stored is None else stored.workload,
        workload_name=workload.name if workload else name,
        optimizer=opt, task=the_task, space=the_space, budget=max(n_budget, stored.budget if stored else 0) if budget is None else n_budget,
        seed=the_seed, sampler=the_sampler, pruner=the_pruner, metric=metric, direction=the_direction,
        workload_info=describe(workload) if workload is not None else {},
    )
    n_existing = len(existing.trials) if existing is not None else 0
    if store is None:
        store = open_storage(url)
    the_study = optuna.create_study(
        study_name=name, storage=store, direction=the_direction, load_if_exists=True,
        sampler=make_sampler(the_sampler, the_seed, the_space, n_existing),
        pruner=make_pruner(the_pruner, workload),
    )
    the_study.set_user_attr(SETTINGS_ATTR, settings.to_json())
    if existing is None:
        the_study.set_metric_names([metric])

    done = sum(1 for t in the_study.get_trials(deepcopy=False) if t.state.is_finished())
    remaining = max(0, settings.budget - done)
    if on_start is not None:
        on_start(settings, remaining)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    failures = 0
    for _ in range(remaining):
        trial = the_study.ask()
        outcome = None
        try:
            config = the_space.suggest(trial)
            trial.set_user_attr(ATTR_CONFIG, dataclasses.asdict(config))
            if workload is not None:
                outcome = train_trial(
                    workload, config, init_seed=init_seed(the_seed, trial.number),
                    data_seed=data_seed(the_seed), trial=trial, device=dev,
                )
            else:
                user_trial = Trial(trial, config, metric)
                try:
                    value = objective_fn(config, user_trial)
                    outcome = user_trial._outcome(float(value), the_direction)
                except optuna.TrialPruned:
                    outcome = dataclasses.replace(user_trial._outcome(0.0, the_direction), status="pruned")
        except KeyboardInterrupt:
            trial.set_user_attr(ATTR_TRACEBACK, "interrupted by the user (KeyboardInterrupt)")
            the_study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        except Exception:
            trial.set_user_attr(ATTR_TRACEBACK, traceback.format_exc())
            the_study.tell(trial, state=optuna.trial.TrialState.FAIL)
            failures += 1
        else:
            _tell(the_study, trial, outcome)
            failures = 0
        if on_trial is not None:
            ft = the_study._storage.get_trial(trial._trial_id)
            so_far = result_of(the_study, settings)
            on_trial(record_from_optuna(ft, the_space.params_from_optuna(ft.params)), so_far)
        if failures >= max_consecutive_failures:
            last = the_study.trials[-1].user_attrs.get(ATTR_TRACEBACK, "").strip().splitlines()
            raise StudyError(
                f"{failures} trials in a row failed; stopping. Last error: {last[-1] if last else 'unknown'} "
                f"(full tracebacks: adamtune show --study {name})"
            )
    return result_of(the_study, settings)


def _tell(study: optuna.Study, trial: optuna.trial.Trial, outcome: Outcome) -> None:
    trial.set_user_attr(ATTR_STEPS, outcome.steps)
    trial.set_user_attr(ATTR_CURVE, outcome.curve)
    if outcome.grad_norms is not None:
        trial.set_user_attr(ATTR_GRAD_NORMS, outcome.grad_norms.to_dict())
    if outcome.status == "pruned":
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    elif outcome.status == "diverged":
        trial.set_user_attr(ATTR_STATE, TrialState.DIVERGED.value)
        if outcome.diverged_at is not None:
            trial.set_user_attr(ATTR_DIVERGED_AT, outcome.diverged_at)
        study.tell(trial, outcome.value)
    else:
        study.tell(trial, outcome.value)


def tuned_description(settings: StudySettings) -> str:
    """``"tuning lr, weight_decay, beta1 — budget 16"``, as the CLI prints it."""
    tuned = ", ".join(settings.space.tuned) or "nothing (every value fixed)"
    rule = guide.tuned_for_budget(settings.optimizer, settings.budget)
    note = "" if tuple(settings.space.tuned) == rule else " (set by hand)"
    return f"tuning {tuned} — budget {settings.budget}{note}"
