"""Frozen records of finished (or running) trials, read back from an Optuna study.

Optuna knows COMPLETE, PRUNED, FAIL, RUNNING and WAITING. adamtune adds ``diverged``: a
trial whose loss blew up is told to Optuna as COMPLETE with an infeasible value (+inf when
minimising, -inf when maximising) so samplers learn to avoid its region, and is marked with
the trial attribute ``adamtune_state = "diverged"`` so no table ever shows it as a result.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import re
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from adamtune.errors import StudyError, first_line
from adamtune.usercode import where_in

# Trial user attributes written by the engines (the names are a storage format: keep them).
ATTR_STATE = "adamtune_state"
ATTR_CURVE = "curve"
ATTR_GRAD_NORMS = "grad_norms"
ATTR_TRACEBACK = "traceback"
ATTR_STEPS = "steps"
ATTR_CONFIG = "config"
ATTR_DIVERGED_AT = "diverged_at_step"
ATTR_ENGINE = "engine"
ATTR_INTERRUPTED = "interrupted"
ATTR_RETRY_OF = "retry_of"
ATTR_WORKER = "worker"
ATTR_PROCESS = "process"  # heartbeat.this_process() of the worker: tells, on its machine, whether it still runs


class TrialState(str, enum.Enum):
    """How a trial ended: ``complete`` (trained to the end), ``pruned`` (stopped by the pruner),
    ``diverged`` (its loss turned NaN/inf or past the workload's divergence_factor), ``failed``
    (the user's code raised; or cut short by Ctrl-C, SIGTERM or a lost worker, then not counted
    in the budget), ``running``, ``waiting`` (queued to run again)."""

    COMPLETE = "complete"
    PRUNED = "pruned"
    DIVERGED = "diverged"
    FAILED = "failed"
    RUNNING = "running"
    WAITING = "waiting"


@dataclasses.dataclass(frozen=True)
class Curve:
    """Metrics per evaluation: ``steps[i]`` is the training step of evaluation i.

    ``metrics`` maps a name (``val_loss``, ``val_accuracy``, ``train_loss``, ...) to a tuple
    of the same length as ``steps``; a value may be NaN where it was not finite.
    """

    steps: tuple[int, ...] = ()
    metrics: Mapping[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, list]:
        return {"step": list(self.steps), **{k: list(v) for k, v in self.metrics.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Curve:
        if not data:
            return cls()
        data = dict(data)
        steps = tuple(int(s) for s in data.pop("step", ()))
        return cls(steps, {k: tuple(_float(x) for x in v) for k, v in data.items()})


def sample_indices(count: int, n: int) -> list[int]:
    """``n`` indices evenly spaced over ``range(count)``, first and last included: the steps
    whose gradient norms a trial keeps as its samples."""
    if n < 2:
        return [count - 1] * n
    return [round(i * (count - 1) / (n - 1)) for i in range(n)]


@dataclasses.dataclass(frozen=True)
class GradNorms:
    """Summary of the unclipped global gradient norms a trial saw (one per step)."""

    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float
    clipped_fraction: float  # fraction of steps the trial's own max_grad_norm clipped (0 if off)
    samples: tuple[float, ...] = ()  # evenly spaced in training steps, at most a few hundred

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["samples"] = list(self.samples)
        return d

    def sample_steps(self) -> list[int]:
        """The training step (1-based) of each of ``samples``: evenly spaced over ``count`` steps."""
        return [1 + i for i in sample_indices(self.count, len(self.samples))]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> GradNorms | None:
        if not data:
            return None
        d = dict(data)
        d["samples"] = tuple(_float(x) for x in d.get("samples", ()))
        d = {k: d[k] for k in (f.name for f in dataclasses.fields(cls)) if k in d}
        for k in ("mean", "p50", "p90", "p99", "max", "clipped_fraction"):  # a string here is not a number
            if k in d:
                d[k] = _float(d[k])
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """One trial as adamtune reports it.

    Attributes:
        number: Optuna's trial number.
        state: complete, pruned, diverged, failed, running or waiting.
        params: the tuned hyperparameters under adamtune's names (``beta1``, not ``1-beta1``).
        config: the full optimizer configuration the trial ran with (None if never started).
        value: the objective (None unless complete or pruned with a last reported value).
        steps: training steps run.
        curve: metrics per evaluation.
        grad_norms: summary of unclipped gradient norms (None if the trial ran no step).
        error: the traceback of a failed trial.
        interrupted: a failed trial cut short by Ctrl-C, or never run because the study
            stopped; it does not use up the budget (a rerun makes up for it).
        retry_of: for a trial run again in place of trials cut short, the point of the
            search they stood for (``retries.py``; trial i is point i until a retry is made).
        worker: the process that trained it, ``HOST pid N`` (:func:`this_worker`); several
            workers may share a study.
    """

    number: int
    state: TrialState
    params: Mapping[str, float]
    config: Mapping[str, Any] | None
    value: float | None
    steps: int
    curve: Curve
    grad_norms: GradNorms | None
    error: str | None = None
    duration_s: float | None = None
    engine: str | None = None
    interrupted: bool = False
    retry_of: int | None = None
    worker: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.DIVERGED, TrialState.FAILED)


def last_line(error: str | None) -> str | None:
    """The last non-empty line of a traceback (the exception and its message), with the
    exception's class as the user wrote it (``adamtune.errors.WorkloadError: ...`` ->
    ``WorkloadError: ...``) and the line of the user's code it came from
    (:func:`adamtune.usercode.where_in`: ``... (model.py, line 29)``), or None."""
    lines = (error or "").strip().splitlines()
    if not lines:
        return None
    line = re.sub(r"^(?:[A-Za-z_<][\w<>]*\.)+(?=[A-Za-z_]\w*: )", "", lines[-1].strip())
    at = where_in(error)
    return line if line.endswith(at) else line + at


def this_worker() -> str:
    """This process as a trial's ``worker`` attribute: ``HOST pid N``."""
    return f"{socket.gethostname()} pid {os.getpid()}"


