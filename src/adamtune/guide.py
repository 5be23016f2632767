"""What adamtune knows about the Adam family, as data: one source for presets, `explain` and the report.

Search windows deliberately span well beyond the typical values, so that a boundary check can
tell the user to widen them when the best trials sit at an edge.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from adamtune.errors import ConfigError, SpaceError

TASKS: tuple[str, ...] = ("generic", "cnn", "transformer", "llm")


class Window(NamedTuple):
    """A search window: ``low``..``high`` on ``scale`` ("log", "linear" or "log1m" = log of 1-x)."""

    low: float
    high: float
    scale: str


# lr and weight_decay windows for Adam/AdamW per task (weight_decay applies to AdamW).
TASK_WINDOWS: dict[str, dict[str, Window]] = {
    "generic": {"lr": Window(1e-5, 1e-2, "log"), "weight_decay": Window(1e-5, 0.3, "log")},
    "cnn": {"lr": Window(3e-5, 1e-2, "log"), "weight_decay": Window(1e-5, 0.3, "log")},
    "transformer": {"lr": Window(3e-6, 3e-4, "log"), "weight_decay": Window(1e-4, 0.3, "log")},
    "llm": {"lr": Window(1e-5, 3e-3, "log"), "weight_decay": Window(1e-3, 0.3, "log")},
}

# Windows shared by every task (β2 reaches down past LLM pretraining's 0.95; ε up to the 1e-6–1e-5
# used in bf16/fp16).
ADAM_WINDOWS: dict[str, Window] = {
    "beta1": Window(0.8, 0.999, "log1m"),
    "beta2": Window(0.9, 0.9999, "log1m"),
    "eps": Window(1e-10, 1e-5, "log"),
    "max_grad_norm": Window(0.1, 10.0, "log"),
    "warmup": Window(0.0, 0.1, "linear"),
}
ADADELTA_WINDOWS: dict[str, Window] = {
    "lr": Window(1e-2, 10.0, "log"),
    "rho": Window(0.8, 0.99, "log1m"),
    "eps": Window(1e-8, 1e-4, "log"),
    "max_grad_norm": Window(0.1, 10.0, "log"),
    "warmup": Window(0.0, 0.1, "linear"),
}

# The playbook's budget rule (Google Research, Deep Learning Tuning Playbook), with AdamW's
# weight decay right after the learning rate as the stepwise procedure orders it.
# Each row: (smallest budget, dimensions tuned from that budget on).
BUDGET_RULE: dict[str, tuple[tuple[int, tuple[str, ...]], ...]] = {
    "adamw": (
        (1, ("lr",)),
        (6, ("lr", "weight_decay")),
        (10, ("lr", "weight_decay", "beta1")),
        (25, ("lr", "weight_decay", "beta1", "eps")),
        (50, ("lr", "weight_decay", "beta1", "eps", "beta2")),
    ),
    "adam": (
        (1, ("lr",)),
        (10, ("lr", "beta1")),
        (25, ("lr", "beta1", "eps")),
        (50, ("lr", "beta1", "eps", "beta2")),
    ),
    "adadelta": (
        (1, ("lr",)),
        (10, ("lr", "rho")),
        (25, ("lr", "rho", "eps")),
    ),
}


# weight_decay of Adam and Adadelta is coupled L2 (added to the gradient, then scaled by the
# adaptive denominator): AdamW's decoupled values do not carry over, and neither preset tunes it.
COUPLED_L2_WINDOW = Window(1e-6, 1e-2, "log")


# What a task's preset fixes a dimension at while the budget does not tune it, where the task's
# typical value is not PyTorch's default: LLM pretraining's β2 = 0.95 (0.999 lets v lag behind a
# sudden rise in a gradient, and LLM recipes lower it for stability). Every other untuned
# dimension takes PyTorch's default.
TASK_UNTUNED: dict[str, dict[str, dict[str, float]]] = {
    "llm": {"adamw": {"beta2": 0.95}, "adam": {"beta2": 0.95}},
}


def untuned_values(optimizer: str, task: str) -> dict[str, float]:
    """``{name: value}`` the preset of ``optimizer`` x ``task`` fixes where it does not tune ``name``
    (empty where every untuned dimension takes PyTorch's default)."""
    return dict(TASK_UNTUNED.get(task, {}).get(optimizer, {}))


def search_window(optimizer: str, task: str, name: str) -> Window:
    """The preset window of ``name`` for this optimizer and task."""
    if name == "weight_decay" and optimizer in ("adam", "adadelta"):
        return COUPLED_L2_WINDOW
    if optimizer == "adadelta":
        return ADADELTA_WINDOWS[name]
    return TASK_WINDOWS[task].get(name) or ADAM_WINDOWS[name]


def tuned_for_budget(optimizer: str, budget: int) -> tuple[str, ...]:
    """Which dimensions ``BUDGET_RULE`` (the playbook's, plus AdamW's weight_decay) tunes for ``budget`` trials."""
    chosen: tuple[str, ...] = ()
    for threshold, names in BUDGET_RULE[optimizer]:
        if budget >= threshold:
            chosen = names
    return chosen


# ---------------------------------------------------------------------------------------------
# Everything below feeds `adamtune explain`, the report's advice and the differential tests.
# Facts come from PyTorch's source and the Deep Learning Tuning Playbook; the per-optimizer
# PyTorch defaults are display text here and tested against adamtune.config.TORCH_DEFAULTS
# (guide must not import config: both are low-level and neither imports the other).
# ---------------------------------------------------------------------------------------------

# Kept in the same order as adamtune.config.OPTIMIZERS (a test pins it).
GUIDE_OPTIMIZERS: tuple[str, ...] = ("adamw", "adam", "adadelta")

TASK_LABELS: dict[str, str] = {
    "generic": "generic",
    "cnn": "CNN / ResNet",
    "transformer": "Transformer fine-tuning (BERT-style)",
    "llm": "LLM pretraining",
}

# What a task's windows are for, where its name alone may mislead (the study's header says it).
TASK_SCOPE: dict[str, str] = {
    "transformer": "fine-tuning",
    "llm": "pretraining",
}


def task_text(task: str) -> str:
    """``"transformer (fine-tuning)"``: the task with what its windows are for, where the name alone
    may mislead (a Transformer trained from scratch wants generic's or llm's larger lrs)."""
    return f"{task} ({TASK_SCOPE[task]})" if task in TASK_SCOPE else task


# The playbook's numbers for instability and clipping, used by ACTIONS and the report.
MAX_WARMUP_FRACTION: float = 0.1
CLIP_PERCENTILE: float = 90.0
CLIP_TOO_OFTEN: float = 0.5
# AdamW's weight_decay (PyTorch's convention) above which the usual advice calls it
# over-regularising. A rule of thumb for typical lrs near 1e-3 and long runs: τ = 1/(lr·λ) is then
# under 10,000 steps. What over-regularises is τ much shorter than an epoch, so a short run or a
# small lr may need a larger λ for the decay to act at all (the decay-timescale finding says so).
STRONG_WEIGHT_DECAY: float = 0.1
# The shortest AdamW decay timescale τ = 1/(lr·λ) adamtune proposes: one epoch. A good τ lies
# between about one epoch and the whole run; a shorter one forgets what the model learned from most
# of the data, and at lr·λ ≥ 1 (τ ≤ 1 step) AdamW's per-step multiplier 1 - lr·λ reaches zero or
# turns negative. Without the data's size, or when an epoch is more than
# ``EPOCH_BOUNDS_DECAY_UP_TO`` of the run, this fraction of the run stands in for it
# (``shortest_decay_timescale``). The decay-timescale finding's window to test ends there, and a
# weight_decay window widened at its top stops there (at the best trial's lr).
SHORTEST_DECAY_TIMESCALE_OF_RUN: float = 0.1
# The longest epoch, as a fraction of the run, that bounds the shortest τ. An epoch nearly as long
# as the run leaves "τ between one epoch and the run" no range at all (charlm: an epoch of 247
# steps in a 250-step run made the window to test 0.2236..0.226); the run's own fraction then
# stands in, as without the data's size.
EPOCH_BOUNDS_DECAY_UP_TO: float = 0.5


def _one_of(what: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SpaceError(f"{what} must be one of {', '.join(choices)}, got {value!r}")


def task_label(task: str) -> str:
    """The display name of ``task`` (e.g. ``"LLM pretraining"``).

    Raises:
        SpaceError: ``task`` is not one of ``TASKS``.
    """
    _one_of("task", task, TASKS)
    return TASK_LABELS[task]


# --- What each hyperparameter does ------------------------------------------------------------


class Typical(NamedTuple):
    """Typical values of one hyperparameter: display text and the numeric range (None = unknown)."""

    text: str
    low: float | None
    high: float | None


def _same_for_all_tasks(typical: Typical) -> tuple[tuple[str, Typical], ...]:
    return tuple((task, typical) for task in TASKS)


@dataclass(frozen=True)
class ParamGuide:
    """What one hyperparameter does, what goes wrong at either end, and where to look for it.

    Attributes:
        name: adamtune's name (the same in the CLI, the API, the report and storage).
        symbol: its symbol in the update rules (``"β1"``, ``"λ"``, ...).
        optimizers: the optimizers it applies to (max_grad_norm and warmup: all of them).
        what: one line: what it does.
        too_large: what happens when it is too large.
        too_small: what happens when it is too small.
        typical: ``(task, Typical)`` for every task in ``TASKS``, for Adam/AdamW unless the
            parameter is Adadelta's alone.
        typical_override: ``(optimizer, Typical)`` where an optimizer differs from ``typical``.
        too_large_override, too_small_override: ``(optimizer, text)`` where an optimizer differs
            from ``too_large`` / ``too_small`` (those are Adam/AdamW's where they give numbers).
        scale: the search scale, as in ``Window.scale``: ``"log"``, ``"log1m"`` or ``"linear"``.
        scale_why: why that scale.
        torch_default: ``(optimizer, text)`` for PyTorch's default; missing where torch.optim
            has no such argument.
        notes: ``(optimizer, text)``: how the parameter works in that optimizer, where it differs.
    """

    name: str
    symbol: str
    optimizers: tuple[str, ...]
    what: str
    too_large: str
    too_small: str
    typical: tuple[tuple[str, Typical], ...]
    scale: str
    scale_why: str
    torch_default: tuple[tuple[str, str], ...] = ()
    typical_override: tuple[tuple[str, Typical], ...] = ()
    notes: tuple[tuple[str, str], ...] = ()
    too_large_override: tuple[tuple[str, str], ...] = ()
    too_small_override: tuple[tuple[str, str], ...] = ()

    def typical_for(self, task: str, optimizer: str | None = None) -> Typical:
        """Typical values for ``task`` (and ``optimizer``, where that optimizer differs)."""
        _one_of("task", task, TASKS)
        override = dict(self.typical_override)
        if optimizer in override:
            return override[optimizer]
        return dict(self.typical)[task]

    def too_large_for(self, optimizer: str) -> str:
        """What happens when it is too large, in ``optimizer``."""
        return dict(self.too_large_override).get(optimizer, self.too_large)

    def too_small_for(self, optimizer: str) -> str:
        """What happens when it is too small, in ``optimizer``."""
        return dict(self.too_small_override).get(optimizer, self.too_small)

    def default_for(self, optimizer: str) -> str | None:
        """PyTorch's default for ``optimizer`` as display text, or None if it has no such argument."""
        return dict(self.torch_default).get(optimizer)

    def note_for(self, optimizer: str) -> str | None:
        """How this parameter works in ``optimizer``, where that needs saying; else None."""
        return dict(self.notes).get(optimizer)


_ADAM_FAMILY = ("adamw", "adam")
_EPS_AFTER_SQRT = "ε is added after the square root and the bias correction: √v / √(1 − β2^t) + ε."
_LOG_WHY = "spans orders of magnitude: search it on a log scale, as the playbook does"
_LOG1M_WHY = (
    "what matters is 1 − {s}, the averaging horizon of about 1/(1 − {s}) steps: 0.9 → 0.99 is "
    "as big a change as 0.99 → 0.999, so search 1 − {s} on a log scale (the playbook's advice)"
)

PARAMS: dict[str, ParamGuide] = {
    "lr": ParamGuide(
        name="lr",
        symbol="lr",
        optimizers=GUIDE_OPTIMIZERS,
        what="Scales every step. Tune it first and alone; it is the peak value under warmup or a schedule.",
        too_large="unstable: loss spikes or the run diverges (Adam/AdamW: typically from 0.01–0.1)",
        too_small="slow progress, underfits within the budget (Adam/AdamW: below about 1e-5)",
        typical=(
            ("generic", Typical("1e-5–1e-3; start from PyTorch's 1e-3", 1e-5, 1e-3)),
            ("cnn", Typical("3e-4–1e-3 (ResNet: 3e-4)", 3e-4, 1e-3)),
            ("transformer", Typical("2e-5–5e-5 (BERT fine-tuning: 5e-5)", 2e-5, 5e-5)),
            ("llm", Typical("1e-4–6e-4 (LLaMA-style: 2e-4–6e-4)", 1e-4, 6e-4)),
        ),
        typical_override=(
            ("adadelta", Typical("1.0 (PyTorch's default; reproduces Zeiler's paper)", 1.0, 1.0)),
        ),
        # Adam's numbers do not carry over: Adadelta's steps are about lr·|update| with lr near 1.
        too_large_override=(("adadelta", "unstable: loss spikes or the run diverges"),),
        too_small_override=(("adadelta", "slow progress, underfits within the budget"),),
        scale="log",
        scale_why=_LOG_WHY,
        torch_default=(("adamw", "1e-3"), ("adam", "1e-3"), ("adadelta", "1.0")),
        notes=(
            (
                "adadelta",
                "Zeiler's Adadelta has no learning rate; PyTorch's lr scales the step "
                "(lr = 1 reproduces the paper).",
            ),
        ),
    ),
    "beta1": ParamGuide(
        name="beta1",
        symbol="β1",
        optimizers=_ADAM_FAMILY,
        what="Decay rate of the first-moment (momentum) average m; it averages about 1/(1 − β1) steps.",
        too_large="m reacts slowly to changes in the gradient",
        too_small="m reacts faster but is noisier",
        typical=_same_for_all_tasks(Typical("0.9", 0.9, 0.9)),
        scale="log1m",
        scale_why=_LOG1M_WHY.format(s="β1"),
        torch_default=(("adamw", "0.9"), ("adam", "0.9")),
    ),
    "beta2": ParamGuide(
        name="beta2",
        symbol="β2",
        optimizers=_ADAM_FAMILY,
        what=(
            "Decay rate of the second-moment average v that scales each coordinate's step; "
            "it averages about 1/(1 − β2) steps."
        ),
        too_large=(
            "the second-moment estimate adapts slowly: when a gradient grows suddenly, the stale v gives "
            "an update spike (why LLM recipes use 0.95)"
        ),
        too_small="noisy per-coordinate scaling; instability",
        typical=(
            ("generic", Typical("0.999", 0.999, 0.999)),
            ("cnn", Typical("0.999", 0.999, 0.999)),
            ("transformer", Typical("0.999", 0.999, 0.999)),
            ("llm", Typical("0.95", 0.95, 0.95)),
        ),
        scale="log1m",
        scale_why=_LOG1M_WHY.format(s="β2"),
        torch_default=(("adamw", "0.999"), ("adam", "0.999")),
    ),
    "eps": ParamGuide(
        name="eps",
        symbol="ε",
        optimizers=GUIDE_OPTIMIZERS,
        what="Added to the denominator so that the division stays finite where v is tiny.",
        too_large="damps adaptivity (Adam: the step tends to lr·m̂/ε, momentum SGD)",
        too_small="division blow-ups in low precision (bf16/fp16)",
        typical=_same_for_all_tasks(Typical("1e-8; 1e-6–1e-5 in bf16/fp16", 1e-8, 1e-5)),
        typical_override=(
            ("adadelta", Typical("1e-6 (PyTorch's default and Zeiler's paper)", 1e-6, 1e-6)),
        ),
        too_large_override=(
            ("adadelta", "damps adaptivity (√(u + ε) / √(v + ε) tends to 1: the step tends to lr·g, plain SGD)"),
        ),
        too_small_override=(
            (
                "adadelta",
                "tiny first steps, and training crawls: ε is in the numerator √(u + ε) too, and u starts "
                "at 0 (first steps about lr·√ε / √(1 − ρ))",
            ),
        ),
        scale="log",
        scale_why=_LOG_WHY,
        torch_default=(("adamw", "1e-8"), ("adam", "1e-8"), ("adadelta", "1e-6")),
        notes=(
            ("adamw", _EPS_AFTER_SQRT),
            ("adam", _EPS_AFTER_SQRT),
            (
                "adadelta",
                "ε sits inside both square roots, √(u + ε) / √(v + ε); u starts at 0, so ε sets "
                "the size of the first steps (about lr·√ε / √(1 − ρ)).",
            ),
        ),
    ),
    "weight_decay": ParamGuide(
        name="weight_decay",
        symbol="λ",
        optimizers=GUIDE_OPTIMIZERS,
        what=(
            "Pulls weights towards 0 every step; how depends on the optimizer (see the conventions). "
            "adamtune decays only tensors with dim ≥ 2, not biases or normalisation weights."
        ),
        too_large=(
            "over-regularised, underfits (AdamW: when its timescale 1/(lr·λ) is much shorter than an epoch; "
            f"about λ > {STRONG_WEIGHT_DECAY:g} at typical lrs near 1e-3 in long runs)"
        ),
        too_small="overfits",
        typical=(
            ("generic", Typical("0.01 or 0.001 as first tries; choose on validation data", 1e-3, 1e-2)),
            (
                "cnn",
                Typical(
                    "0.01–0.1 (ResNet recipes' 1e-4 is SGD's L2 habit: in AdamW's convention it barely acts)",
                    0.01,
                    0.1,
                ),
            ),
            ("transformer", Typical("0.01–0.05 (sometimes 0; BERT: 0.01)", 0.01, 0.05)),
            ("llm", Typical("0.01–0.03; 0.1 in many published LLM recipes", 0.01, 0.1)),
        ),
        typical_override=(
            (
                "adam",
                Typical("0 (PyTorch's default); L2 values do not carry over from AdamW's", None, None),
            ),
            (
                "adadelta",
                Typical("0 (PyTorch's default); L2 values do not carry over from AdamW's", None, None),
            ),
        ),
        scale="log",
        scale_why=_LOG_WHY,
        torch_default=(("adamw", "0.01"), ("adam", "0"), ("adadelta", "0")),
        notes=(
            (
                "adamw",
                "Decoupled, in PyTorch's lr-coupled convention: θ ← θ·(1 − lr·λ) before the Adam "
                "step; a decay timescale of τ_iter = 1 / (lr · λ) steps. Typical values are in "
                "this convention.",
            ),
            (
                "adam",
                "Coupled L2: g ← g + λ·θ, so the decay passes through the adaptive scaling; "
                "not the same as AdamW's weight_decay.",
            ),
            ("adadelta", "Coupled L2: g ← g + λ·θ before the running averages."),
        ),
    ),
    "rho": ParamGuide(
        name="rho",
        symbol="ρ",
        optimizers=("adadelta",),
        what=(
            "Adadelta's decay rate of both running averages (of g² and of Δ²); "
            "they average about 1/(1 − ρ) steps."
        ),
        too_large="the averages adapt slowly to a change in the gradient scale",
        too_small="noisy averages, erratic step sizes",
        typical=_same_for_all_tasks(Typical("0.9 (PyTorch) – 0.95 (Zeiler's paper)", 0.9, 0.95)),
        scale="log1m",
        scale_why=_LOG1M_WHY.format(s="ρ"),
        torch_default=(("adadelta", "0.9"),),
    ),
    "max_grad_norm": ParamGuide(
        name="max_grad_norm",
        symbol="max_norm",
        optimizers=GUIDE_OPTIMIZERS,
        what=(
            "Gradient clipping: one L2 norm over all gradients of the model; above max_grad_norm "
            "every gradient is scaled down by the same factor."
        ),
        too_large="no protection against gradient spikes",
        too_small=(
            "clips most steps and slows convergence; clipping more than "
            f"{CLIP_TOO_OFTEN:.0%} of the steps is too aggressive"
        ),
        typical=_same_for_all_tasks(
            Typical(
                f"off; 1.0–2.0 when gradients explode, for noisy data or very deep/large models "
                f"(about the {CLIP_PERCENTILE:.0f}th percentile of unclipped norms)",
                1.0,
                2.0,
            )
        ),
        scale="log",
        scale_why=(
            "a threshold on a norm whose size varies from model to model; rather than search it, "
            f"set it near the {CLIP_PERCENTILE:.0f}th percentile of the unclipped norms"
        ),
        notes=tuple(
            (
                opt,
                "torch.optim has no clipping: torch.nn.utils.clip_grad_norm_ before step(); "
                "adamtune: off by default.",
            )
            for opt in GUIDE_OPTIMIZERS
        ),
    ),
    "warmup": ParamGuide(
        name="warmup",
        symbol="warmup",
        optimizers=GUIDE_OPTIMIZERS,
        what="Fraction of the training steps over which lr rises linearly from about 0 to its peak.",
        too_large=(
            "more of the run is spent below the peak lr; the playbook keeps warmup ≤ "
            f"{MAX_WARMUP_FRACTION:.0%} of the steps"
        ),
        too_small="early instability goes unchecked: warmup is the playbook's first fix for it",
        typical=_same_for_all_tasks(
            Typical(
                f"0 (off); up to {MAX_WARMUP_FRACTION:.0%} of the steps against instability "
                f"(AlgoPerf's AdamW baseline: 5%)",
                0.0,
                MAX_WARMUP_FRACTION,
            )
        ),
        scale="linear",
        scale_why=f"a fraction of the run, searched linearly from 0 to {MAX_WARMUP_FRACTION:.0%}",
        notes=tuple(
            (opt, "torch.optim has no warmup: adamtune.make_scheduler adds it; adamtune: 0 by default.")
            for opt in GUIDE_OPTIMIZERS
        ),
    ),
}


def param_guide(name: str) -> ParamGuide:
    """The guide entry of hyperparameter ``name``.

    Raises:
        SpaceError: ``name`` is not one of ``PARAMS`` (``schedule``, a choice, has ``SCHEDULE_GUIDE``).
    """
    _one_of("parameter", name, tuple(PARAMS))
    return PARAMS[name]


# The learning-rate schedule: a choice, not a number (``--set schedule=NAME``); the rows of
# ``adamtune explain schedule``. The formulas are those of config.lr_multiplier (tested there).
SCHEDULE_GUIDE: tuple[tuple[str, str], ...] = (
    ("what it does", "How the learning rate changes over training: after the warmup, lr stays or "
                     "decays. lr is the peak value either way."),
    ("constant", "lr at every step after the warmup (PyTorch without a scheduler). adamtune's default."),
    ("cosine", "after the warmup, lr · ½(1 + cos(π·t/T)), t the steps since the warmup and T their "
               "number: from lr down to nearly 0 at the last step (Loshchilov & Hutter's cosine, "
               "without restarts)."),
    ("warmup", "linear from lr/W to lr over the first W = warmup · steps steps, before either "
               "schedule; no step runs with lr = 0."),
    ("in PyTorch", "adamtune.make_scheduler(optimizer, config, total_steps) returns a "
                   "torch.optim.lr_scheduler.LambdaLR; call scheduler.step() after every optimizer.step()."),
    ("playbook", "A decaying schedule usually ends better than a constant one. Pick one and keep it "
                 "fixed while tuning: the best lr depends on it (it is the peak), so a study compares "
                 "trials under one schedule."),
)


def params_for(optimizer: str) -> tuple[ParamGuide, ...]:
    """The guide entries of every hyperparameter ``optimizer`` uses, clipping and warmup included.

    Raises:
        SpaceError: ``optimizer`` is not one of ``GUIDE_OPTIMIZERS``.
    """
    _one_of("optimizer", optimizer, GUIDE_OPTIMIZERS)
    return tuple(p for p in PARAMS.values() if optimizer in p.optimizers)


# --- Update rules, as text and as reference step functions ------------------------------------


class UpdateRule(NamedTuple):
    """One update rule as PyTorch computes it: a line per formula, then notes."""

    title: str
    lines: tuple[str, ...]
    notes: tuple[str, ...]


_ADAM_MOMENTS = (
    "m ← β1·m + (1 − β1)·g",
    "v ← β2·v + (1 − β2)·g²",
    "step_size ← lr / (1 − β1^t)",
    "denom ← √v / √(1 − β2^t) + ε",
    "θ ← θ − step_size · m / denom",
)
_ADAM_NOTES = (
    "t counts steps from 1; m and v start at 0.",
    "ε is added after the square root and the bias correction.",
)

UPDATE_RULES: dict[str, UpdateRule] = {
    "adamw": UpdateRule(
        title="AdamW (torch.optim.AdamW)",
        lines=("t ← t + 1", "θ ← θ·(1 − lr·λ)", *_ADAM_MOMENTS),
        notes=(
            *_ADAM_NOTES,
            "The decay is decoupled from the gradient but multiplied by lr (PyTorch and optax); "
            "Loshchilov & Hutter multiply it by the schedule multiplier instead.",
        ),
    ),
    "adam": UpdateRule(
        title="Adam (torch.optim.Adam)",
        lines=("t ← t + 1", "if λ > 0: g ← g + λ·θ", *_ADAM_MOMENTS),
        notes=(
            *_ADAM_NOTES,
            "weight_decay is coupled L2: it passes through the adaptive scaling, unlike AdamW's.",
        ),
    ),
    "adadelta": UpdateRule(
        title="Adadelta (torch.optim.Adadelta)",
        lines=(
            "if λ > 0: g ← g + λ·θ",
            "v ← ρ·v + (1 − ρ)·g²",
            "Δ ← √(u + ε) / √(v + ε) · g",
            "u ← ρ·u + (1 − ρ)·Δ²",
            "θ ← θ − lr·Δ",
        ),
        notes=(
            "v and u start at 0.",
            "Zeiler's paper has no learning rate (lr = 1 reproduces it) and used ρ = 0.95, ε = 1e-6.",
        ),
    ),
}

CLIP_RULE = UpdateRule(
    title="Gradient clipping (torch.nn.utils.clip_grad_norm_)",
    lines=(
        "norm ← √(Σᵢ ‖gᵢ‖²)",
        "scale ← min(1, max_norm / (norm + 1e-6))",
        "gᵢ ← scale · gᵢ",
    ),
    notes=(
        "One L2 norm over ALL gradients of the model, and one scale for every gradient.",
        "Runs after backward() and before optimizer.step(); it returns the unclipped norm.",
    ),
)


def update_rule(optimizer: str) -> UpdateRule:
    """The update rule of ``optimizer`` as PyTorch computes it.

    Raises:
        SpaceError: ``optimizer`` is not one of ``GUIDE_OPTIMIZERS``.
    """
    _one_of("optimizer", optimizer, GUIDE_OPTIMIZERS)
    return UPDATE_RULES[optimizer]


class AdamState(NamedTuple):
    """Adam/AdamW state: step count t and the moment averages m and v."""

    step: int
    m: Any
    v: Any


class AdadeltaState(NamedTuple):
    """Adadelta state: step count and the running averages v (of g²) and u (of Δ²)."""

    step: int
    v: Any
    u: Any


def _sqrt(x: Any) -> Any:
    return x.sqrt() if hasattr(x, "sqrt") else math.sqrt(x)


def _zeros_like(x: Any) -> Any:
    return x.new_zeros(x.shape) if hasattr(x, "new_zeros") else 0.0


# The step functions follow UPDATE_RULES line for line. They take torch tensors or floats,
# never modify their inputs, and tests/test_guide.py checks them against torch.optim.


def adam_step(
    param: Any, grad: Any, state: AdamState, *, lr: float, beta1: float, beta2: float,
    eps: float, weight_decay: float,
) -> tuple[Any, AdamState]:
    """One ``torch.optim.Adam`` step (coupled L2 weight decay); returns (new param, new state)."""
    t = state.step + 1
    g = grad + weight_decay * param if weight_decay > 0 else grad
    m = beta1 * state.m + (1 - beta1) * g
    v = beta2 * state.v + (1 - beta2) * g**2
    step_size = lr / (1 - beta1**t)
    denom = _sqrt(v) / math.sqrt(1 - beta2**t) + eps
    param = param - step_size * m / denom
    return param, AdamState(t, m, v)


def adamw_step(
    param: Any, grad: Any, state: AdamState, *, lr: float, beta1: float, beta2: float,
    eps: float, weight_decay: float,
) -> tuple[Any, AdamState]:
    """One ``torch.optim.AdamW`` step (decay multiplied by lr); returns (new param, new state)."""
    t = state.step + 1
    param = param * (1 - lr * weight_decay)
    m = beta1 * state.m + (1 - beta1) * grad
    v = beta2 * state.v + (1 - beta2) * grad**2
    step_size = lr / (1 - beta1**t)
    denom = _sqrt(v) / math.sqrt(1 - beta2**t) + eps
    param = param - step_size * m / denom
    return param, AdamState(t, m, v)


def adadelta_step(
    param: Any, grad: Any, state: AdadeltaState, *, lr: float, rho: float, eps: float,
    weight_decay: float,
) -> tuple[Any, AdadeltaState]:
    """One ``torch.optim.Adadelta`` step (coupled L2 weight decay); returns (new param, new state)."""
    g = grad + weight_decay * param if weight_decay > 0 else grad
    v = rho * state.v + (1 - rho) * g**2
    delta = _sqrt(state.u + eps) / _sqrt(v + eps) * g
    u = rho * state.u + (1 - rho) * delta**2
    param = param - lr * delta
    return param, AdadeltaState(state.step + 1, v, u)


_STEPS: dict[str, Callable[..., tuple[Any, Any]]] = {
    "adamw": adamw_step,
    "adam": adam_step,
    "adadelta": adadelta_step,
}


def reference_init(optimizer: str, param: Any) -> AdamState | AdadeltaState:
    """The state ``optimizer`` starts from for ``param``: step 0 and zero averages.

    Raises:
        SpaceError: ``optimizer`` is not one of ``GUIDE_OPTIMIZERS``.
    """
    _one_of("optimizer", optimizer, GUIDE_OPTIMIZERS)
    if optimizer == "adadelta":
        return AdadeltaState(0, _zeros_like(param), _zeros_like(param))
    return AdamState(0, _zeros_like(param), _zeros_like(param))


def reference_step(
    optimizer: str, param: Any, grad: Any, state: AdamState | AdadeltaState, **hyperparameters: float
) -> tuple[Any, AdamState | AdadeltaState]:
    """One step of ``optimizer`` exactly as torch.optim computes it, without modifying the inputs.

    Args:
        optimizer: ``"adamw"``, ``"adam"`` or ``"adadelta"``.
        param, grad: tensors (or floats) of the same shape.
        state: from ``reference_init`` or the previous step.
        **hyperparameters: Adam/AdamW: lr, beta1, beta2, eps, weight_decay;
            Adadelta: lr, rho, eps, weight_decay (all required; no defaults are assumed).

    Returns:
        ``(new_param, new_state)``.

    Raises:
        SpaceError: unknown optimizer.
    """
    _one_of("optimizer", optimizer, GUIDE_OPTIMIZERS)
    return _STEPS[optimizer](param, grad, state, **hyperparameters)


def reference_clip(grads: Sequence[Any], max_norm: float) -> tuple[list[Any], Any]:
    """``torch.nn.utils.clip_grad_norm_`` as CLIP_RULE writes it, without modifying ``grads``.

    Returns:
        ``(clipped gradients, unclipped global L2 norm)``.
    """
    norm = _sqrt(sum(_sum_of_squares(g) for g in grads))
    scale = min(1.0, max_norm / (norm + 1e-6))
    return [scale * g for g in grads], norm


def _sum_of_squares(g: Any) -> Any:
    squares = g * g
    return squares.sum() if hasattr(squares, "sum") else squares


# --- Weight-decay conventions and the decay timescale -----------------------------------------


class DecayConvention(NamedTuple):
    """One way of applying weight decay, with who uses it."""

    name: str
    rule: str
    used_by: str
    note: str


WEIGHT_DECAY_CONVENTIONS: tuple[DecayConvention, ...] = (
    DecayConvention(
        name="coupled L2",
        rule="g ← g + λ·θ",
        used_by="torch.optim.Adam and Adadelta (weight_decay)",
        note="the decay passes through the adaptive scaling; not the same as AdamW's",
    ),
    DecayConvention(
        name="decoupled, lr-coupled (PyTorch)",
        rule="θ ← θ·(1 − lr_t·λ)",
        used_by="torch.optim.AdamW, optax.adamw; adamtune's weight_decay for AdamW",
        note="the decay follows the learning rate, warmup and schedule included",
    ),
    DecayConvention(
        name="decoupled, independent (Loshchilov & Hutter)",
        rule="θ ← θ·(1 − η_t·λ_independent)",
        used_by="the AdamW paper, Composer's DecoupledAdamW, optimi's decouple_lr",
        note="η_t is the schedule multiplier (1 at the peak), not the learning rate",
    ),
)

TIMESCALE_FORMULA = "τ_iter = 1 / (lr · λ) steps"
CONVERSION_FORMULAS: tuple[str, ...] = (
    "λ_independent = lr_max · λ_pytorch",
    "λ_pytorch = λ_independent / lr_max",
    "λ for a target timescale: λ = 1 / (lr · τ_iter)",
    "λ for a fraction f of a T-step run: λ = 1 / (lr · f · T)",
)
TIMESCALE_NOTES: tuple[str, ...] = (
    "AdamW's weights are an exponential moving average of recent updates with timescale τ_iter "
    "(Wang & Aitchison 2024).",
    "A good τ_iter lies between about one epoch and the whole run; the best τ_iter as a fraction "
    "of the run stays roughly constant as data and models grow.",
    "Always say which convention a weight-decay number is in.",
)


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


def decay_timescale(lr: float, weight_decay: float) -> float:
    """AdamW's weight-decay timescale ``τ_iter = 1 / (lr · λ)`` in steps (Wang & Aitchison 2024).

    Args:
        lr: the (peak) learning rate.
        weight_decay: λ in PyTorch's lr-coupled convention (``torch.optim.AdamW``).

    Returns:
        The timescale in optimizer steps; ``math.inf`` for ``weight_decay == 0``.

    Raises:
        ConfigError: ``lr <= 0`` or ``weight_decay < 0``.
    """
    _positive("lr", lr)
    if not weight_decay >= 0:
        raise ConfigError(f"weight_decay must be >= 0, got {weight_decay}")
    if weight_decay == 0:
        return math.inf
    return 1.0 / (lr * weight_decay)


def weight_decay_for_timescale(lr: float, steps: float) -> float:
    """The PyTorch-convention λ that gives AdamW a decay timescale of ``steps``: ``1 / (lr · steps)``.

    Raises:
        ConfigError: ``lr <= 0`` or ``steps <= 0``.
    """
    _positive("lr", lr)
    _positive("steps", steps)
    return 1.0 / (lr * steps)


def shortest_decay_timescale(run_steps: float, epoch_steps: float | None = None) -> float:
    """The shortest AdamW decay timescale adamtune proposes, in steps (``SHORTEST_DECAY_TIMESCALE_OF_RUN``).

    One epoch when it is known and at most ``EPOCH_BOUNDS_DECAY_UP_TO`` of the run
    (``epoch_bounds_decay``), else that fraction of the run; never under one step (``lr·λ <= 1``).

    Raises:
        ConfigError: ``run_steps <= 0``.
    """
    _positive("run_steps", run_steps)
    if epoch_steps is not None and epoch_bounds_decay(run_steps, epoch_steps):
        return max(1.0, float(epoch_steps))
    return max(1.0, SHORTEST_DECAY_TIMESCALE_OF_RUN * run_steps)


def epoch_bounds_decay(run_steps: float, epoch_steps: float | None) -> bool:
    """Whether one epoch is the shortest decay timescale adamtune proposes for this run: it is
    known and no longer than ``EPOCH_BOUNDS_DECAY_UP_TO`` of the run."""
    return epoch_steps is not None and 0 < epoch_steps <= EPOCH_BOUNDS_DECAY_UP_TO * run_steps


def weight_decay_for_run_fraction(lr: float, fraction: float, total_steps: int) -> float:
    """The PyTorch-convention λ whose timescale is ``fraction`` of a ``total_steps``-step run.

    Raises:
        ConfigError: ``lr``, ``fraction`` or ``total_steps`` is not > 0.
    """
    _positive("fraction", fraction)
    _positive("total_steps", total_steps)
    return weight_decay_for_timescale(lr, fraction * total_steps)


def to_independent_decay(weight_decay: float, lr_max: float) -> float:
    """PyTorch's AdamW λ → the independent (Loshchilov & Hutter) λ: ``lr_max · λ``.

    Raises:
        ConfigError: ``lr_max <= 0`` or ``weight_decay < 0``.
    """
    _positive("lr_max", lr_max)
    if not weight_decay >= 0:
        raise ConfigError(f"weight_decay must be >= 0, got {weight_decay}")
    return lr_max * weight_decay


def from_independent_decay(independent_decay: float, lr_max: float) -> float:
    """The independent (Loshchilov & Hutter) λ → PyTorch's AdamW λ: ``λ_independent / lr_max``.

    Raises:
        ConfigError: ``lr_max <= 0`` or ``independent_decay < 0``.
    """
    _positive("lr_max", lr_max)
    if not independent_decay >= 0:
        raise ConfigError(f"independent_decay must be >= 0, got {independent_decay}")
    return independent_decay / lr_max


# --- The stepwise procedure and what to do about each finding ----------------------------------


class ProcedureStep(NamedTuple):
    """One step of the tuning procedure, for the optimizers it applies to."""

    title: str
    detail: str
    optimizers: tuple[str, ...] = GUIDE_OPTIMIZERS


PROCEDURE: tuple[ProcedureStep, ...] = (
    ProcedureStep(
        "Tune the learning rate alone",
        "Fix everything else and search lr on a log scale: diverging → lower it; very slow → raise it.",
    ),
    ProcedureStep(
        "Then tune weight decay from the fit",
        "Overfitting → raise it; underfitting → lower it. Search on a log scale and say which "
        "convention the number is in.",
        ("adamw",),
    ),
    # Adam's and Adadelta's presets never tune weight_decay: it is coupled L2, left at 0.
    ProcedureStep(
        "Then regularise from the fit",
        "The preset leaves weight_decay, coupled L2 here (g ← g + λ·θ), at 0. If the validation metric "
        "turns worse while training goes on, add it with --set weight_decay=LOW:HIGH (log scale) or other "
        "regularisation; AdamW's values do not carry over.",
        ("adam", "adadelta"),
    ),
    ProcedureStep(
        "Optionally clip gradients",
        f"max_grad_norm 1.0–2.0 for noisy data or very deep/large models; set it near the "
        f"{CLIP_PERCENTILE:.0f}th percentile of the unclipped gradient norms. Clipping more than "
        f"{CLIP_TOO_OFTEN:.0%} of the steps is too aggressive: lower lr instead.",
    ),
    ProcedureStep(
        "If training is unstable",
        f"Add warmup first (≤ {MAX_WARMUP_FRACTION:.0%} of the steps), then gradient clipping; "
        "lowering lr is the last resort.",
    ),
)

def procedure_for(optimizer: str) -> tuple[ProcedureStep, ...]:
    """The steps of ``PROCEDURE`` that apply to ``optimizer``, in order.

    Raises:
        SpaceError: ``optimizer`` is not one of ``GUIDE_OPTIMIZERS``.
    """
    _one_of("optimizer", optimizer, GUIDE_OPTIMIZERS)
    return tuple(step for step in PROCEDURE if optimizer in step.optimizers)


ACTIONS: dict[str, str] = {
    "overfitting": (
        "The validation metric turns worse while training goes on: raise weight_decay or add "
        "other regularisation."
    ),
    "late_variance": (
        "High step-to-step variance late in training: lower the learning rate late in training "
        "(a decaying schedule such as cosine)."
    ),
    "still_improving": "Still improving at the end (compute-bound): train longer.",
    "saturated_early": "Saturated long before the end: train shorter.",
    "no_learning": (
        "Nothing was learned: the learning rates tried are too small to move this model in the "
        "steps given, so search larger ones first -- or the model, data or loss is broken (a loss "
        "stuck at its first value is also what a bug looks like: check that the model learns when "
        "trained by hand with a typical lr)."
    ),
    "unstable": (
        f"Unstable training (loss spikes or divergence): add warmup first (≤ "
        f"{MAX_WARMUP_FRACTION:.0%} of the steps), then gradient clipping; lower the learning "
        "rate only as a last resort. For Adam/AdamW, β2 0.95–0.98 also stabilises."
    ),
    "nonfinite_start": (
        "The loss was NaN/inf from the first steps at every learning rate: the data or the loss is "
        "broken, not the optimizer's settings. Look for NaN/inf in the inputs or targets, a log of 0 "
        "or a division by 0 in the loss, or a model whose initial output overflows; "
        "torch.autograd.set_detect_anomaly(True) names the operation that first made a NaN. "
        "Fix that before tuning."
    ),
    "lr_too_high": (
        "Half or more of the trials diverged and at most one trained to the end: the lr window reaches far past "
        "what this model tolerates. Search smaller learning rates first; warmup and clipping help "
        "a model at the edge of stability, not one trained at many times its stable lr."
    ),
    "failed": (
        "Trials failed: the workload's code raised an error, so they have no result and the search "
        "learns nothing from them. Read the tracebacks and fix the cause. When only the largest lrs "
        "failed, the error most likely comes from the loss blowing up (a check that raises): the next "
        "search space then stops below them. Without the check, adamtune marks such trials diverged "
        "itself (loss NaN/inf or far above its start), and the findings and the search use them."
    ),
    "boundary": (
        "The best trials sit near an edge of the search window: widen the window on that side "
        "and search again."
    ),
    "decay_timescale": (
        "Read AdamW's weight_decay as a timescale τ = 1/(lr·weight_decay) steps: the weights average "
        "the updates of about the last τ steps. Keep τ a fixed fraction of the run, between one epoch and "
        "the whole run: weight_decay = 1/(lr·τ), so weight_decay goes down when the run gets longer or lr "
        "goes up (`adamtune explain weight_decay`)."
    ),
    "clip": (
        "Clipping is for instability (loss spikes, divergence; after warmup), not for a stable run. "
        f"When you need it, set max_grad_norm near the {CLIP_PERCENTILE:.0f}th percentile of the "
        f"unclipped gradient norms; if more than {CLIP_TOO_OFTEN:.0%} of the steps get clipped, the "
        "threshold is too aggressive: lower the learning rate instead."
    ),
}
