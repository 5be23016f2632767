"""A study as stored: the settings adamtune keeps with it, and its trials read back.

Reading needs neither torch nor an engine, so the commands that only read a study (``adamtune
show``, ``best``, ``report``) start without importing them; ``study.py`` composes the studies
that train.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import optuna

from adamtune import guide
from adamtune.commands import command_line
from adamtune.config import TORCH_DEFAULTS, Config, python_snippet
from adamtune.errors import AdamtuneError, StudyError
from adamtune.retries import first_trials
from adamtune.space import SearchSpace
from adamtune.storage import open_storage, settle, sql_backend, storage_url, study_names
from adamtune.trials import TrialRecord, TrialState, malformed_reason, ranked, record_from_optuna

SETTINGS_ATTR = "adamtune"
# StudySettings.space_budget, kept in an attribute of its own: adamtune versions that predate
# it read the settings attribute with exactly the fields they know.
SPACE_BUDGET_ATTR = "adamtune_space_budget"
MAX_BUDGET = 1_000_000  # the most trials a study may have
# An objective-mode study's function, "FILE:QUALNAME": two scripts' functions both named
# `objective` would share one study by their default name.
OBJECTIVE_ATTR = "adamtune_objective"
# What a new study gets when not told (``open_study``); the next-study commands the analysis
# prints leave out what equals these, so the two read one value.
DEFAULT_SEED = 0
DEFAULT_SAMPLER = "quasi-random"
DEFAULT_PRUNER = "asha"


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
    # The budget when the study began, whose rule chose the preset space (None: a study
    # stored before this was kept); a larger budget later keeps the space.
    space_budget: int | None = None

    def to_json(self) -> str:
        """The settings as stored in the study attribute ``adamtune`` (without ``space_budget``,
        which :data:`SPACE_BUDGET_ATTR` holds)."""
        d = dataclasses.asdict(self)
        del d["space_budget"]
        d["space"] = self.space.to_dict()
        d["workload_info"] = dict(self.workload_info)
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> StudySettings:
        """Read :meth:`to_json`'s text; fields a later adamtune added are left out.

        Raises:
            ValueError: ``text`` is not what :meth:`to_json` writes; the message says what is wrong.
        """
        if not isinstance(text, str):
            raise ValueError(f"a JSON text must be stored, got {type(text).__name__}")
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ValueError(f"not JSON: {e}") from None
        if not isinstance(data, dict):
            raise ValueError(f"a JSON object must be stored, got {type(data).__name__}")
        d = {k: v for k, v in data.items() if k in _STORED}
        missing = [k for k in _STORED if k not in d and k != "workload_info"]
        if missing:
            raise ValueError(f"missing: {', '.join(missing)}")
        for k, v in d.items():
            kinds, what = _STORED[k]
            if isinstance(v, bool) and bool not in kinds or not isinstance(v, kinds):
                raise ValueError(f"{k} must be {what}, got {v!r}")
        try:
            d["space"] = SearchSpace.from_dict(d["space"])
        except (AdamtuneError, TypeError, KeyError, ValueError, AttributeError) as e:
            raise ValueError(f"space: {malformed_reason(e)}") from None
        if d["optimizer"] != d["space"].optimizer:
            raise ValueError(f"optimizer {d['optimizer']!r} is not the search space's {d['space'].optimizer!r}")
        if d["task"] not in guide.TASKS:
            raise ValueError(f"task must be one of {', '.join(guide.TASKS)}, got {d['task']!r}")
        if d["direction"] not in ("minimize", "maximize"):
            raise ValueError(f"direction must be minimize or maximize, got {d['direction']!r}")
        if d["budget"] < 1 or d["seed"] < 0:
            raise ValueError(f"budget must be >= 1 and seed >= 0, got {d['budget']} and {d['seed']}")
        return cls(**d)


# What from_json reads: each stored field's JSON types, and what they are in words.
_STORED: dict[str, tuple[tuple[type, ...], str]] = {
    "workload": ((str, type(None)), "a string or null"), "workload_name": ((str,), "a string"),
    "optimizer": ((str,), "a string"), "task": ((str,), "a string"), "space": ((dict,), "a JSON object"),
    "budget": ((int,), "a whole number"), "seed": ((int,), "a whole number"), "sampler": ((str,), "a string"),
    "pruner": ((str,), "a string"), "metric": ((str,), "a string"), "direction": ((str,), "a string"),
    "workload_info": ((dict,), "a JSON object"),
}

_CHANGED = "the database was changed outside adamtune"


@dataclasses.dataclass(frozen=True)
class TuneResult:
    """A study read back from storage: its settings, every trial, and the best one.

    Attributes:
        study_name: the study's name in its storage.
        settings: what the study was made with (optimizer, task, search space, budget, seed,
            sampler, pruner, metric, direction, workload).
        trials: every trial, by number, in every state (complete, pruned, diverged, failed, running).
        best: the best *completed* trial by the study's metric and direction (a pruned or
            diverged trial is never best), or None.
        study: the Optuna study, for what adamtune does not wrap.
        attrs: the study's user attributes as they were read with its trials (what ``adamtune
            confirm`` kept, among them: ``adamtune.confirmed.stored`` reads it).
    """

    study_name: str
    settings: StudySettings
    trials: tuple[TrialRecord, ...]
    best: TrialRecord | None
    study: optuna.Study
    attrs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def best_config(self) -> Config | None:
        """The best trial's configuration (every hyperparameter, tuned or fixed), or None."""
        return Config(**self.best.config) if self.best is not None and self.best.config else None

    @property
    def best_value(self) -> float | None:
        """The best trial's objective value: its best evaluation (managed workloads) or what the
        objective function returned; None without a completed trial."""
        return self.best.value if self.best is not None else None

    def paste_code(self, model_name: str = "model") -> str | None:
        """The best configuration as ready-to-paste PyTorch code (what ``adamtune best`` prints),
        with the scheduler's ``total_steps`` filled in: a workload's steps, or (objective mode) the
        last step the best trial reported, which the code says; None without a completed trial."""
        cfg = self.best_config
        if cfg is None:
            return None
        steps = self.settings.workload_info.get("steps")
        if isinstance(steps, int):  # a workload's: every trial trained to the end trains these
            return python_snippet(cfg, model_name, total_steps=steps)
        # An objective function's own loop: adamtune knows only the steps the best trial reported.
        return python_snippet(cfg, model_name, total_steps=self.best.steps or None, steps_reported=True)

    @property
    def cut_short(self) -> int:
        """Failed trials cut short (Ctrl-C, SIGTERM, a lost worker): not counted in the budget."""
        return sum(1 for t in self.trials if t.interrupted and t.state == TrialState.FAILED)

    @property
    def reruns(self) -> dict[int, int]:
        """``{number: number of the trial it ran again}`` of the trials that ran again a trial
        cut short (finished ones; a rerun still waiting or running is not in it)."""
        first = first_trials((t.number, t.retry_of) for t in self.trials)
        return {t.number: first[t.number] for t in self.trials if t.number in first and t.finished}

    def count(self, state: TrialState) -> int:
        """How many trials are in ``state``."""
        return sum(1 for t in self.trials if t.state == state)

    @property
    def finished(self) -> int:
        """How many trials have ended (complete, pruned, diverged or failed)."""
        return sum(1 for t in self.trials if t.finished)


