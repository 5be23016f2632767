"""The one place that composes an Optuna study, its sampler and pruner, and an engine.

A study remembers its settings (workload, optimizer, task, search space, budget, seed) in
its storage, so ``tune(study=..., storage=...)`` alone continues it, and ``show``/``report``
can describe it without being told anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
import os
import reprlib
import signal
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Union

import numpy
import optuna
import torch
from torch import nn

from adamtune import guide
from adamtune import storage as storage_module
from adamtune.commands import command_line
from adamtune.config import Config
from adamtune.engine import Outcome, data_seed, first_step, infeasible, init_seed, train_trial
from adamtune.engine.batched import NotBatchable, member_bytes, members_per_chunk, train_members, why_not_batchable
from adamtune.engine.monitor import summarize_norms
from adamtune.errors import (
    OutputClosed, SpaceError, StudyError, Terminated, WorkloadError, first_line, integral, name_problem,
    whole_number,
)
from adamtune.heartbeat import GRACE_S, Heartbeat, end_lost, lost_text, this_process
from adamtune.quiet import quiet_optuna
from adamtune.results import (
    DEFAULT_PRUNER, DEFAULT_SAMPLER, DEFAULT_SEED, MAX_BUDGET, OBJECTIVE_ATTR, SETTINGS_ATTR, SPACE_BUDGET_ATTR,
    StudySettings, TuneResult, load_existing, read_settings, result_of,
)
from adamtune.retries import duplicates, point_of, retry_cut_short, retry_numbers
from adamtune.space import SearchSpace, check_optimizer, check_task, preset, with_overrides
from adamtune.storage import (
    HeldWrites, ask_many, check_url, fail_if_running, is_new_file, open_storage, settle, sql_backend, sqlite_path,
    storage_url, study_names, tell_many, write_kept, writes_kept,
)
from adamtune.trials import (
    ATTR_CONFIG, ATTR_CURVE, ATTR_ENGINE, ATTR_INTERRUPTED, ATTR_DIVERGED_AT, ATTR_GRAD_NORMS, ATTR_RETRY_OF, ATTR_STATE,
    ATTR_PROCESS, ATTR_STEPS, ATTR_TRACEBACK, ATTR_WORKER,
    Curve, TrialRecord, TrialState, last_line, ranked, state_of, this_worker, trials_text,
)
from adamtune.usercode import warn, where
from adamtune.workloads import Workload, describe, load_workload
from adamtune.workloads._base import FactoryError

PRUNERS: tuple[str, ...] = ("asha", "median", "none")
DEFAULT_BUDGET = 16


class TrialPruned(optuna.TrialPruned):
    """Raise it in an objective function when ``trial.should_prune()`` says so: the trial ends as
    pruned, with the evaluations it reported::

        trial.report(step, val_loss)  # adamtune's order: step first
        if trial.should_prune():
            raise adamtune.TrialPruned()

    Optuna's own ``optuna.TrialPruned`` is taken the same way."""


Objective = Callable[[Config, "Trial"], float]


def _space_text(space: SearchSpace) -> str:
    """The windows tuned and the values fixed: what a --set must agree with."""
    fixed = ", ".join(f"{k}={v}" for k, v in space.fixed)
    return ", ".join(x for x in (space.describe(), f"fixed: {fixed}" if fixed else "") if x) or "nothing tuned"


def _cut_short(e: BaseException) -> str:
    """The traceback text of a trial cut short by ``e`` (Ctrl-C, SIGTERM, the study's storage failing)."""
    if isinstance(e, OutputClosed):
        return "stopped: the output was closed (broken pipe)"
    if not isinstance(e, KeyboardInterrupt):
        return f"stopped: the study storage failed: {first_line(e.__cause__ or e.__context__ or e)}"
    return "terminated by SIGTERM" if isinstance(e, Terminated) else "interrupted by the user (KeyboardInterrupt)"


# Where the study's storage is written and read: Optuna's storages and adamtune's own writes.
_STORAGE_CODE = (os.path.join(os.path.realpath(os.path.dirname(optuna.storages.__file__)), ""),
                 os.path.realpath(storage_module.__file__))


def _storage_failed(e: BaseException) -> bool:
    """Whether ``e`` is the study's storage failing (disk full, a file made read-only, a server
    gone), not the user's code failing: a database error raised in Optuna's storage or in
    adamtune's writes to it. It stops the study, as it would stop every later trial (the CLI
    says so in one line, exit status 2); taken for a failure of the trial, it was swallowed and
    the trials stayed running. A database error of the user's own code (an objective that reads
    its data from a database) fails its trial, as any other error does."""
    import sqlalchemy.exc

    if not isinstance(e, (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError)):
        return False
    return any(os.path.realpath(frame.f_code.co_filename).startswith(_STORAGE_CODE)
               for frame, _ in traceback.walk_tb(e.__traceback__))


@contextlib.contextmanager
def sigterm_as_interrupt(over: bool = False) -> Any:
    """While tuning, SIGTERM raises Terminated (a KeyboardInterrupt), so the trials being
    trained end as cut short and a rerun makes up for them; by default SIGTERM would end the
    process at once and leave them running forever. Only in the main thread (signal handlers
    can be set nowhere else), and only where Python's default handling is in place unless
    ``over``: then over the handler set already (``ray.init``'s, which exits at once while the
    workers train on), restored afterwards. A second SIGTERM while the trials are being ended
    ends the process at once, as it would have.

    Ray turns an exception raised by a signal handler during its blocking calls into a plain
    KeyboardInterrupt; one that comes out after a SIGTERM is raised as Terminated again.
    """
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or (previous != signal.SIG_DFL and not over):
        yield
        return
    received = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated("terminated by SIGTERM")

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except KeyboardInterrupt as e:
        if received and not isinstance(e, Terminated):
            raise Terminated("terminated by SIGTERM") from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


class Trial:
    """What an objective function receives in objective mode (the user's own training loop).

    Call ``report(step, value)`` at each evaluation (extra metrics as keywords, e.g.
    ``train_loss=...``), ``should_prune()`` to ask the pruner -- then ``raise
    adamtune.TrialPruned()`` -- and optionally ``log_grad_norm(norm)`` every step so the report
    can recommend a clipping threshold (``adamtune.clip_gradients`` returns that norm).
    ``seed`` is for the trial's own randomness (``torch.manual_seed(trial.seed)`` before building
    the model): from the study's seed and the trial's point, as the built-in engines seed a
    model, so a trial run again after being cut short gets the same initial weights.
    """

    def __init__(self, trial: optuna.trial.Trial, config: Config, metric: str, seed: int = 0) -> None:
        self._trial = trial
        self.config = config
        self.seed = seed
        self._metric = metric
        self._curve: dict[str, list] = {"step": []}
        self._norms: list[float] = []
        self.last_step = 0
        self.saw_nonfinite = False
        self.diverged_at: int | None = None

    @property
    def number(self) -> int:
        """The trial's number in the study (0, 1, ...), as ``adamtune show`` lists it."""
        return self._trial.number

    def report(self, step: int, value: float, **metrics: float) -> None:
        """Record the objective's ``value`` at training ``step`` (and extra ``metrics`` as
        keywords), for the learning curve, the pruner and divergence: a NaN/inf value marks the
        trial diverged. Note the order: adamtune's ``report(step, value)``, Optuna's
        ``report(value, step)``.

        Raises:
            StudyError: ``step`` is not a whole number >= 0, or not after the last reported step.
        """
        n_step = integral(step)
        if n_step is None and isinstance(step, float) and step.is_integer():
            n_step = int(step)
        if n_step is None or n_step < 0:
            raise StudyError(f"trial.report(step, value): step must be a whole number of training steps >= 0, got "
                             f"{step!r}; adamtune's order is report(step, value), Optuna's is report(value, step)")
        if self._curve["step"] and n_step <= self._curve["step"][-1]:
            raise StudyError(f"trial.report(step, value): each report is an evaluation at a later step, got step "
                             f"{n_step} after step {self._curve['step'][-1]}")
        value = _reported(value, "value")
        step = n_step
        self.last_step = step
        self._curve["step"].append(step)
        n = len(self._curve["step"])
        for name, v in {self._metric: value, **metrics}.items():
            v = _reported(v, name)
            col = self._curve.setdefault(name, [float("nan")] * (n - 1))
            col.append(v if math.isfinite(v) else float("nan"))
        for col in self._curve.values():
            col.extend([float("nan")] * (n - len(col)))
        if not math.isfinite(value):
            self.saw_nonfinite = True
            if self.diverged_at is None:
                self.diverged_at = int(step)
            return
        self._trial.report(value, int(step))

    def should_prune(self) -> bool:
        """Whether to stop this trial now: the pruner says so, or a NaN/inf value was reported
        (the trial then ends as diverged at that step, not as pruned)."""
        return self.saw_nonfinite or self._trial.should_prune()

    def log_grad_norm(self, norm: float) -> None:
        """Record one step's gradient norm (``adamtune.clip_gradients`` returns it), from which
        the report recommends a clipping threshold."""
        self._norms.append(float(norm))

    def _outcome(self, value: float, direction: str) -> Outcome:
        norms = summarize_norms(torch.tensor(self._norms, dtype=torch.float64), self.config.max_grad_norm) if self._norms else None
        if self.saw_nonfinite or not math.isfinite(value):
            at = self.diverged_at if self.diverged_at is not None else self.last_step
            return Outcome("diverged", infeasible(direction), self.last_step, self._curve, norms, at)
        return Outcome("complete", value, self.last_step, self._curve, norms)


