"""The optimizer configuration a trial runs with, and how it becomes real torch.optim objects.

``Config`` is the one record every layer passes around: the search space samples it, the
engines train with it, storage keeps its fields under the same names, and the report prints
it as a ready-to-paste ``torch.optim`` line.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Union

from adamtune.errors import ConfigError, integral

# torch is imported where it is used: a Config, its checks and its snippet need none, so
# commands that only read a study (`adamtune show`, `best`) do not wait for torch's import.
if TYPE_CHECKING:
    import torch
    from torch import nn


OPTIMIZERS: tuple[str, ...] = ("adamw", "adam", "adadelta")
SCHEDULES: tuple[str, ...] = ("constant", "cosine")

# PyTorch's own defaults per optimizer: an untuned dimension takes these.
TORCH_DEFAULTS: dict[str, dict[str, float]] = {
    "adamw": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
    "adam": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
    "adadelta": {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0},
}

# The hyperparameters each optimizer reads; the others in Config are ignored by it.
OPTIMIZER_PARAMS: dict[str, tuple[str, ...]] = {
    "adamw": ("lr", "beta1", "beta2", "eps", "weight_decay"),
    "adam": ("lr", "beta1", "beta2", "eps", "weight_decay"),
    "adadelta": ("lr", "rho", "eps", "weight_decay"),
}
TRAINING_PARAMS: tuple[str, ...] = ("max_grad_norm", "warmup")
ALL_PARAMS: tuple[str, ...] = (
    "lr", "beta1", "beta2", "eps", "weight_decay", "rho", "max_grad_norm", "warmup",
)

_TORCH_CLASS = {"adamw": "AdamW", "adam": "Adam", "adadelta": "Adadelta"}


@dataclasses.dataclass(frozen=True)
class Config:
    """One optimizer configuration, validated on construction.

    ``lr``, ``eps`` and ``weight_decay`` left as ``None`` take PyTorch's default for
    ``optimizer`` (e.g. AdamW's ``weight_decay=0.01``, Adadelta's ``lr=1.0`` and ``eps=1e-6``),
    filled in when the Config is made: ``replace(optimizer=...)`` keeps them as they are, so
    give them again (or None) when the other optimizer's defaults are meant.

    Attributes:
        optimizer: ``"adamw"``, ``"adam"`` or ``"adadelta"``.
        lr: learning rate (peak value when a warmup or schedule is used).
        beta1, beta2: Adam's moment decay rates, each in [0, 1).
        eps: term added to the denominator, > 0 (torch.optim accepts 0, but then a coordinate
            whose gradients have all been 0 gets 0/0 = NaN).
        weight_decay: AdamW: decoupled decay in PyTorch's lr-coupled convention
            (theta *= 1 - lr * weight_decay); Adam/Adadelta: L2 added to the gradient.
        rho: Adadelta's running-average decay, in [0, 1].
        max_grad_norm: global gradient-norm clipping threshold; ``None`` = off.
        warmup: fraction of the training steps over which lr rises linearly from ~0, in [0, 1).
        schedule: ``"constant"`` or ``"cosine"`` after warmup. Cosine multiplies lr by
            ½(1 + cos(π·t/T)), t the steps since the warmup and T their number: nearly 0 at the
            last step (t = T − 1: ½(1 + cos(π(T − 1)/T))), never exactly 0.
    """

    optimizer: str = "adamw"
    lr: float | None = None
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float | None = None
    weight_decay: float | None = None
    rho: float = 0.9
    max_grad_norm: float | None = None
    warmup: float = 0.0
    schedule: str = "constant"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        defaults = TORCH_DEFAULTS[self.optimizer]
        for name in ("lr", "eps", "weight_decay"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, defaults[name])
        for name in ("lr", "beta1", "beta2", "eps", "weight_decay", "rho", "warmup"):
            object.__setattr__(self, name, _number(name, getattr(self, name)))
        _check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _check(0 <= self.beta1 < 1, f"beta1 must be in [0, 1), got {self.beta1}")
        _check(0 <= self.beta2 < 1, f"beta2 must be in [0, 1), got {self.beta2}")
        # torch.optim takes eps=0 (Adadelta's check is eps >= 0, Adam's too), but a coordinate whose
        # gradients have all been 0 (an input pixel that is always 0) then steps by 0/0.
        _check(self.eps > 0, f"eps must be > 0, got {self.eps}" + (
            ": with eps=0 a coordinate whose gradient has been exactly 0 gets 0/0 = NaN (torch.optim accepts it, "
            "but cannot train with it)" if self.eps == 0 else ""))
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _check(0 <= self.rho <= 1, f"rho must be in [0, 1], got {self.rho}")
        if self.max_grad_norm is not None:
            m = self.max_grad_norm
            _check(_real(m) and _finite(m) and m > 0,
                   f"max_grad_norm must be > 0 (or None for no clipping: none or off in --set), got {m!r}")
            object.__setattr__(self, "max_grad_norm", float(m))
        _check(0 <= self.warmup < 1, f"warmup must be a fraction of the steps in [0, 1), got {self.warmup}")
        _check(
            self.schedule in SCHEDULES,
            f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}",
        )

    def params(self) -> dict[str, float | str | None]:
        """The hyperparameters this optimizer actually uses, plus clipping, warmup and schedule:
        ``Config.from_params(c.optimizer, c.params()) == c`` for the fields it reads."""
        out: dict[str, float | str | None] = {n: getattr(self, n) for n in OPTIMIZER_PARAMS[self.optimizer]}
        out["max_grad_norm"] = self.max_grad_norm
        out["warmup"] = self.warmup
        out["schedule"] = self.schedule
        return out

    def replace(self, **changes: object) -> Config:
        """A copy with some fields changed (validated again); the others, lr, eps and
        weight_decay included, are kept as they are, whatever the optimizer becomes."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_params(cls, optimizer: str, params: Mapping[str, object], **extra: object) -> Config:
        """Build from a mapping that uses adamtune's names (those of :meth:`params`); unknown
        names raise ConfigError."""
        if not isinstance(params, Mapping):
            raise ConfigError(f"Config.from_params needs a mapping of hyperparameter names to values, such as "
                              f"{{'lr': 1e-3}}, got {type(params).__name__} {params!r}")
        unknown = sorted(set(params) - set(ALL_PARAMS) - {"schedule"})
        if unknown:
            raise ConfigError(
                f"unknown hyperparameter {unknown[0]!r}; known: {', '.join(ALL_PARAMS)}, schedule"
            )
        return cls(optimizer=optimizer, **dict(params), **extra)  # type: ignore[arg-type]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _real(x: object) -> bool:
    """Whether ``x`` is a real number: int, float, or numpy's (np.float32, np.int64); not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _finite(x: numbers.Real) -> bool:
    try:
        return math.isfinite(x)
    except OverflowError:  # an int too large for a float
        return False


def _number(name: str, value: object) -> float:
    """``value`` of hyperparameter ``name`` as a finite float, or ConfigError."""
    if not _real(value):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not _finite(value):
        shown = value if isinstance(value, float) else f"an integer of {len(str(abs(int(value))))} digits"
        raise ConfigError(f"{name} must be finite, got {shown}")
    return float(value)


def _config(function: str, config: object) -> Config:
    """``config``, refused in one line unless it is a Config."""
    if not isinstance(config, Config):
        raise ConfigError(f"{function} needs an adamtune.Config, got {type(config).__name__} {config!r}"
                          + (" (Config.from_params(optimizer, params) makes one from a dict)"
                             if isinstance(config, Mapping) else ""))
    return config


NamedParams = Iterable[tuple[str, "nn.Parameter"]]


def _named(model_or_named_params: Union[nn.Module, NamedParams]) -> list[tuple[str, nn.Parameter]]:
    from torch import nn

    if isinstance(model_or_named_params, nn.Module):
        items = list(model_or_named_params.named_parameters())
    else:
        wrong = ConfigError(f"make_optimizer needs a module or an iterable of (name, parameter) pairs, got "
                            f"{type(model_or_named_params).__name__}")
        try:
            items = list(model_or_named_params)
        except TypeError:
            raise wrong from None
        if items and not (isinstance(items[0], tuple) and len(items[0]) == 2):
            raise wrong
    return [(n, p) for n, p in items if p.requires_grad]


def param_groups(model_or_named_params: Union[nn.Module, NamedParams], weight_decay: float) -> list[dict]:
    """Split parameters into a decayed and a non-decayed group.

    Weight decay goes only to tensors with ``dim >= 2`` (weight matrices and conv kernels);
    biases, LayerNorm/BatchNorm weights and other vectors get 0, as nanoGPT and most
    published recipes do: decaying a normalisation gain towards 0 fights the normalisation.
    """
    named = _named(model_or_named_params)
    if not named:
        raise ConfigError("make_optimizer got no trainable parameters")
    decay = [p for _, p in named if p.dim() >= 2]
    no_decay = [p for _, p in named if p.dim() < 2]
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, "name": "decay"})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
    return groups


def fused_adam_unavailable(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why torch's fused Adam kernel (``Adam(fused=True)``) cannot run here (None if it can)."""
    import torch

    if device.type not in ("cpu", "cuda"):
        return f"torch has no fused Adam kernel for {device.type} tensors"
    if device.type == "cpu" and torch.__version__ < (2, 4):  # a TorchVersion compares with tuples
        return f"torch {torch.__version__} has no fused Adam kernel for CPU (needs torch >= 2.4)"
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        return f"torch's fused Adam kernel does not take {dtype}"
    return None