def read_settings(study: optuna.Study) -> StudySettings:
    text = study.user_attrs.get(SETTINGS_ATTR)
    if text is None:
        raise StudyError(f"study {study.study_name!r} was not created by adamtune (it has no adamtune settings)")
    try:
        settings = StudySettings.from_json(text)
    except ValueError as e:
        if "eps must be > 0, got 0.0" in str(e):  # written by an adamtune that took eps=0, not changed by hand
            raise StudyError(f"study {study.study_name!r} was made with eps=0, which adamtune no longer reads or "
                             "trains (a coordinate whose gradient is exactly 0 steps by 0/0 = NaN, so its trials "
                             "diverged): tune a new --study with eps > 0") from None
        raise StudyError(f"study {study.study_name!r} has malformed adamtune settings ({e}): {_CHANGED}") from None
    began = study.user_attrs.get(SPACE_BUDGET_ATTR)
    if began is not None and (isinstance(began, bool) or not isinstance(began, int) or began < 1):
        raise StudyError(f"study {study.study_name!r} has a malformed {SPACE_BUDGET_ATTR!r} attribute (a whole number "
                         f">= 1 must be stored, got {began!r}): {_CHANGED}")
    return settings if began is None else dataclasses.replace(settings, space_budget=began)


def stored_spaces(study: optuna.Study) -> dict[str, SearchSpace | None]:
    """The search space of every study in ``study``'s storage, by name (None: a study adamtune
    did not make, or whose settings are malformed). One read of the studies, none of the trials.
    Empty when the storage cannot be read again (an in-memory one, gone with its last connection)."""
    import sqlalchemy.exc

    out: dict[str, SearchSpace | None] = {}
    try:
        studies = study._storage.get_all_studies()
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):
        return out
    backend = sql_backend(study)
    if backend is not None:
        settle(backend)  # as tune() left it: no connection open, the file whole without -wal/-shm
    for s in studies:
        text = s.user_attrs.get(SETTINGS_ATTR)
        try:
            out[s.study_name] = StudySettings.from_json(text).space if isinstance(text, str) else None
        except ValueError:
            out[s.study_name] = None
    return out