def _reported(value: Any, what: str) -> float:
    """A reported or returned ``value`` as a float; one line naming ``what`` where it is none."""
    if isinstance(value, (str, bytes, bool)) or value is None:
        raise StudyError(f"{what} must be a number (a float or a one-value tensor), got {reprlib.repr(value)}")
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        raise StudyError(f"{what} must be a number (a float or a one-value tensor), got "
                         f"{type(value).__name__} {reprlib.repr(value)}") from None


class _KnownSpaceQMC(optuna.samplers.QMCSampler):
    """Optuna's scrambled QMC sampler, told the search space up front, indexed by the trial's point.

    The stock sampler infers the space from the first trial and samples that trial with its
    independent (random) sampler; adamtune knows the space, so every trial -- the first one
    too -- is a point of the scrambled Sobol sequence. The stock sampler also keeps its place
    in the sequence in a study attribute with a read-then-write that is not atomic (Optuna's
    own TODO), so two workers sharing a study can draw the same point; here point i is trial
    number i (less the retries of trials cut short before it: ``retries.py``), which the storage
    hands out atomically. On one worker the sequence is the same.
    """

    def __init__(self, search_space: dict[str, optuna.distributions.BaseDistribution], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._known_space = dict(search_space)
        self._point = 0
        # The study's retries of trials cut short, by number: a retry stands for the point of
        # the trial it retries, and the trials after it for the points after (retries.py).
        self.retries: list[int] = []

    def infer_relative_search_space(self, study, trial):  # noqa: D102 - Optuna's contract
        return dict(self._known_space)

    def sample_relative(self, study, trial, search_space):  # noqa: D102
        self._point = point_of(trial.number, trial.user_attrs.get(ATTR_RETRY_OF), self.retries)
        return super().sample_relative(study, trial, search_space)

    def _find_sample_id(self, study, search_space) -> int:  # Optuna's hook (optuna>=4,<6)
        return self._point


class _PointRandom(optuna.samplers.RandomSampler):
    """Optuna's random sampler, drawing the values of point i from a generator seeded with (seed, i).

    The stock sampler draws every trial from one generator seeded once: a continued study had
    to be seeded anew, and two workers starting on one study at once drew the same values. Here
    a trial's values depend on the seed and its point alone (``retries.py``), as the quasi-random
    points do: a study stopped and continued, or shared by workers, draws what one run draws.
    """

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self._seed = seed
        self.retries: list[int] = []  # as _KnownSpaceQMC's
        self._drawing: int | None = None  # the trial the generator is for

    def sample_independent(self, study, trial, param_name, param_distribution):  # noqa: D102
        if self._drawing != trial.number:
            point = point_of(trial.number, trial.user_attrs.get(ATTR_RETRY_OF), self.retries)
            self._rng = _Generator(numpy.random.RandomState([self._seed, point]))
            self._drawing = trial.number
        return super().sample_independent(study, trial, param_name, param_distribution)


@dataclasses.dataclass
class _Generator:
    """What RandomSampler reads its generator from (``self._rng.rng``)."""

    rng: numpy.random.RandomState


class _SeededPerTrial:
    """For TPE and GP: the random numbers of trial n come from a generator seeded with (seed, n).

    Stock, each draws from one generator seeded once, so a continued study had to be seeded
    anew, and two workers starting on one study at once made the same first trials. Seeded per
    trial, trials of different numbers draw apart wherever and whenever they run; what a trial
    draws still depends on the study it sees, as these samplers learn from it.
    """

    _inner: str  # the attribute holding the sampler's random (startup) sampler
    _trial_seed: int

    def before_trial(self, study, trial):  # noqa: D102 - Optuna's hook, called as a trial is made
        self._rng = _Generator(numpy.random.RandomState([self._trial_seed, trial.number]))
        getattr(self, self._inner)._rng = _Generator(numpy.random.RandomState([self._trial_seed, trial.number, 1]))
        super().before_trial(study, trial)


class _TPE(_SeededPerTrial, optuna.samplers.TPESampler):
    _inner = "_random_sampler"

    def __init__(self, seed: int, **kwargs: Any) -> None:
        super().__init__(seed=seed, **kwargs)
        self._trial_seed = seed


class _GP(_SeededPerTrial, optuna.samplers.GPSampler):
    _inner = "_independent_sampler"

    def __init__(self, seed: int, **kwargs: Any) -> None:
        super().__init__(seed=seed, **kwargs)
        self._trial_seed = seed


def _startup(space: SearchSpace) -> int:
    return min(10, max(4, len(space.tuned) * 3))


# Each --sampler: how it is made, and whether it draws a trial's values from the trial's point
# alone (retries.py; told the study's retries), without reading the other trials (draws_alone).
_SAMPLERS: dict[str, tuple[Callable[[int, SearchSpace], optuna.samplers.BaseSampler], bool]] = {
    "quasi-random": (lambda seed, space: _KnownSpaceQMC(space.distributions(), qmc_type="sobol", scramble=True,
                                                        seed=seed), True),
    "tpe": (lambda seed, space: _TPE(seed, n_startup_trials=_startup(space)), False),
    "gp": (lambda seed, space: _GP(seed, n_startup_trials=_startup(space)), False),
    "random": (lambda seed, space: _PointRandom(seed), True),
}
SAMPLERS: tuple[str, ...] = tuple(_SAMPLERS)


def make_sampler(name: str, seed: int, space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for ``name``; seeded so a fresh study is reproducible.

    The quasi-random and random samplers draw each trial's values from the seed and the
    trial's point (``retries.py``); TPE and GP draw trial n's random numbers from (seed, n).
    """
    if name not in _SAMPLERS:
        raise StudyError(f"sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")
    sampler = _SAMPLERS[name][0](seed, space)
    sampler.adamtune_name = name
    return sampler


def draws_alone(sampler: optuna.samplers.BaseSampler | str) -> bool:
    """Whether ``sampler`` (or the sampler of that name) draws a trial's parameters without
    reading other trials': the quasi-random points (point i is trial i) and random sampling. A
    batch's parameters are then stored in one write after all are drawn, and a batch may be the
    whole budget. TPE (a constant liar: it counts the running trials' parameters as bad, which
    keeps a batch spread out) and GP read the study, so each trial's parameters are stored before
    the next trial is drawn."""
    name = sampler if isinstance(sampler, str) else getattr(sampler, "adamtune_name", None)
    return name in _SAMPLERS and _SAMPLERS[name][1]


class QuarterOfFirstComplete(optuna.pruners.BasePruner):
    """ASHA for an objective function, whose length adamtune is not told: no pruning until a
    trial completes (diverged ones do not count), then rungs from a quarter of the last step that
    trial reported, x3 after
    (the managed workloads' rule). Optuna's own ``min_resource="auto"`` takes 1% of it, which
    judges every later trial at its first report."""

    def __init__(self) -> None:
        self._asha: optuna.pruners.SuccessiveHalvingPruner | None = None

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if self._asha is None:
            done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            # a diverged trial is COMPLETE to Optuna (an infinite value): its last finite report is no length
            steps = [max(t.intermediate_values) for t in done
                     if t.intermediate_values and state_of(t) == TrialState.COMPLETE]
            if not steps:
                return False
            self._asha = optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, steps[0] // 4),
                                                                 reduction_factor=3)
        return self._asha.prune(study, trial)


def make_pruner(name: str, workload: Workload | None) -> optuna.pruners.BasePruner:
    """ASHA (successive halving), median, or no pruning, fitted to the workload's evaluations."""
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "asha":
        if workload is None:
            return QuarterOfFirstComplete()
        # First rung after about a quarter of training, on an evaluation step; rungs x3 after.
        # Earlier rungs judge slow starters (small lr, large beta) before they can show anything.
        e = workload.eval_every
        first = max(e, math.ceil(workload.steps / 4 / e) * e)
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=3)
    if name == "median":
        warm = workload.steps // 4 if workload is not None else 0
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warm)
    raise StudyError(f"pruner must be one of {', '.join(PRUNERS)}, got {name!r}")


def _began_with(stored: StudySettings) -> int | None:
    """The budget whose rule chose a stored study's space. A study stored before adamtune kept
    it is taken to have begun with its stored budget when that budget's rule gives its space."""
    if stored.space_budget is not None:
        return stored.space_budget
    if tuple(stored.space.tuned) == guide.tuned_for_budget(stored.optimizer, stored.budget):
        return stored.budget
    return None


def _check_space(space: Any) -> list[str]:
    """A ``space`` given as ``--set`` strings, as a list; anything else refused in one line."""
    must = "space must be a SearchSpace or a list of 'NAME=WINDOW' strings such as ['lr=1e-4:1e-2', 'beta1=0.9']"
    if isinstance(space, (str, bytes, dict)) or not isinstance(space, Iterable):
        raise SpaceError(f"{must}, got {type(space).__name__} {space!r}")
    items = list(space)
    wrong = next((item for item in items if not isinstance(item, str)), None)
    if wrong is not None:
        raise SpaceError(f"{must}, got an item {wrong!r}")
    return items


def check_callbacks(**callbacks: Any) -> None:
    """Refuse a callback that is not a function before anything is stored (one line)."""
    for name, f in callbacks.items():
        if f is not None and not callable(f):
            raise StudyError(f"{name} must be a function or None, got {type(f).__name__} {f!r}")


def _check_seed(seed: Any) -> int:
    n = integral(seed)
    if n is None or not 0 <= n < 2**32:
        raise StudyError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return n


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


SETTLE_S = 5.0  # how long a study found without its settings is read again for them (_look)


def _look(store: Any, name: str) -> optuna.Study | None:
    """Study ``name`` in ``store``, or None if there is none.

    Optuna makes a study in a write of its own, and its maker stores adamtune's settings in the
    next ones (:func:`_make_or_load`); a study found in between, without settings or trials, is
    read again until its settings are there, for up to ``SETTLE_S`` seconds. One that still has
    none, or that has trials without them, was not made by adamtune (``read_settings`` says so).
    """
    deadline = time.monotonic() + SETTLE_S
    while True:
        found = load_existing(store, name)
        if (found is None or SETTINGS_ATTR in found.user_attrs or found.get_trials(deepcopy=False)
                or time.monotonic() >= deadline):
            return found
        time.sleep(0.05)


def _made_by(fn: Callable) -> str | None:
    """Where objective ``fn`` is defined, ``"FILE:QUALNAME"`` (a ``functools.partial``'s function,
    a callable object's class); None where nothing says (a builtin)."""
    target = fn.func if isinstance(fn, functools.partial) else fn
    code = getattr(target, "__code__", None) or getattr(getattr(type(target), "__call__", None), "__code__", None)
    if code is None:
        return None
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{os.path.realpath(code.co_filename)}:{qualname}"


def _same_maker(stored: str | None, now: str | None) -> bool:
    """Whether two :func:`_made_by` records may be the same function: unknown, or code with no file
    of its own (a REPL's ``<stdin>``, a notebook's cells, whose file changes as a cell is run
    again), is taken as the same."""
    def own_file(made: str | None) -> bool:
        return made is not None and not made.startswith("<") and "<" not in made.rsplit(":", 1)[0] \
            and "ipykernel_" not in made
    return not (own_file(stored) and own_file(now)) or stored == now


def _where(made: str) -> str:
    path, _, qualname = made.rpartition(":")
    return f"{qualname}() of {path}"


def _make_or_load(store: Any, name: str, existing: optuna.Study | None, settings: StudySettings,
                  workload: Workload | None, made_by: str | None = None) -> optuna.Study | None:
    """Study ``name`` with its sampler and pruner, and ``settings`` stored in it: made when
    ``existing`` is None, else loaded.

    Returns None, with nothing written, when the study was to be made and another process made
    it first (workers started together on a new study): its settings are that process's, and
    this run must be checked against them. Only a study's maker stores its metric name; the
    settings are stored last, so a study found with them holds the rest.
    """
    with quiet_optuna():  # the QMC sampler and metric names are experimental in Optuna
        try:
            the_study = optuna.create_study(
                study_name=name, storage=store, direction=settings.direction, load_if_exists=existing is not None,
                sampler=make_sampler(settings.sampler, settings.seed, settings.space),
                pruner=make_pruner(settings.pruner, workload),
            )
        except optuna.exceptions.DuplicatedStudyError:
            return None
        if existing is None:
            the_study.set_metric_names([settings.metric])
            if made_by is not None:
                the_study.set_user_attr(OBJECTIVE_ATTR, made_by)
    if settings.space_budget is not None:
        the_study.set_user_attr(SPACE_BUDGET_ATTR, settings.space_budget)
    the_study.set_user_attr(SETTINGS_ATTR, settings.to_json())
    return the_study


@dataclasses.dataclass
class OpenedStudy:
    """A study made or loaded, checked against what it stores, its settings stored, no trial run.

    Attributes:
        remaining: trials the budget has left (cut-short trials to run again included).
        wanted_batch: the batch asked for (None = auto).
        made: this call made the study (it did not exist, and no other process made it first).
        new_file: this call made the SQLite file holding it.
    """

    study: optuna.Study
    settings: StudySettings
    store: Any
    workload: Workload | None
    objective_fn: Objective | None
    device: str
    wanted_batch: int | None
    remaining: int
    url: str = ""
    made: bool = False
    new_file: bool = False


def open_study(
    workload_or_objective: Union[str, Workload, Objective, None] = None,
    *,
    optimizer: str | None = None,
    task: str | None = None,
    budget: int | None = None,
    space: Union[SearchSpace, Iterable[str], None] = None,
    sampler: str | None = None,
    pruner: str | None = None,
    storage: str | os.PathLike | None = None,
    study: str | None = None,
    seed: int | None = None,
    direction: str | None = None,
    device: str | None = None,
    batch: int | str = "auto",
    max_memory: int | None = None,
    notice: Callable[[str], None] | None = None,
) -> OpenedStudy:
    """Check every argument as :func:`tune` does, make or load the study and store its settings;
    end the trials of workers gone and enqueue the retries of trials cut short. Runs no trial.

    Raises:
        AdamtuneError: any bad input, with a message naming what must hold.
    """
    url = storage_url(storage)
    check_url(url)
    if space is not None and not isinstance(space, SearchSpace):
        space = _check_space(space)
    wanted_batch = parse_batch(batch, max_memory)
    dev = check_device(device)
    # A new SQLite file is created only once every argument has been checked.
    new_file = is_new_file(url)
    store = None if new_file else open_storage(url)
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
        _check_objective(objective_fn)

    name = study
    if name is not None and (wrong := name_problem(name)) is not None:
        raise StudyError(f"study name {wrong}")
    if name is None:  # a Workload's name was held to the same rule when it was made
        if workload is not None:
            name = workload.name
        elif objective_fn is not None:
            name = getattr(objective_fn, "__name__", "objective")
        else:
            name = "digits-mlp"
    given = workload, workload_ref  # a second look starts again from what this call was given
    made_by = _made_by(objective_fn) if objective_fn is not None else None
    existing = _look(store, name) if store is not None else None
    while True:
        workload, workload_ref = given
        stored = read_settings(existing) if existing is not None else None
        if existing is not None:  # a stored trial changed outside adamtune: one line now, not after training
            result_of(existing, stored)

        if workload is None and objective_fn is None:
            ref = stored.workload if stored is not None else "digits-mlp"
            if stored is not None and ref is None:
                raise StudyError(f"study {name!r} was created from Python (objective mode or a Workload object); "
                                 "continue it from Python")
            try:
                workload, workload_ref = load_workload(ref), ref
            except WorkloadError as e:
                if stored is None:
                    raise
                # The user did not type this reference: say whose it is (a relative path is relative
                # to where the study was made).
                raise WorkloadError(f"study {name!r} tunes workload {ref!r}, which cannot be loaded from here: {e}; "
                                    "run adamtune from the directory the study was made in") from None
        if stored is not None and workload_ref is not None and stored.workload is not None \
                and not _same_ref(stored.workload, workload_ref):
            raise StudyError(f"study {name!r} tunes workload {stored.workload!r}, not {workload_ref!r}; use a new "
                             "--study name")

        # What is wrong in itself is said before what differs from the stored study.
        if optimizer is not None:
            check_optimizer(optimizer)
        if task is not None:
            check_task(task)
        if seed is not None:
            _check_seed(seed)
        # a SearchSpace names its optimizer: the default where none is given
        opt = _pick("optimizer", optimizer, stored and stored.optimizer,
                    space.optimizer if isinstance(space, SearchSpace) else "adamw", name)
        the_task = _pick("task", task, stored and stored.task, workload.task if workload else "generic", name)
        n_budget = budget if budget is not None else (stored.budget if stored is not None else DEFAULT_BUDGET)
        if integral(n_budget) is None or not 1 <= n_budget <= MAX_BUDGET:
            raise SpaceError(f"budget must be a whole number of trials in 1..{MAX_BUDGET}, got {n_budget!r}")
        n_budget = int(n_budget)
        the_seed = _check_seed(_pick("seed", seed, stored and stored.seed, DEFAULT_SEED, name))
        the_sampler = sampler if sampler is not None else (stored.sampler if stored is not None else DEFAULT_SAMPLER)
        the_pruner = pruner if pruner is not None else (stored.pruner if stored is not None else DEFAULT_PRUNER)
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
                raise StudyError(f"study {name!r} has its own search space ({_space_text(the_space)}); use a new "
                                 "--study name to change it")
        else:
            the_space = with_overrides(preset(opt, the_task, n_budget), list(space or ()))
        if stored is not None and isinstance(space, SearchSpace) and space != stored.space:
            raise StudyError(f"study {name!r} has its own search space ({_space_text(stored.space)}); use a new "
                             "--study name to change it")

        if workload is not None:
            metric, the_direction = workload.objective, workload.direction
            if direction is not None and direction != the_direction:
                raise StudyError(f"direction comes from the workload ({the_direction}); set it there")
        else:
            metric = "value"
            the_direction = direction or (stored.direction if stored is not None else "minimize")
            if the_direction not in ("minimize", "maximize"):
                raise StudyError(f"direction must be minimize or maximize, got {the_direction!r}")

        info = describe(workload) if workload is not None else {}
        if stored is not None:
            _check_continues(name, stored, metric, the_direction, info)
        if existing is not None and objective_fn is not None and study is None:
            # named after the function alone: another script's `objective` would continue this study
            was, now = existing.user_attrs.get(OBJECTIVE_ATTR), made_by
            if not _same_maker(was, now):
                raise StudyError(f"study {name!r} was made by {_where(was)}, not by this {_where(now)}; give this "
                                 f"one a study of its own (tune(..., study='...')), or pass study={name!r} to "
                                 "continue that one")
        # The first build of the model and its first step, after every quicker check: code wrong
        # for every trial is refused before anything is stored (it failed each trial, using up the budget).
        model = first_build(workload, dev) if workload is not None else None
        check_max_memory(max_memory, wanted_batch, model, workload, dev)

        # Trials whose worker was killed outright end as cut short, so they no longer use up the budget.
        lost = end_lost(existing) if existing is not None else []
        if lost:
            (notice or warn)(f"{trials_text(len(lost))} ({', '.join(str(t.number) for t in lost)}) of study {name!r} "
                             f"lost: {lost_text(lost)}; ended as cut short, this run makes up for "
                             f"{'them' if len(lost) > 1 else 'it'}")
        settings = StudySettings(
            workload=workload_ref if stored is None else stored.workload,
            workload_name=workload.name if workload else name,
            # A budget below the trials the study already has is the study's size: it is used up.
            optimizer=opt, task=the_task, space=the_space,
            budget=max(n_budget, counted_trials(existing)) if existing is not None else n_budget,
            seed=the_seed, sampler=the_sampler, pruner=the_pruner, metric=metric, direction=the_direction,
            workload_info=info,
            space_budget=n_budget if stored is None else _began_with(stored),
        )
        if store is None:
            store = open_storage(url)
        the_study = _make_or_load(store, name, existing, settings, workload, made_by)
        if the_study is not None:
            break
        # Another process made the study since this one looked (workers of a job array started
        # together): this run is checked against the settings that process stored, as against
        # any existing study's. A differing optimizer, task, seed or space is refused; a budget
        # of its own continues the study.
        existing = _look(store, name)
        if existing is not None and SETTINGS_ATTR not in existing.user_attrs:
            raise StudyError(f"study {name!r} was just made by another process, which has not stored its settings "
                             f"within {SETTLE_S:g} s; run again")

    remaining = max(0, settings.budget - counted_trials(the_study))
    retried = retry_cut_short(the_study, remaining, settings.space.distributions()) if existing is not None else []
    if retried:
        (notice or warn)(f"{trials_text(len(retried))} cut short earlier: run again first, with the same "
                          "hyperparameters and initial weights")
    return OpenedStudy(the_study, settings, store, workload, objective_fn, dev, wanted_batch, remaining, url,
                       made=existing is None, new_file=new_file)


def unmake(opened: OpenedStudy) -> bool:
    """Delete the study ``opened`` made, if no trial is in it yet, and the SQLite file it made, if
    no other study is in it: a run refused before its first trial leaves nothing to fix a later
    run's optimizer, seed and space. Returns whether the file was removed (nothing is left to
    settle); a study this call did not make, or a deletion that fails, is left as it is."""
    if not opened.made:
        return False
    path = sqlite_path(opened.url) if opened.new_file else None
    try:
        if opened.study.get_trials(deepcopy=False):  # another process's trials: the study is in use
            return False
        optuna.delete_study(study_name=opened.study.study_name, storage=opened.store)
        if path is None or study_names(opened.store):
            return False
    except Exception:  # noqa: BLE001 - the refusal under way is what the user hears about
        return False
    settle(opened.store)  # closes its connections
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(OSError):
            os.remove(path + suffix)
    return True


def _check_objective(fn: Callable) -> None:
    """Refuse, before a study is made, a function that cannot be called as objective(config, trial):
    most often a workload factory passed without its call."""
    try:
        inspect.signature(fn).bind(None, None)
    except ValueError:  # no signature to read (some builtins): let the call say
        return
    except TypeError:
        name = getattr(fn, "__name__", "the function")
        raise StudyError(f"tune() got {name}, which cannot be called as objective(config, trial); pass {name}() if "
                         "it makes a Workload, or a function of (config, trial) that trains and returns the "
                         "objective") from None


def _same_ref(a: str, b: str) -> bool:
    """Whether two workload references name the same thing: ``./w.py:ATTR`` is ``w.py:ATTR``."""
    (pa, _, aa), (pb, _, ab) = a.rpartition(":"), b.rpartition(":")
    if aa != ab or not pa or not pb:
        return a == b
    return os.path.normpath(pa) == os.path.normpath(pb) if pa.endswith(".py") and pb.endswith(".py") else pa == pb


# What a study's trials were trained and judged with: a study continued with other values would
# hold trials that do not compare (and Optuna keeps the direction the study was made with).
_KEPT = {"steps": "steps", "batch_size": "batch size", "eval_every": "evaluation every",
         "train_examples": "training examples", "valid_examples": "validation examples"}


def _aims(metric: str, direction: str, workload: bool) -> str:
    return f"{direction}s {metric}" if workload else f"{direction}s the value of an objective function"


def workload_changes(stored: StudySettings, info: dict[str, Any]) -> list[str]:
    """What of the workload setup the study was trained with differs in ``info`` (a workload's
    ``describe``): ``["steps 40 -> 400"]``; trials of either would not compare."""
    return [f"{what} {stored.workload_info[k]} -> {info[k]}" for k, what in _KEPT.items()
            if k in stored.workload_info and k in info and stored.workload_info[k] != info[k]]


def _check_continues(name: str, stored: StudySettings, metric: str, direction: str, info: dict[str, Any]) -> None:
    """Refuse to continue study ``name`` with another objective, direction, mode or workload setup."""
    was, now = stored.metric != "value", bool(info)  # objective mode's metric is "value"
    if (was, stored.metric, stored.direction) != (now, metric, direction):
        raise StudyError(f"study {name!r} {_aims(stored.metric, stored.direction, was)}, this run "
                         f"{_aims(metric, direction, now)}; use a new --study name")
    changed = workload_changes(stored, info)
    if changed:
        raise StudyError(f"study {name!r} was trained with another workload setup ({', '.join(changed)}): its trials "
                         "would not compare with this run's; use a new --study name")


def tune(
    workload_or_objective: Union[str, Workload, Objective, None] = None,
    *,
    optimizer: str | None = None,
    task: str | None = None,
    budget: int | None = None,
    space: Union[SearchSpace, Iterable[str], None] = None,
    sampler: str | None = None,
    pruner: str | None = None,
    storage: str | os.PathLike | None = None,
    study: str | None = None,
    seed: int | None = None,
    direction: str | None = None,
    device: str | None = None,
    on_trial: Callable[[TrialRecord, TuneResult | None], None] | None = None,
    on_start: Callable[[StudySettings, int], None] | None = None,
    batch: int | str = "auto",
    max_memory: int | None = None,
    notice: Callable[[str], None] | None = None,
    max_consecutive_failures: int | None = 3,
    max_trials: int | None = None,
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
        storage: an Optuna storage URL (default ``sqlite:///adamtune.db``), or the path of a
            SQLite file (a ``pathlib.Path``).
        study: the study name (default: the workload's name, or the objective function's; a
            study named so by default is continued only by a function of the same name in the
            same file, so two scripts' ``objective`` functions do not share one study).
        seed: fixes the sampler, every trial's initial weights and the minibatch order.
        direction: objective mode only: ``minimize`` (default) or ``maximize``.
        device: where managed trials train (``"cpu"``, ``"cuda"``, ``"cuda:1"``; default: CUDA
            when available).
        batch: how many trials train at once as one vmapped model: ``"auto"`` (default:
            batched whenever the workload allows it), or a number (1 = sequential).
        max_memory: bytes the stacked members may use (default: 80% of free GPU memory, or a
            quarter of free RAM); larger batches are split into chunks that fit.
        on_trial: called with each finished trial's record and the study so far.
        on_start: called once with the settings and the number of trials to run.
        notice: called with one-line notices (e.g. why batching fell back to sequential);
            default: an AdamtuneWarning, shown at the line that called ``tune``.
        max_consecutive_failures: stop with StudyError once this many trials in a row failed
            (the user's code raised), and at the end of a run in which every trial failed; None
            never stops for failures. Failed trials are kept, with their tracebacks, either way.
        max_trials: run at most this many trials in this call, as Optuna's ``n_trials`` (None:
            until the budget is used up); a worker's share when several share the study.

    Ctrl-C (KeyboardInterrupt) or SIGTERM (``kill``, ``timeout``, a scheduler's time limit;
    raised as ``adamtune.Terminated``, a KeyboardInterrupt, where SIGTERM has Python's default
    handling) ends the trials in training as failed and cut short; they do not use up the
    budget, so running ``tune`` again makes up for them. Every finished trial is kept.

    Raises:
        AdamtuneError: any bad input, with a message naming what must hold.
        StudyError: trials failed as ``max_consecutive_failures`` says.
        optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError: the study's
            storage failed while it ran (a full disk, a file made read-only, a server gone); the
            trials in training end as cut short where the storage still allows.
    """
    if max_trials is not None and (integral(max_trials) is None or max_trials < 1):
        raise StudyError(f"max_trials must be a whole number >= 1 or None, got {max_trials!r}")
    if max_consecutive_failures is not None and (integral(max_consecutive_failures) is None
                                                 or max_consecutive_failures < 1):
        raise StudyError(f"max_consecutive_failures must be a whole number >= 1 or None, got "
                         f"{max_consecutive_failures!r}")
    max_trials = None if max_trials is None else int(max_trials)
    max_consecutive_failures = None if max_consecutive_failures is None else int(max_consecutive_failures)
    check_callbacks(on_trial=on_trial, on_start=on_start, notice=notice)
    opened = open_study(
        workload_or_objective, optimizer=optimizer, task=task, budget=budget, space=space, sampler=sampler,
        pruner=pruner, storage=storage, study=study, seed=seed, direction=direction, device=device, batch=batch,
        max_memory=max_memory, notice=notice,
    )
    the_study, settings, store, remaining = opened.study, opened.settings, opened.store, opened.remaining
    workload, the_sampler = opened.workload, settings.sampler
    if max_trials is not None:
        remaining = min(remaining, max_trials)
    quota = remaining if max_trials is not None else math.inf  # trials that count this call may still run
    runner = _Runner(the_study, settings, workload, opened.objective_fn, opened.device, on_trial,
                     max_consecutive_failures, notice or warn, opened.url)
    unmade = False
    try:
        try:
            if remaining == 0 and max_consecutive_failures is not None:
                refuse_all_failed(opened)
            if on_start is not None:
                on_start(settings, remaining)
            k = resolve_batch(opened.wanted_batch, workload, the_sampler, remaining, opened.device, max_memory,
                              notice or warn)
        except BaseException:  # a batch refused, on_start raising, Ctrl-C: no trial ran
            unmade = unmake(opened)
            raise
        with sigterm_as_interrupt(), Heartbeat(the_study, notice=notice or warn) as heartbeat:
            runner.heartbeat = heartbeat
            while remaining > 0:
                n = min(k, remaining)
                uncounted = runner.uncounted
                if n > 1:
                    if not runner.run_batch(n):
                        k = 1  # the model could not be vmapped: the rest of the study runs sequentially
                else:
                    runner.run_one()
                quota -= n - (runner.uncounted - uncounted)  # those ended unrun or elsewhere are made up for
                # other workers sharing the study count too
                remaining = min(runner.remaining(settings.budget), quota)
        if runner.failures and not runner.ended and max_consecutive_failures is not None:
            raise runner.failed(f"every trial of this run failed ({runner.failures})")
        return result_of(the_study, settings)
    finally:
        if not unmade:  # a removed file has nothing to settle
            settle(store)


def _tell_many(study: optuna.Study, done: Sequence[tuple[optuna.trial.Trial, Outcome]]) -> list[int]:
    """Store each trial's outcome: its curve, gradient norms and adamtune state as user
    attributes, and its state and value in Optuna (pruned, failed with its error as its
    traceback, or complete with its value).
    Returns the numbers of those another worker had ended meanwhile (not stored)."""
    told = []
    for trial, outcome in done:
        attrs: dict[str, Any] = {ATTR_STEPS: outcome.steps, ATTR_CURVE: outcome.curve}
        if outcome.grad_norms is not None:
            attrs[ATTR_GRAD_NORMS] = outcome.grad_norms.to_dict()
        if outcome.status == "diverged":
            attrs[ATTR_STATE] = TrialState.DIVERGED.value
            if outcome.diverged_at is not None:
                attrs[ATTR_DIVERGED_AT] = outcome.diverged_at
        if outcome.status == "failed":
            attrs[ATTR_TRACEBACK] = outcome.error or "unknown"
            told.append((trial, None, optuna.trial.TrialState.FAIL, attrs))
        elif outcome.status == "pruned":
            told.append((trial, None, optuna.trial.TrialState.PRUNED, attrs))
        else:
            told.append((trial, outcome.value, None, attrs))
    return tell_many(study, told)


AUTO_BATCH_BAYES = 8  # TPE/GP learn from finished trials: ask fewer at once
# --batch auto asks for at most this many trials at once. On some development CPUs the speedup over
# a plain loop was the same at K=64 as at K=16, on others 8.0x against 6.1x (BENCHMARKS.md); a larger
# stack delays every result and makes a Ctrl-C cut short more trials. GPUs gain from larger stacks;
# memory caps them anyway.
AUTO_BATCH_MAX = {"cpu": 64, "cuda": 1024}


def check_device(device: str | None) -> str:
    """The device to train on (default: cuda when available). Raises StudyError if unusable."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise StudyError(f"device must be cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise StudyError(f"device {device!r}: no CUDA device is available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise StudyError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise StudyError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    return str(dev)


def parse_batch(batch: int | str, max_memory: int | None = None) -> int | None:
    """``"auto"`` -> None, else the whole number >= 1. Raises StudyError otherwise."""
    if max_memory is not None and (isinstance(max_memory, bool) or not isinstance(max_memory, int) or max_memory <= 0):
        raise StudyError(f"max_memory must be a positive number of bytes, got {max_memory!r}")
    if batch == "auto":
        return None
    # text as --budget and --seed read it: ASCII digits (int() also takes 1_0 and ３)
    wanted = whole_number(batch) if isinstance(batch, str) else batch
    if integral(wanted) is None or wanted < 1:
        raise StudyError(f"batch must be a whole number >= 1 or 'auto', got {batch!r}")
    return int(wanted)


def first_build(workload: Workload, device: str = "cpu") -> nn.Module:
    """``workload``'s model, built once before its study is made, from a copy of the random state
    (what a batch plan and the trials build later is built as it would have been), and one
    training step's forward, loss and backward run on a copy of it (``engine.first_step``), so
    that code wrong for every trial is refused before anything is stored (its trials failed one
    by one on it and used up the budget; rerun after the fix, the study had only what was left of
    its budget to train, and its first points were never tried): a factory that raises or returns
    no ``nn.Module`` or one module twice, data of another dtype than the model's (numpy's float64
    through ``torch.tensor(X)``), a shape the model does not take, a loss of one value per example.

    Raises:
        FactoryError: as :meth:`Workload.build_model`.
        WorkloadError: building the model, or its first step, raised.
    """
    what = "building the model"
    try:
        with torch.random.fork_rng(devices=[]):
            model = workload.build_model()
        what = "one training step of the model (forward, loss, backward) on a minibatch"
        first_step(workload, model, device)
        return model
    except (FactoryError, KeyboardInterrupt):
        raise
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's code: one line, nothing stored
        said = first_line(e) if isinstance(e, WorkloadError) else f"{type(e).__name__}: {first_line(e)}{where(e)}"
        raise WorkloadError(f"workload {workload.name!r}: {what} failed before any trial: {said}; nothing was "
                            "stored: fix it and run again") from None


def check_max_memory(max_memory: int | None, wanted: int | None, model: nn.Module | None, workload: Workload | None,
                     device: str) -> None:
    """Refuse a --max-memory that not even one member of a stack fits in (before the study is made).

    Args:
        model: one built from ``workload`` (:func:`first_build`), or None where that failed.

    Raises:
        StudyError: ``max_memory`` is below what one member of the workload takes.
    """
    if max_memory is None or wanted == 1 or workload is None or model is None:
        return
    try:
        if why_not_batchable(model):  # trained one at a time anyway: no stack to fit
            return
        one = member_bytes(workload, device, model)
    except (Exception, SystemExit):  # noqa: BLE001 - a broken model is each trial's failure to record, not bad input
        return
    if one > max_memory:
        raise StudyError(f"--max-memory of {_size(max_memory)} is less than one trial of {workload.name} takes "
                         f"(about {_size(one)}); give at least that, or --batch 1")


def resolve_batch(wanted: int | None, workload: Workload | None, sampler: str, remaining: int,
                  device: str, max_memory: int | None, notice: Callable[[str], None]) -> int:
    """The number of members per batch (``wanted`` None = auto), capped by what fits in memory.

    Raises:
        StudyError: a batch > 1 asked for in objective mode.
    """
    if workload is None:
        if wanted is not None and wanted > 1:
            raise StudyError("batching needs a managed workload; an objective function trains one trial at a time")
        return 1
    if wanted == 1 or remaining <= 1:
        return 1
    # The user's model or loss is broken: each trial records it as failed; the note says what failed.
    what = "building the model"
    try:
        model = workload.build_model()
        reason = why_not_batchable(model)
        what = "running the model and loss on a minibatch"  # members_per_chunk measures its activations
        fits = members_per_chunk(workload, device, max_memory, model)
    except FactoryError:  # the workload itself is wrong: said once, before any trial
        raise
    except (Exception, SystemExit) as e:
        notice(f"training trials one at a time: {what} to plan a batch failed ({type(e).__name__}: {first_line(e)})"
               f"{where(e)}")
        return 1
    if reason is not None:
        notice(f"training trials one at a time: {reason}")
        return 1
    most = AUTO_BATCH_MAX["cuda" if str(device).startswith("cuda") else "cpu"]
    k = wanted if wanted is not None else (min(remaining, most) if draws_alone(sampler)
                                           else AUTO_BATCH_BAYES)
    k = min(k, remaining)  # a batch larger than what remains trains what remains: the note is about those
    if fits < k:
        notice(f"{k} members do not fit the memory budget; training in chunks of {fits}")
        k = fits
    return max(1, k)


def _size(n: int) -> str:
    """``2.1 MB``: bytes in units of 1024, as --max-memory reads them."""
    for unit, shift in (("GB", 30), ("MB", 20), ("KB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.3g} {unit}"
    return f"{n} B"


class _Runner:
    """Asks Optuna for trials, runs them on an engine, and tells Optuna how each ended."""

    def __init__(self, study, settings, workload, objective_fn, device, on_trial, max_failures, notice,
                 url: str = "") -> None:
        self.study, self.settings, self.workload, self.url = study, settings, workload, url
        self.objective_fn, self.device, self.on_trial = objective_fn, device, on_trial
        self.max_failures = max_failures
        self.notice = notice
        self.failures = 0  # in a row
        self.ended = 0  # trials this run that trained and were stored (complete, pruned or diverged)
        self.uncounted = 0  # trials this run asked for that ended unrun or elsewhere: not in the budget
        self.last_error = "unknown"  # the last line of the last failed trial's traceback
        self.heartbeat: Heartbeat | None = None  # stamps the trials made, while tune() trains
        self.retries: list[int] = []  # the study's retries of trials cut short, read at each ask

    def _read_retries(self, created: Sequence[optuna.trial.Trial], engine: str,
                      asked: list[tuple[optuna.trial.Trial, Config | None]] | None = None) -> set[int]:
        """Read the study's retries once ``created`` (the trials asked for) are made, for their
        points. Those of ``created`` that retry a point another worker's retry already stands
        for, or that lie past the budget (:func:`over_budget`), end unrun, cut short (appended
        to ``asked`` without a Config); returns their numbers."""
        trials = self.study.get_trials(deepcopy=False)
        self.retries = retry_numbers(trials)
        if draws_alone(self.study.sampler):
            self.study.sampler.retries = self.retries
        running = {t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING}
        mine = [t.number for t in created if t.number in running]  # not those failed asking
        twins = duplicates(trials, mine)
        past = over_budget(trials, [n for n in mine if n not in twins], self.settings.budget, set(twins))
        for trial in created:
            if trial.number in twins:
                why = f"trial {twins[trial.number]} runs this point again already (two workers retried it at once)"
            elif trial.number in past:
                why = (f"the study's budget of {self.settings.budget} trials was taken by other workers' trials "
                       "(several workers asked at once); a later run of the study runs this point")
            else:
                continue
            trial.set_user_attr(ATTR_ENGINE, engine)
            self._fail(trial, f"not run: {why}", count=False)
            if asked is not None:
                asked.append((trial, None))
        return set(twins) | past

    def _init_seed(self, trial: optuna.trial.Trial) -> int:
        """The seed of ``trial``'s initial weights: the study's seed and the trial's point (retries.py)."""
        return init_seed(self.settings.seed, point_of(trial.number, trial.user_attrs.get(ATTR_RETRY_OF), self.retries))

    def remaining(self, budget: int) -> int:
        return max(0, budget - counted_trials(self.study))

    def _ask(self, engine: str, n: int = 1) -> list[tuple[optuna.trial.Trial, Config | None]]:
        """``n`` new trials, each with its Config; their parameters and adamtune's attributes
        are stored in one write for them all. A trial whose Config could not be made or stored
        ends failed, with Config None. Ctrl-C or the study's stop while asking ends the trials
        made so far as cut short, instead of leaving them running. Each trial is given to the
        heartbeat as soon as it is made, before its parameters are drawn and written: a worker
        killed while asking leaves stamped trials, ended GRACE_S later rather than only once
        clearly old (heartbeat.py)."""
        created: list[optuna.trial.Trial] = []

        def made(trial: optuna.trial.Trial) -> None:
            created.append(trial)
            if self.heartbeat is not None:
                self.heartbeat.watch([trial])

        asked: list[tuple[optuna.trial.Trial, Config | None]] = []
        together = draws_alone(self.study.sampler)
        kept: list[tuple[optuna.trial.Trial, HeldWrites]] = []
        try:
            if together:
                # Every trial is made before any draws from its point: the point counts the
                # retries numbered below the trial, all of them stored once the trial exists
                # (another worker's too), and read here in one go.
                for trial in ask_many(self.study, n):
                    made(trial)
                dropped = self._read_retries(created, engine, asked)
            for trial in [t for t in created if t.number not in dropped] if together else ask_many(self.study, n):
                if not together:
                    made(trial)
                try:
                    with writes_kept(trial) as held:
                        config = self.settings.space.suggest(trial)
                        held.set_user_attrs({ATTR_ENGINE: engine, ATTR_WORKER: this_worker(),
                                         ATTR_PROCESS: this_process(), ATTR_CONFIG: dataclasses.asdict(config)})
                except Exception as e:
                    if _storage_failed(e):  # TPE/GP read the study to draw: the storage, not the space, failed
                        raise
                    self._fail_asked(trial, engine, traceback.format_exc())
                    asked.append((trial, None))
                    continue
                kept.append((trial, held))
                asked.append((trial, config))
                if not together:  # the sampler draws the next trial from this one's stored parameters
                    self._write_kept(kept, asked, engine)
                    kept = []
            self._write_kept(kept, asked, engine)
            if not together:  # for the initial weights' seeds
                dropped = self._read_retries(created, engine)
                asked = [(t, None if t.number in dropped else c) for t, c in asked]
        except BaseException as e:
            self._end_unrun(created, e)
            raise
        return asked

    def _write_kept(self, kept: Sequence[tuple[optuna.trial.Trial, HeldWrites]],
                    asked: list[tuple[optuna.trial.Trial, Config | None]], engine: str) -> None:
        """Store the kept writes of the trials in ``asked``; one that could not be stored ends
        failed and its Config becomes None. The storage failing is raised."""
        errors = dict(zip((t.number for t, _ in kept), write_kept(kept), strict=True))
        failed = next((e for e in errors.values() if e is not None and _storage_failed(e)), None)
        if failed is not None:  # not the trial's failure: the study stops (_ask ends its trials cut short)
            raise failed
        for j, (trial, _) in enumerate(asked):
            error = errors.get(trial.number)
            if error is not None:
                self._fail_asked(trial, engine, "".join(traceback.format_exception(error)))
                asked[j] = (trial, None)

    def _fail_asked(self, trial: optuna.trial.Trial, engine: str, tb: str) -> None:
        trial.set_user_attr(ATTR_ENGINE, engine)
        self._fail(trial, tb)

    def run_one(self) -> None:
        ((trial, config),) = self._ask("sequential")
        if config is not None:
            self._run_sequential(trial, config)

    def _run_sequential(self, trial: optuna.trial.Trial, config: Config) -> None:
        s = self.settings
        try:
            if self.workload is not None:
                outcome = train_trial(self.workload, config, init_seed=self._init_seed(trial),
                                      data_seed=data_seed(s.seed), trial=trial, device=self.device)
            else:
                user_trial = Trial(trial, config, s.metric, seed=self._init_seed(trial))
                try:
                    value = self.objective_fn(config, user_trial)
                    if value is None:
                        raise StudyError("the objective returned None: it must return the trial's value (a float), "
                                         "e.g. its best validation loss")
                    outcome = user_trial._outcome(_reported(value, "the objective's return value"), s.direction)
                except optuna.TrialPruned:  # after a NaN/inf report, should_prune() said stop: it diverged
                    outcome = user_trial._outcome(0.0, s.direction)
                    if not user_trial.saw_nonfinite:
                        outcome = dataclasses.replace(outcome, status="pruned")
        except KeyboardInterrupt as e:
            self._end_unrun([trial], e)  # a storage error while ending it must not hide the Ctrl-C
            raise
        except FactoryError:  # the workload itself is wrong: every trial would be; not counted, stop now
            self._fail(trial, traceback.format_exc(), count=False)
            raise
        except (Exception, SystemExit) as e:  # the user's code failed, or called sys.exit(): the trial failed
            if _storage_failed(e):  # reporting to the storage failed, not the user's code: the study stops
                self._end_unrun([trial], e)
                raise
            self._fail(trial, traceback.format_exc())
            return
        try:
            self._done(trial, outcome)
        except BaseException as e:  # Ctrl-C or the storage failing while storing it: cut short, unless it was stored
            if isinstance(e, KeyboardInterrupt) or _storage_failed(e):
                self._end_unrun([trial], e)
            raise

    def run_batch(self, n: int) -> bool:
        """Run ``n`` trials as one stack. False if the model turned out not to be vmappable
        (its trials are then run sequentially here, so none is lost).

        An error of the user's code that stops the stack (a model factory that raises for some
        trials, a member's numerical error) is one member's, or several members', not the
        batch's: the members not yet told train again one at a time, each failing only if its
        own training raises, as it would alone (``--batch 1`` gives the same trials).
        """
        asked = self._ask(f"batched (K={n})", n)
        runnable = [(t, c) for t, c in asked if c is not None]
        if not runnable:
            return True
        trials = [t for t, _ in runnable]
        told: set[int] = set()
        telling: list[BaseException] = []  # what telling the finished members raised: not their training's

        def on_done(finished: Sequence[tuple[int, Outcome]]) -> None:
            try:
                self._done_many([(trials[i], outcome) for i, outcome in finished])
            except BaseException as e:
                # Telling was cut short (Ctrl-C while the database was locked, say): the ones
                # not stored are still running, and the handlers below end them as failed.
                stored = _finished_numbers(self.study)
                told.update(i for i, _ in finished if trials[i].number in stored)
                telling.append(e)
                raise
            told.update(i for i, _ in finished)

        s = self.settings
        # Set in the handlers, acted on after them: the trials trained again one at a time are
        # then not run while an exception is being handled, so a trial's own error is stored
        # with its own traceback, not after the stack's ("During handling of the above ...").
        alone: str | None = None  # the notice before the members not told train one at a time
        batchable = True
        try:
            train_members(self.workload, [c for _, c in runnable],
                          init_seeds=[self._init_seed(t) for t in trials], data_seed=data_seed(s.seed),
                          trials=trials, device=self.device, on_done=on_done)
        except NotBatchable as e:
            alone, batchable = f"training trials one at a time: {e}{where(e.__cause__)}", False
        except KeyboardInterrupt as e:
            self._fail_untold(trials, told, _cut_short(e), count=False)
            raise
        except FactoryError:
            self._fail_untold(trials, told, traceback.format_exc(), count=False)
            raise
        except (Exception, SystemExit) as e:  # the user's code failed, or called sys.exit()
            if _storage_failed(e) or any(e is t for t in telling):
                # The storage failed, not the user's code; or telling finished members failed (the
                # user's on_trial callback raised, say), which stops the study after a trial run
                # alone too: not the members' training failing. The others end cut short.
                self._end_unrun(trials, e)
                raise
            alone = (f"training {trials_text(len(runnable) - len(told))} of a batch of {len(runnable)} again one at "
                     f"a time: the batch stopped on {type(e).__name__}: {first_line(e)}{where(e)}; only the trials "
                     "whose own training raises an error fail")
        if alone is not None:
            self._run_alone([(t, c) for i, (t, c) in enumerate(runnable) if i not in told], alone)
        return batchable

    def _run_alone(self, rest: Sequence[tuple[optuna.trial.Trial, Config]], notice: str) -> None:
        """Train ``rest``, the trials of a batch that stopped and were not told, one at a time on
        the sequential engine (the same seeds and initial weights), after ``notice``."""
        j = 0
        try:
            self.notice(notice)
            with warnings.catch_warnings():
                # a batch that stopped at a later step: its trials report their first evaluations
                # again, the values they reported batched, which Optuna keeps
                warnings.filterwarnings("ignore", message="The reported value is ignored because this")
                for j, (t, c) in enumerate(rest):
                    t.set_user_attr(ATTR_ENGINE, "sequential")
                    self._run_sequential(t, c)
        except BaseException as stop:
            # Ctrl-C or the study's stop (repeated failures, the storage failing): the batch's
            # trials not finished end as cut short, and a rerun makes up for them.
            self._end_unrun([t for t, _ in rest[j:]], stop)
            raise

    def _fail_untold(self, trials: Sequence[optuna.trial.Trial], told: set[int], tb: str, count: bool = True) -> None:
        """End as failed each of ``trials`` not told; one that cannot be (already finished by a
        tell cut short, or the database unreachable) does not keep the others running. Once
        every one of them is ended, what stops the study is raised: Ctrl-C, else the storage
        failing, else the study's stop after repeated failures."""
        stop: BaseException | None = None
        failed: Exception | None = None  # the storage's first error: the study cannot go on
        gone: list[int] = []  # ended by another worker meanwhile: one notice for them all
        for i, t in enumerate(trials):
            if i in told:
                continue
            try:
                self._fail(t, tb, count=count, gone=gone)
            except (StudyError, KeyboardInterrupt) as e:
                # The last stop counts every failure; a Ctrl-C waits until the others are ended.
                stop = e if stop is None or isinstance(stop, StudyError) else stop
            except Exception as e:  # noqa: BLE001 - the next trial is still ended
                if failed is None and _storage_failed(e):
                    failed = e
        with contextlib.suppress(Exception):  # a failing notice must not replace the stop
            self._ended_elsewhere(gone)
        if failed is not None and not isinstance(stop, KeyboardInterrupt):
            raise failed
        if stop is not None:
            raise stop

    def _end_unrun(self, trials: Sequence[optuna.trial.Trial], cause: BaseException) -> None:
        """End those of ``trials`` not stored as finished, because ``cause`` stops the study:
        failed and marked cut short (they do not use up the budget), each as far as the
        storage still allows."""
        why = (_cut_short(cause) if isinstance(cause, KeyboardInterrupt) or _storage_failed(cause)
               else "not run: the study stopped before this trial")
        stored = _finished_numbers(self.study)
        with contextlib.suppress(Exception):
            self._fail_untold(trials, {i for i, t in enumerate(trials) if t.number in stored}, why, count=False)

    def _done(self, trial: optuna.trial.Trial, outcome: Outcome) -> None:
        self._done_many([(trial, outcome)])

    def _done_many(self, done: Sequence[tuple[optuna.trial.Trial, Outcome]]) -> None:
        """Store ``done``, in their order. A failed outcome (trained, but the user's code at fault:
        an objective metric's NaN) counts as a failure of the user's code; once
        ``max_failures`` in a row are reached, the study stops, and the failed members told
        with them past that end cut short, not counted, as the members of a batch trained again
        one at a time would (a rerun runs them again, once the code is fixed)."""
        told, spare = [], []
        run, stop = self.failures, 0  # stop: the failures in a row that stop the study, once reached
        for trial, outcome in done:
            if outcome.status != "failed":
                run = 0
            elif stop:
                spare.append((trial, outcome))
                continue
            else:
                run += 1
                stop = run if self.max_failures is not None and run >= self.max_failures else 0
            told.append((trial, outcome))
        trials = [trial for trial, _ in told]
        try:
            gone = _tell_many(self.study, told)
        except BaseException:
            with contextlib.suppress(Exception):  # those stored before the error are still shown
                self._notify(trials, only_finished=True)
            raise
        for trial, outcome in told:
            if trial.number in gone:
                continue
            if outcome.status == "failed":
                self.failures += 1
                self.last_error = last_line(outcome.error) or "unknown"
            else:
                self.failures = 0
                self.ended += 1
        self._ended_elsewhere(gone)
        self._notify([t for t in trials if t.number not in gone])
        if stop:
            for trial, outcome in spare:
                self._fail(trial, outcome.error or "unknown", count=False)
            raise self.failed(f"{_in_a_row(stop)} failed; stopping")

    def _ended_elsewhere(self, numbers: Sequence[int]) -> None:
        self.uncounted += len(numbers)
        if numbers:
            self.notice(f"{trials_text(len(numbers))} ({', '.join(map(str, numbers))}) had been ended as lost by "
                        f"another run while this one trained {'them' if len(numbers) > 1 else 'it'} (no heartbeat "
                        f"seen for over {GRACE_S / 60:g} minutes, or its process not seen running); "
                        f"{'their results are' if len(numbers) > 1 else 'its result is'} not stored: cut short, run "
                        "again by the study")

    def _fail(self, trial: optuna.trial.Trial, tb: str, count: bool = True, gone: list[int] | None = None) -> None:
        """End ``trial`` as failed with ``tb`` (cut short, not counted, unless ``count``). A trial
        another worker ended meanwhile is left as it is: noticed, or added to ``gone``. The
        traceback, the cut-short mark and the state go in one transaction (SQL storages), with
        no fallback that writes them one by one: a worker killed, or a database failing, while
        ending it leaves it running, never running yet marked cut short."""
        attrs = {ATTR_TRACEBACK: tb} if count else {ATTR_TRACEBACK: tb, ATTR_INTERRUPTED: True}
        backend = sql_backend(self.study)
        if backend is not None and not count:
            ended_elsewhere = not fail_if_running(backend, [trial._trial_id], attrs)
        else:
            ended_elsewhere = bool(tell_many(self.study, [(trial, None, optuna.trial.TrialState.FAIL, attrs)]))
        if ended_elsewhere:
            if gone is None:
                self._ended_elsewhere([trial.number])
            else:
                gone.append(trial.number)
            return
        if not count:
            self.uncounted += 1
            return
        self.failures += 1
        self.last_error = last_line(tb) or "unknown"
        self._notify([trial])
        if self.max_failures is not None and self.failures >= self.max_failures:
            raise self.failed(f"{_in_a_row(self.failures)} failed; stopping")

    def failed(self, what: str) -> StudyError:
        return failures_error(what, self.last_error, self.study.study_name, self.url)

    def _notify(self, trials: Sequence[optuna.trial.Trial], only_finished: bool = False) -> None:
        if self.on_trial is None:
            return
        # One read of every trial, these too; each is shown the study as it stood when it was
        # told: the trials told after it (in the same batch) still running.
        now = result_of(self.study, self.settings)
        by_number = {r.number: r for r in now.trials}
        if only_finished:
            trials = [t for t in trials if by_number[t.number].finished]
        for j, trial in enumerate(trials):
            later = {t.number for t in trials[j + 1:]}
            self.on_trial(by_number[trial.number], _with_running(now, later) if later else now)


def _in_a_row(n: int) -> str:
    return "a trial" if n == 1 else f"{n} trials in a row"


def failures_error(what: str, last_error: str, study_name: str, url: str | None) -> StudyError:
    """The error that ends a run whose trials failed: ``what``, the last error, where to read more."""
    return StudyError(f"{what}. Last error: {last_error} "
                      f"(every traceback: {command_line('show', '--json', storage=url, study=study_name)})")


def refuse_all_failed(opened: OpenedStudy) -> None:
    """Raise StudyError when the study has no trial left to run and every one it counts failed:
    a rerun then trains nothing and has nothing but failures to show, not a success a script may
    read (tune() and the Ray workers' driver alike)."""
    counted = [t for t in result_of(opened.study, opened.settings).trials if not t.interrupted]
    if counted and all(t.state == TrialState.FAILED for t in counted):
        raise failures_error(
            f"study {opened.study.study_name!r} has used its budget of {opened.settings.budget} trials and every one "
            "failed; fix the error, then pass a larger --budget to run more, or use a new --study name",
            last_line(counted[-1].error) or "unknown", opened.study.study_name, opened.url)


def _finished_numbers(study: optuna.Study) -> set[int]:
    """The numbers of the study's finished trials, as stored now (empty if it cannot be read)."""
    try:
        return {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    except Exception:  # noqa: BLE001 - unreadable: none counts as stored, so none is left running unseen
        return set()


def _with_running(result: TuneResult, numbers: set[int]) -> TuneResult:
    """``result`` with the trials ``numbers`` shown as a running trial reads back: no value,
    steps, curve, gradient norms or duration yet."""
    trials = tuple(dataclasses.replace(t, state=TrialState.RUNNING, value=None, steps=0, curve=Curve(),
                                       grad_norms=None, duration_s=None) if t.number in numbers else t
                   for t in result.trials)
    order = ranked(trials, result.settings.direction)
    return dataclasses.replace(result, trials=trials, best=order[0] if order else None)


# RUNNING counts too: when several workers share a study (PostgreSQL), a trial another worker
# is training already uses up the budget. A worker killed outright leaves its trials RUNNING
# until a later tune() finds their heartbeat stale and ends them as cut short (heartbeat.py).
_COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL,
            optuna.trial.TrialState.RUNNING)


def _counts(trial: optuna.trial.FrozenTrial) -> bool:
    # A running trial counts even if marked cut short (an older adamtune marked it before ending
    # it): it is no make-up until it ends, as lost once its worker is gone.
    return trial.state in _COUNTED and not (trial.state.is_finished() and trial.user_attrs.get(ATTR_INTERRUPTED))


def over_budget(trials: Sequence[optuna.trial.FrozenTrial], numbers: Sequence[int], budget: int,
                ending: set[int] = frozenset()) -> set[int]:
    """Those of ``numbers`` (trials just asked for) that lie past ``budget``.

    Workers sharing a study each ask for what the budget had left when they looked, and two that
    look at once both ask for it (nothing in Optuna's storage makes the count and the ask one
    step). The trials that count, in the order they were made, take the budget: the first
    ``budget`` are in, and a worker ends unrun those of its own that came after.

    Args:
        trials: all of the study's, read once ``numbers`` were made.
        ending: trials about to end unrun (not counted), though ``trials`` shows them running.
    """
    counted = sorted(t.number for t in trials if _counts(t) and t.number not in ending)
    inside = set(counted[:budget])
    return {n for n in numbers if n not in inside}


def counted_trials(study: optuna.Study) -> int:
    """Trials that use up the budget: finished or being trained; one cut short by Ctrl-C does not."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=_COUNTED) if _counts(t))