def make_optimizer(model_or_named_params: Union[nn.Module, NamedParams], config: Config) -> torch.optim.Optimizer:
    """The real ``torch.optim`` optimizer for ``config``, with two parameter groups.

    Group ``"decay"`` (tensors with dim >= 2) gets ``config.weight_decay``; group
    ``"no_decay"`` (biases and normalisation weights) gets 0. Adam and AdamW use torch's
    fused kernel (``fused=True``: one pass over memory per step, the same numbers as the
    default implementation up to rounding) wherever it can run, as the batched engine does.

    Raises:
        ConfigError: no trainable parameters, a malformed parameter iterable, or ``config`` not a
            Config.
    """
    import torch

    config = _config("make_optimizer", config)
    groups = param_groups(model_or_named_params, config.weight_decay)
    if config.optimizer == "adadelta":
        return torch.optim.Adadelta(groups, lr=config.lr, rho=config.rho, eps=config.eps)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    params = [p for g in groups for p in g["params"]]
    fused = all(fused_adam_unavailable(p.device, p.dtype) is None for p in params) and len(
        {(p.device, p.dtype) for p in params}) == 1
    return cls(groups, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps,
               fused=fused or None)


def lr_multiplier(config: Config, total_steps: int):
    """Return ``f(step) -> multiplier of lr`` for linear warmup then constant or cosine decay.

    Step 0 is the first optimizer step; warmup reaches the full lr at its last step, so no
    step ever runs with lr = 0.
    """
    warmup_steps = int(round(config.warmup * total_steps))
    decay_steps = max(1, total_steps - warmup_steps)

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if config.schedule == "cosine":
            progress = min(1.0, (step - warmup_steps) / decay_steps)
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return multiplier