def load_existing(storage, name: str) -> optuna.Study | None:
    if name not in study_names(storage):
        return None
    return optuna.load_study(study_name=name, storage=storage)


def result_of(study: optuna.Study, settings: StudySettings | None = None) -> TuneResult:
    """Read every trial of ``study`` into records and pick the best completed one."""
    settings = settings or read_settings(study)
    try:
        records = tuple(
            record_from_optuna(t, settings.space.params_from_optuna(t.params), settings.metric)
            for t in study.get_trials(deepcopy=False)
        )
    except StudyError as e:  # names the trial and the attribute
        raise StudyError(f"study {study.study_name!r}, {e}: {_CHANGED}") from None
    order = ranked(records, settings.direction)
    return TuneResult(study.study_name, settings, records, order[0] if order else None, study, study.user_attrs)


def load(study: str | None = None, storage: str | os.PathLike | None = None) -> TuneResult:
    """Read a study back. ``study`` may be omitted when the storage holds exactly one.

    Raises:
        StorageError: the storage cannot be opened or does not exist.
        StudyError: no such study, or several and none named.
    """
    url = storage_url(storage)
    store = open_storage(url, must_exist=True)
    names = study_names(store)
    if not names:
        missing = ("this storage holds no study yet" if study is None
                   else f"no study {study!r} in this storage, which holds none yet")
        raise StudyError(f"{missing}; `{command_line('tune', storage=url)}` makes one")
    if study is None:
        if len(names) != 1:
            raise StudyError(f"name a study with --study; this storage holds {len(names)}: {', '.join(names)}")
        study = names[0]
    existing = load_existing(store, study)
    if existing is None:
        raise StudyError(f"no study {study!r} in this storage; it holds: {', '.join(names)}")
    return result_of(existing)


def list_studies(storage: str | os.PathLike | None = None, *, malformed: dict[str, StudyError] | None = None,
                 others: list[str] | None = None) -> list[TuneResult]:
    """Every study adamtune made in ``storage``, read back (other Optuna studies are left out).

    Args:
        malformed: where given, a study whose stored settings or trials are malformed is left
            out of the list and its error put here under its name, instead of raised.
        others: where given, the names of the Optuna studies not made by adamtune are put here.

    Raises:
        StorageError: the storage cannot be opened or does not exist.
        StudyError: a study's stored settings or trials are malformed (without ``malformed``).
    """
    store = open_storage(storage_url(storage), must_exist=True)
    out = []
    for name in study_names(store):
        s = optuna.load_study(study_name=name, storage=store)
        if SETTINGS_ATTR in s.user_attrs:
            try:
                out.append(result_of(s))
            except StudyError as e:
                if malformed is None:
                    raise
                malformed[name] = e
        elif others is not None:
            others.append(name)
    return out


def fixed_description(settings: StudySettings) -> str | None:
    """``"fixed: beta2=0.95 (the llm preset's; PyTorch's default is 0.999)"``: the values the
    study fixes, as the CLI prints them, each of the task's own values said to be one; None when
    nothing is fixed."""
    if not settings.space.fixed:
        return None
    task_values = guide.untuned_values(settings.optimizer, settings.task)
    parts = []
    for name, value in settings.space.fixed:
        text = f"{name}={value}"
        default = TORCH_DEFAULTS[settings.optimizer].get(name)
        if name in task_values and task_values[name] == value and default is not None:
            text += f" (the {settings.task} preset's; PyTorch's default is {default:g})"
        parts.append(text)
    return "fixed: " + ", ".join(parts)


def tuned_description(settings: StudySettings) -> str:
    """``"tuning lr, weight_decay, beta1 — budget 16"``, as the CLI prints it."""
    tuned = ", ".join(settings.space.tuned) or "nothing (every value fixed)"
    began = settings.space_budget or settings.budget
    note = ""
    if tuple(settings.space.tuned) != guide.tuned_for_budget(settings.optimizer, began):
        note = " (set by hand)"
    elif began != settings.budget:
        note = f" (the space chosen for budget {began} when the study began)"
    return f"tuning {tuned} — budget {settings.budget}{note}"
