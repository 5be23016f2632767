"""Search spaces: which hyperparameters a study tunes, over which window, on which scale.

Presets follow the Deep Learning Tuning Playbook: the trial budget decides how many
dimensions are tuned (``guide.BUDGET_RULE``), windows come from ``guide`` per optimizer and
task, an untuned dimension takes PyTorch's default unless the task has its own value
(``guide.TASK_UNTUNED``: LLM pretraining's beta2 = 0.95), and every dimension is searched on
the scale that matters -- log for ``lr``,
``weight_decay``, ``eps``, ``max_grad_norm``; log of ``1 - beta`` for ``beta1``, ``beta2``,
``rho`` (Optuna stores it as the parameter ``"1-beta1"``; adamtune shows ``beta1``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Iterable, Mapping
from typing import Any

import optuna

from adamtune import guide
from adamtune.config import ALL_PARAMS, OPTIMIZER_PARAMS, OPTIMIZERS, SCHEDULES, TRAINING_PARAMS, Config, shortest_g
from adamtune.errors import ConfigError, SpaceError

SCALES: tuple[str, ...] = ("log", "linear", "log1m")
_BETA_LIKE = ("beta1", "beta2", "rho")


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One tuned hyperparameter: ``low``..``high`` (in the user's units) on ``scale``."""

    name: str
    low: float
    high: float
    scale: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SpaceError(f"a dimension's name must be a hyperparameter's, such as 'lr', got {self.name!r}")
        if self.scale not in SCALES:
            raise SpaceError(f"scale of {self.name} must be one of {', '.join(SCALES)}, got {self.scale!r}")
        for bound in ("low", "high"):
            value = getattr(self, bound)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise SpaceError(f"{bound} of {self.name} must be a number, got {value!r}")
            try:
                object.__setattr__(self, bound, float(value))  # np.float32 too; stored as JSON
            except OverflowError:  # an int too large for a float
                object.__setattr__(self, bound, math.inf if value > 0 else -math.inf)
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise SpaceError(f"{self.name} range must be finite, got {self.low}:{self.high}")
        if not self.low < self.high:
            raise SpaceError(
                f"`low < high` must hold for {self.name}, got low={self.low:g}, high={self.high:g}"
            )
        if self.scale == "log" and self.low <= 0:
            raise SpaceError(f"a log-scale range of {self.name} needs low > 0, got {self.low:g}")
        if self.scale == "log1m" and self.high >= 1:
            raise SpaceError(f"a log(1-x) range of {self.name} needs high < 1, got {self.high:g}")

    @property
    def optuna_name(self) -> str:
        """The parameter's name in Optuna's storage (``1-beta1`` for a log(1-x) dimension)."""
        return f"1-{self.name}" if self.scale == "log1m" else self.name

    def distribution(self) -> optuna.distributions.FloatDistribution:
        if self.scale == "log1m":
            return optuna.distributions.FloatDistribution(1 - self.high, 1 - self.low, log=True)
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.scale == "log")

    def from_optuna(self, value: float) -> float:
        return 1.0 - value if self.scale == "log1m" else float(value)

    def to_unit(self, value: float) -> float:
        """Position of ``value`` in this window on its own scale: 0 at ``low``, 1 at ``high``."""
        lo, hi, v = self.low, self.high, value
        if self.scale == "log":
            return (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
        if self.scale == "log1m":
            # 1 - x is decreasing in x: low maps to the largest 1 - x.
            return (math.log(1 - lo) - math.log(1 - v)) / (math.log(1 - lo) - math.log(1 - hi))
        return (v - lo) / (hi - lo)

    def from_unit(self, u: float) -> float:
        """Inverse of :meth:`to_unit` (``u`` may lie outside [0, 1] to widen a window)."""
        lo, hi = self.low, self.high
        if self.scale == "log":
            return math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        if self.scale == "log1m":
            return 1 - math.exp(math.log(1 - lo) + u * (math.log(1 - hi) - math.log(1 - lo)))
        return lo + u * (hi - lo)

    def describe(self) -> str:
        scale = {"log": "log", "linear": "linear", "log1m": "log of 1-x"}[self.scale]
        return f"{self.name} {self._text(self.low)}..{self._text(self.high)} ({scale})"

    @staticmethod
    def _text(x: float) -> str:
        """The shortest ``%g`` text that reads back as ``x`` itself (1e-05, 0.3, 0.9999): a
        bound printed rounded was another window (a linear beta2 0.999..0.9999 read 0.999..1)."""
        return shortest_g(x, lambda y: y == x)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The tuned dimensions and the fixed values of one study; everything else is PyTorch's default.

    A preset's fixed values are the task's own for dimensions it does not tune
    (``guide.untuned_values``); ``--set NAME=VALUE`` adds more.
    """

    optimizer: str
    dimensions: tuple[Dimension, ...]
    fixed: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        check_optimizer(self.optimizer)
        try:
            dimensions, fixed = tuple(self.dimensions), tuple(self.fixed)
        except TypeError:
            raise SpaceError(f"a SearchSpace takes a tuple of Dimension and one of (name, value) pairs, got "
                             f"{type(self.dimensions).__name__} and {type(self.fixed).__name__}") from None
        for d in dimensions:
            if not isinstance(d, Dimension):
                raise SpaceError(f"a SearchSpace's dimensions must be Dimension objects, got {type(d).__name__} {d!r}"
                                 + (" ('NAME=WINDOW' strings go to tune(space=[...]))" if isinstance(d, str) else ""))
        if isinstance(self.fixed, Mapping) or not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in fixed):
            raise SpaceError(f"a SearchSpace's fixed values must be (name, value) pairs, such as (('beta1', 0.9),), "
                             f"got {self.fixed!r}")
        # a list given stays equal to the same tuple (and hashable)
        object.__setattr__(self, "dimensions", dimensions)
        object.__setattr__(self, "fixed", tuple(tuple(p) for p in fixed))
        names = [d.name for d in self.dimensions]
        if len(set(names)) != len(names):
            raise SpaceError(f"a dimension is listed twice: {names}")
        overlap = set(names) & {k for k, _ in self.fixed}
        if overlap:
            raise SpaceError(f"{sorted(overlap)[0]} cannot be both tuned and fixed")
        for name in names + [k for k, _ in self.fixed]:
            _check_name(self.optimizer, name)
        # Fail now, not in trial 0, if the window or a fixed value is invalid for Config.
        for d in self.dimensions:
            for v in (d.low, d.high):
                self.config_with({d.name: v})
        if not self.dimensions:
            self.config_with({})  # the fixed values alone

    @property
    def tuned(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dimensions)

    def dimension(self, name: str) -> Dimension:
        for d in self.dimensions:
            if d.name == name:
                return d
        raise KeyError(name)

    def config_with(self, params: Mapping[str, Any]) -> Config:
        """The Config for the given tuned values, the fixed values and PyTorch's defaults."""
        values = dict(self.fixed)
        values.update(params)
        return Config(optimizer=self.optimizer, **values)

    def distributions(self) -> dict[str, optuna.distributions.FloatDistribution]:
        return {d.optuna_name: d.distribution() for d in self.dimensions}

    def suggest(self, trial: optuna.trial.BaseTrial) -> Config:
        """Ask the trial for every tuned dimension and return the resulting Config."""
        return self.config_with(
            {d.name: d.from_optuna(trial.suggest_float(d.optuna_name, *_bounds(d), log=d.scale != "linear"))
             for d in self.dimensions}
        )

    def params_from_optuna(self, optuna_params: Mapping[str, float]) -> dict[str, float]:
        """Optuna's stored parameters -> adamtune names (``1-beta1`` -> ``beta1``)."""
        out = {}
        for d in self.dimensions:
            if d.optuna_name in optuna_params:
                out[d.name] = d.from_optuna(optuna_params[d.optuna_name])
        return out

    def describe(self) -> str:
        return ", ".join(d.describe() for d in self.dimensions)

    def to_dict(self) -> dict:
        return {
            "optimizer": self.optimizer,
            "dimensions": [dataclasses.asdict(d) for d in self.dimensions],
            "fixed": [list(kv) for kv in self.fixed],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> SearchSpace:
        return cls(
            optimizer=data["optimizer"],
            dimensions=tuple(Dimension(**d) for d in data["dimensions"]),
            fixed=tuple((k, v) for k, v in data.get("fixed", ())),
        )


def _bounds(d: Dimension) -> tuple[float, float]:
    dist = d.distribution()
    return dist.low, dist.high


def _check_name(optimizer: str, name: str) -> None:
    known = OPTIMIZER_PARAMS[optimizer] + TRAINING_PARAMS + ("schedule",)
    if name not in known:
        where = f"is not a hyperparameter of {optimizer}" if name in ALL_PARAMS else "is not a hyperparameter"
        raise SpaceError(f"{name} {where}; choose from {', '.join(known)}")


def check_optimizer(optimizer: Any) -> None:
    if optimizer not in OPTIMIZERS:
        raise SpaceError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")


def check_task(task: Any) -> None:
    if task not in guide.TASKS:
        raise SpaceError(f"task must be one of {', '.join(guide.TASKS)}, got {task!r}")


def preset(optimizer: str = "adamw", task: str = "generic", budget: int = 16) -> SearchSpace:
    """The playbook preset: windows for ``optimizer`` x ``task``, dimensions by ``budget``.

    A dimension the budget does not tune is fixed at the task's value where the guide has one
    (``guide.untuned_values``: beta2 = 0.95 for ``llm``), else left to PyTorch's default.

    Raises:
        SpaceError: unknown optimizer or task, or budget < 1.
    """
    check_optimizer(optimizer)
    check_task(task)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise SpaceError(f"budget must be a whole number of trials >= 1, got {budget!r}")
    tuned = guide.tuned_for_budget(optimizer, budget)
    dims = tuple(Dimension(name, *guide.search_window(optimizer, task, name)) for name in tuned)
    fixed = tuple(sorted((k, v) for k, v in guide.untuned_values(optimizer, task).items() if k not in tuned))
    return SearchSpace(optimizer=optimizer, dimensions=dims, fixed=fixed)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``--set`` argument.

    ``NAME=LOW:HIGH[:log|:linear|:log1m]`` tunes NAME over a window; ``NAME=VALUE`` fixes it
    (``max_grad_norm=none`` turns clipping off; ``schedule=cosine`` picks the schedule).

    Returns:
        ``(name, Dimension)`` for a window, ``(name, value)`` for a fixed value.
    """
    if "=" not in text:
        raise SpaceError(f"--set needs NAME=LOW:HIGH[:log|:linear|:log1m] or NAME=VALUE, got {text!r}")
    name, _, rhs = (s.strip() for s in text.partition("="))
    if name not in ALL_PARAMS and name != "schedule":
        raise SpaceError(f"--set {name}: unknown hyperparameter; choose from {', '.join(ALL_PARAMS + ('schedule',))}")
    if name == "schedule":
        if rhs not in SCHEDULES:
            raise SpaceError(f"--set schedule must be one of {', '.join(SCHEDULES)}, got {rhs!r}")
        return name, rhs
    parts = rhs.split(":")
    if len(parts) == 1:
        if name == "max_grad_norm" and rhs.lower() in ("none", "off"):
            return name, None
        return name, _number(name, rhs)
    if len(parts) not in (2, 3):
        raise SpaceError(f"--set {name}: expected LOW:HIGH[:log|:linear|:log1m], got {rhs!r}")
    low, high = _number(name, parts[0]), _number(name, parts[1])
    scale = parts[2] if len(parts) == 3 else default_scale(name)
    if scale not in SCALES:
        raise SpaceError(f"--set {name}: scale must be log, linear or log1m, got {scale!r}")
    if scale == "log1m" and name not in _BETA_LIKE:
        raise SpaceError(f"--set {name}: the log1m scale (log of 1-x) is for {', '.join(_BETA_LIKE)}; "
                         f"use log or linear")
    return name, Dimension(name, low, high, scale)


def default_scale(name: str) -> str:
    """The scale ``--set NAME=LOW:HIGH`` uses when none is given."""
    return "log1m" if name in _BETA_LIKE else ("linear" if name == "warmup" else "log")


# A number as written in ASCII: 3e-4, .5, 1e400 (infinite: refused by the range checks), nan;
# not what float() also takes (1_000, Unicode digits, surrounding Unicode spaces).
_NUMBER = re.compile(r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)", re.IGNORECASE)


def _number(name: str, text: str) -> float:
    if _NUMBER.fullmatch(text.strip(" \t")) is None:
        raise SpaceError(f"--set {name}: {text!r} is not a number")
    return float(text)


def with_overrides(space: SearchSpace, overrides: Iterable[str | tuple[str, Any]]) -> SearchSpace:
    """Apply ``--set`` overrides: a window replaces or adds a dimension, a value fixes one.

    Raises:
        SpaceError / ConfigError: malformed text, a name this optimizer does not use, an
            empty or invalid window (e.g. ``lr=1e-2:1e-5``, ``beta1=0.5:1.5``).
    """
    dims = {d.name: d for d in space.dimensions}
    fixed = dict(space.fixed)
    seen: set[str] = set()
    for item in overrides:
        name, value = parse_override(item) if isinstance(item, str) else item
        if name in seen:
            raise SpaceError(f"--set {name} is given twice; give each hyperparameter once")
        seen.add(name)
        _check_name(space.optimizer, name)
        if isinstance(value, Dimension):
            fixed.pop(name, None)
            dims[name] = value
        else:
            dims.pop(name, None)
            fixed[name] = value
    try:
        return SearchSpace(space.optimizer, tuple(dims.values()), tuple(sorted(fixed.items())))
    except ConfigError as e:
        raise SpaceError(f"--set: {e}") from None