def _float(x: Any) -> float:
    return float("nan") if x is None else float(x)


def state_of(trial: optuna.trial.FrozenTrial) -> TrialState:
    if trial.user_attrs.get(ATTR_STATE) == TrialState.DIVERGED.value:
        return TrialState.DIVERGED
    return {
        optuna.trial.TrialState.COMPLETE: TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED: TrialState.PRUNED,
        optuna.trial.TrialState.FAIL: TrialState.FAILED,
        optuna.trial.TrialState.RUNNING: TrialState.RUNNING,
        optuna.trial.TrialState.WAITING: TrialState.WAITING,
    }[trial.state]


def record_from_optuna(trial: optuna.trial.FrozenTrial, params: Mapping[str, float],
                       metric: str | None = None) -> TrialRecord:
    """Build a TrialRecord; ``params`` are the trial's tuned values under adamtune's names.

    A trial still in training, or one cut short or failed before its end, has no stored curve or
    step count yet: its evaluations so far (Optuna's intermediate values, of the objective
    ``metric``) stand for them, so another terminal sees how far it got.

    Raises:
        StudyError: an attribute adamtune stores is not what it writes (the database was
            changed by something else); the message names the trial and the attribute.
    """
    state = state_of(trial)
    value: float | None = None
    if state == TrialState.COMPLETE and trial.value is not None and math.isfinite(trial.value):
        value = float(trial.value)
    elif state == TrialState.PRUNED and trial.intermediate_values:
        last = trial.intermediate_values[max(trial.intermediate_values)]
        value = float(last) if math.isfinite(last) else None
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    curve = _stored(trial, ATTR_CURVE, lambda v: Curve.from_dict(_mapping(v)))
    steps = _stored(trial, ATTR_STEPS, _count)
    so_far = sorted(trial.intermediate_values.items())
    if curve is None and so_far and metric is not None:
        curve = Curve(tuple(int(k) for k, _ in so_far), {metric: tuple(_float(v) for _, v in so_far)})
    if steps is None and so_far and state in (TrialState.RUNNING, TrialState.FAILED):
        steps = int(so_far[-1][0])
    return TrialRecord(
        number=trial.number,
        state=state,
        params=dict(params),
        config=_stored(trial, ATTR_CONFIG, _mapping),
        value=value,
        steps=steps or 0,
        curve=curve or Curve(),
        grad_norms=_stored(trial, ATTR_GRAD_NORMS, lambda v: GradNorms.from_dict(_mapping(v))),
        error=_stored(trial, ATTR_TRACEBACK, _text),
        duration_s=duration,
        engine=_stored(trial, ATTR_ENGINE, _text),
        interrupted=state == TrialState.FAILED and bool(trial.user_attrs.get(ATTR_INTERRUPTED)),
        retry_of=_stored(trial, ATTR_RETRY_OF, _count),
        worker=_stored(trial, ATTR_WORKER, _text),
    )


def _stored(trial: optuna.trial.FrozenTrial, key: str, read: Any, default: Any = None) -> Any:
    """``read(value)`` of the trial's attribute ``key`` (None stays None), or a StudyError naming
    the trial and the attribute."""
    value = trial.user_attrs.get(key, default)
    if value is None:
        return None
    try:
        return read(value)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        text = repr(value)
        got = text if len(text) <= 60 else text[:57] + "..."
        raise StudyError(f"trial {trial.number} has a malformed {key!r} attribute ({malformed_reason(e)}, got {got})") from None


def malformed_reason(e: BaseException) -> str:
    """What is wrong with a stored value, from the error reading it raised, in a few words."""
    if isinstance(e, KeyError):
        return f"no {e.args[0]!r}" if e.args else "a key is missing"
    return first_line(e)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("a whole number >= 0 must be stored")
    return value


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError("a JSON object must be stored")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a string must be stored")
    return value


def completed(trials: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Trials that trained to the end with a finite objective (diverged ones are not complete)."""
    return [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)]


def oriented(value: float, direction: str) -> float:
    """``value`` turned so that lower is better whatever the direction."""
    return value if direction == "minimize" else -value


def ranked(trials: Sequence[TrialRecord], direction: str) -> list[TrialRecord]:
    """Completed trials, best first (ties: the earlier trial first)."""
    return sorted(completed(trials), key=lambda t: (oriented(t.value, direction), t.number))


def trials_text(n: int) -> str:
    """``"1 trial"``, ``"3 trials"``."""
    return f"{n} trial{'' if n == 1 else 's'}"