def make_scheduler(optimizer: torch.optim.Optimizer, config: Config, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` giving warmup (fraction ``config.warmup``) then ``config.schedule``.

    Call ``scheduler.step()`` once after every ``optimizer.step()``.

    Raises:
        ConfigError: ``optimizer`` is not a torch optimizer, ``config`` not a Config, or
            ``total_steps`` not a whole number >= 1.
    """
    import torch

    config = _config("make_scheduler", config)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(f"make_scheduler needs a torch.optim optimizer (make_optimizer makes one), got "
                          f"{type(optimizer).__name__} {optimizer!r}")
    steps = integral(total_steps)
    if steps is None or steps < 1:
        raise ConfigError(f"total_steps must be a whole number >= 1, got {total_steps!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(config, steps))


def clip_gradients(model_or_params: Union[nn.Module, Iterable[torch.Tensor]], config: Config) -> float:
    """Clip gradients to ``config.max_grad_norm`` (if set) and return the *unclipped* global norm.

    The norm is one L2 norm over all gradients, as ``torch.nn.utils.clip_grad_norm_`` computes
    it; the engines log it so the report can recommend a clipping threshold.

    Raises:
        ConfigError: ``config`` is not a Config, or ``model_or_params`` neither a module nor an
            iterable of parameters.
    """
    import torch
    from torch import nn

    config = _config("clip_gradients", config)
    params = model_or_params.parameters() if isinstance(model_or_params, nn.Module) else model_or_params
    try:
        grads_params = [p for p in params if p.grad is not None]
    except (TypeError, AttributeError):
        raise ConfigError(f"clip_gradients needs a module or an iterable of parameters, got "
                          f"{type(model_or_params).__name__}") from None
    if config.max_grad_norm is None:
        if not grads_params:
            return 0.0
        return float(torch.nn.utils.get_total_norm([p.grad for p in grads_params]))
    return float(torch.nn.utils.clip_grad_norm_(grads_params, config.max_grad_norm))


def shortest_g(x: float, close: Callable[[float], bool], first: int = 1) -> str:
    """The shortest ``%g`` text of ``x`` (from ``first`` significant digits) whose value is
    ``close``; ``repr(x)`` if none is. A whole number below a million reads as one (10, not 1e+01)."""
    for digits in range(first, 18):
        text = f"{x:.{digits}g}"
        if close(float(text)):
            # %g writes 10 as 1e+01 whenever its exponent reaches the digits asked for; such a
            # value is whole
            return f"{float(text):.0f}" if "e+" in text and abs(float(text)) < 1e6 else text
    return repr(x)


def _fmt(x: float) -> str:
    """``x`` in the fewest significant figures within 0.005% of it (0.001, 0.0003562, 0.0035625)."""
    return shortest_g(x, lambda y: abs(y - x) <= 5e-5 * abs(x))


def _fmt_fraction(x: float) -> str:
    """A fraction in [0, 1) as :func:`_fmt` writes it, but never 1: a warmup of 0.999996 is not
    1, which Config refuses (0.99999 is within 0.005% too)."""
    return shortest_g(x, lambda y: y < 1 and abs(y - x) <= 5e-5 * abs(x))


def _fmt_beta(x: float) -> str:
    """A beta or rho with ``1 - x`` within 0.005% (4-5 significant figures): what sets its
    averaging window (0.9997, not 1: 1 would be refused by torch, and 0.999 is a 70% shorter window,
    1,000 steps against 3,333)."""
    return short_beta(x, 5e-5)


def short_beta(x: float, rel: float) -> str:
    """The shortest text of a beta-like ``x`` < 1 whose ``1 - x`` is within ``rel`` of its own
    (never 1: that is a different averaging window); ``repr(x)`` for ``x >= 1``."""
    if x >= 1:
        return repr(x)
    return shortest_g(x, lambda y: y < 1 and abs((1 - y) - (1 - x)) <= rel * (1 - x))


def python_snippet(config: Config, model_name: str = "model", total_steps: int | None = None,
                   steps_reported: bool = False) -> str:
    """Ready-to-paste PyTorch code that builds the optimizer adamtune trained ``config`` with.

    Numbers are printed in the fewest significant figures within 0.005% of the trial's values
    (betas and rho: ``1 - beta`` within 0.005%), so the line reads well and trains as the trial did.
    With a warmup or a schedule, the code defines ``total_steps`` (``total_steps``: the steps the
    trial trained, of which warmup and the decay are fractions; ``steps_reported``: it is only the
    last step an objective function reported, which the code says) and imports adamtune for the scheduler.
    """
    if not isinstance(config, Config):
        raise ConfigError(f"python_snippet() needs a Config, got {config!r}"
                          + (" (a study with no completed trial has no best_config)" if config is None else ""))
    cls = _TORCH_CLASS[config.optimizer]
    m = model_name
    if config.weight_decay == 0:  # no decay anywhere: one group, as most training scripts have it
        lines = []
        groups = f"{m}.parameters()"
    else:
        lines = [
            "# weight decay on tensors of 2+ dims (weight matrices, embeddings); 1-D ones (biases, norm weights) get 0",
            f"decay = [p for p in {m}.parameters() if p.requires_grad and p.dim() >= 2]",
            f"no_decay = [p for p in {m}.parameters() if p.requires_grad and p.dim() < 2]",
        ]
        groups = (
            f'[{{"params": decay, "weight_decay": {_fmt(config.weight_decay)}}}, '
            f'{{"params": no_decay, "weight_decay": 0.0}}]'
        )
    if config.optimizer == "adadelta":
        args = f"lr={_fmt(config.lr)}, rho={_fmt_beta(config.rho)}, eps={_fmt(config.eps)}"
    else:
        args = (
            f"lr={_fmt(config.lr)}, betas=({_fmt_beta(config.beta1)}, {_fmt_beta(config.beta2)}), "
            f"eps={_fmt(config.eps)}"
        )
    if config.weight_decay == 0 and config.optimizer == "adamw":
        args += ", weight_decay=0.0"  # torch's AdamW decays by 0.01 unless told otherwise
    lines.append(f"optimizer = torch.optim.{cls}({groups}, {args})")
    if config.warmup > 0 or config.schedule != "constant":
        steps = "..." if total_steps is None else str(total_steps)
        lines.append("import adamtune")
        said = ("set it to the steps your loop trains" if total_steps is None
                else "the last step the trial reported: set the steps your loop trains" if steps_reported
                else "the steps the trial trained")
        lines.append(f"total_steps = {steps}  # {said}: warmup and the schedule are fractions of them")
        lines.append(
            f"scheduler = adamtune.make_scheduler(optimizer, adamtune.Config("
            f"optimizer={config.optimizer!r}, lr={_fmt(config.lr)}, warmup={_fmt_fraction(config.warmup)}, "
            f"schedule={config.schedule!r}), total_steps)  # scheduler.step() after each step"
        )
    if config.max_grad_norm is not None:
        lines.append(
            f"torch.nn.utils.clip_grad_norm_({m}.parameters(), max_norm={_fmt(config.max_grad_norm)})"
            "  # after backward(), before optimizer.step()"
        )
    return "\n".join(lines)
