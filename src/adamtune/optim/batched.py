"""Optimizers for K stacked models, each member with its own hyperparameters.

The classes validate, hold state and dispatch to the kernels in :mod:`adamtune.optim._kernels`.
Member k of a ``BatchedAdam`` follows the trajectory of a ``torch.optim.Adam`` (plus
``clip_grad_norm_`` when ``max_grad_norm`` is set) on model k alone, within what follows:

- With torch's fused kernel (the default where it can run) that of ``Adam(fused=True)``: the
  same kernel with the same inputs, but called on a member's whole row, not on each tensor.
  On the CPU an element can fall in the kernel's vectorised loop in one layout and in its
  scalar tail in the other, which round differently: where tensor sizes are not multiples of
  the SIMD width, a few elements can differ by about an ulp (measured: at most 1e-7 relative in
  float32 and 3e-18 in float64 over 100 steps; none where every size was a multiple of 16).
- With the stacked kernels (``fused=False``, and Adadelta always) that of the default for-loop
  implementation, in float32 and float64 up to an ulp now and then. In bfloat16 and float16
  too (the hyperparameters in float32, as torch computes with its Python floats), except
  where torch.optim passes one as ``alpha=`` (Adam's and Adadelta's coupled weight decay,
  Adadelta's lr unless a power of 2): torch's own CPU kernel rounds that op one way in its
  vectorised loop and another in its scalar tail, which a member's row and a separate tensor
  reach differently (measured over 200 steps with weight_decay=0.1: parameters within
  4.4e-4 relative for Adam, 4.1e-3 for Adadelta; state within 5.3e-2).
- Step counts are per member, not per tensor. A tensor that gets no gradient at some steps is
  skipped as torch.optim skips it, but its next Adam/AdamW update uses the member's bias
  correction, not one for its own count of steps: with the default betas, a tensor whose
  first gradient comes at step 11 moves about half as far as torch.optim moves it (Adadelta
  has no bias correction).
- Hyperparameter tensors are used at their own precision: pass float64 ones (they stand for
  torch.optim's Python floats). A float32 tensor, ``torch.tensor``'s default, carries float32
  values (0.999 becomes 0.9990000128746033).

The optimizer moves the stacked parameters it is given into one [K, P] buffer (the same tensor
objects become views of it, each keeping its own layout within a member's row), next to like
buffers for gradients and state (:mod:`adamtune.optim._flat`). A member is then one dense row:
the fused kernel runs once or twice per member instead of once per member and tensor, the
stacked kernels and clipping run over a couple of tensors instead of one per parameter tensor,
and ``zero_grad`` leaves the gradients attached so backward adds straight into the buffer.

Typical use by an engine::

    params, buffers = torch.func.stack_module_state(models)      # leaf tensors [K, ...]
    lr_k = torch.tensor(lrs, dtype=torch.float64)                # one value per member
    opt = BatchedAdamW(list(params.values()), lr=lr_k, betas=(beta1_k, 0.999),
                       weight_decay=wd_k, max_grad_norm=clip_k,
                       decay_mask=matrix_decay_mask(params.values()))
    for step in range(n):
        loss = vmap(loss_fn, in_dims=(0, 0, None))(params, buffers, batch).sum()
        opt.zero_grad()
        loss.backward()
        opt.step(lr_scale=schedule_k[step])     # per-member warmup/cosine multiplier
        log(opt.last_grad_norms)                # [K], unclipped
        opt.active = ~diverged                  # frozen members stop changing
        opt.keep(survivors)                     # shrinks the same tensors held in ``params``
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from adamtune.config import fused_adam_unavailable
from adamtune.errors import ConfigError
from adamtune.optim import _flat, _kernels

__all__ = ["BatchedAdadelta", "BatchedAdam", "BatchedAdamW", "matrix_decay_mask"]

HyperparameterValue = float | Tensor

# Autograd hints, once per process, that a gradient laid out unlike its parameter "may impair
# performance"; here every gradient is a slice of the flat buffer by design.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")


class _Rule(NamedTuple):
    """Valid range of one hyperparameter and torch.optim's wording of the violation."""

    holds: Callable[[float], bool]
    message: str


# torch.optim's messages, word for word; `max_grad_norm` follows their pattern.
_RULES: dict[str, _Rule] = {
    "lr": _Rule(lambda x: 0.0 <= x, "Invalid learning rate"),
    "eps": _Rule(lambda x: 0.0 <= x, "Invalid epsilon value"),
    "beta1": _Rule(lambda x: 0.0 <= x < 1.0, "Invalid beta parameter at index 0"),
    "beta2": _Rule(lambda x: 0.0 <= x < 1.0, "Invalid beta parameter at index 1"),
    "rho": _Rule(lambda x: 0.0 <= x <= 1.0, "Invalid rho value"),
    "weight_decay": _Rule(lambda x: 0.0 <= x, "Invalid weight_decay value"),
    "max_grad_norm": _Rule(lambda x: x > 0.0, "Invalid max_grad_norm value"),
}


def matrix_decay_mask(params: Iterable[Tensor]) -> list[bool]:
    """nanoGPT's rule for stacked tensors: decay a tensor iff its per-member slice has dim >= 2."""
    return [p.ndim - 1 >= 2 for p in params]


class _BatchedOptimizer:
    """Shared machinery: hyperparameters per member, active mask, clipping, keep().

    Subclasses set ``_HYPERPARAMETERS`` (names in validation order, ``max_grad_norm`` excluded),
    ``_STATE`` (names of the per-tensor state buffers) and implement ``_update``.
    """

    _HYPERPARAMETERS: tuple[str, ...] = ()
    _STATE: tuple[str, ...] = ()
    #: True when step() runs torch's fused kernel member by member (Adam family only).
    fused: bool = False

    def __init__(
        self,
        params: Iterable[Tensor],
        hyperparameters: Mapping[str, HyperparameterValue],
        max_grad_norm: HyperparameterValue | None,
        decay_mask: Sequence[bool] | None,
    ) -> None:
        self.params: list[Tensor] = _check_params(params)
        first = self.params[0]
        self._device = first.device
        # float64 plays the part of torch.optim's Python floats (MPS has no float64).
        self._hp_dtype = torch.float32 if first.device.type == "mps" else torch.float64
        self.decay_mask: tuple[bool, ...] | None = _check_decay_mask(decay_mask, len(self.params))

        self._hp: dict[str, Tensor] = {}
        self._hp_host: dict[str, list[float]] | None = None
        self._max_grad_norm: Tensor | None = None
        self._decay: Tensor | None = None
        self.set_hyperparameters(**hyperparameters, max_grad_norm=max_grad_norm)

        k = self.num_members
        self.steps: Tensor = torch.zeros(k, dtype=self._hp_dtype, device=self._device)
        # Every member's parameters, gradients and state in one row of a [K, P] buffer each
        # (decayed tensors first): the caller's tensors become views of the parameter buffer.
        decays = self.decay_mask if self.decay_mask is not None else (True,) * len(self.params)
        self._layout = _flat.FlatLayout(self.params, decays)
        self._flat: dict[str, Tensor] = {"param": self._layout.pack(self.params)}
        for name in ("grad", *self._STATE):
            self._flat[name] = torch.zeros_like(self._flat["param"])
        with torch.no_grad():
            self._layout.adopt(self.params, self._flat["param"])
        self._views()
        # _cleared[i]: zero_grad(set_to_none=True) cleared tensor i; a gradient came since iff
        # its gradient tensor's version counter moved (see _settle).
        self._cleared = [False] * len(self.params)
        self.last_grad_norms: Tensor | None = None
        self._active = torch.ones(k, dtype=torch.bool, device=self._device)
        self._inactive_index: Tensor | None = None
        self._active_rows: list[int] = list(range(k))

    # -- members -------------------------------------------------------------------------------

    @property
    def num_members(self) -> int:
        """K, the number of stacked members."""
        return self.params[0].shape[0]

    @property
    def active(self) -> Tensor:
        """Bool [K]: members that ``step()`` updates. A copy; assign a new mask to change it."""
        return self._active.clone()

    @active.setter
    def active(self, mask: Tensor | Sequence[bool]) -> None:
        mask = torch.as_tensor(mask, device=self._device)
        if mask.dtype != torch.bool or tuple(mask.shape) != (self.num_members,):
            raise ConfigError(
                f"active must be a bool tensor of shape ({self.num_members},), "
                f"got dtype {mask.dtype} and shape {tuple(mask.shape)}"
            )
        self._active = mask.clone()
        inactive = torch.nonzero(~mask).flatten()
        self._inactive_index = inactive if inactive.numel() else None
        self._active_rows = torch.nonzero(mask).flatten().tolist()

    def keep(self, indices: Sequence[int] | Tensor) -> None:
        """Keep only the members ``indices`` (in that order), dropping the others everywhere.

        The parameter tensors are shrunk in place (``Tensor.set_``), so the very objects the
        caller holds, e.g. the dict from ``stack_module_state``, now have leading dimension
        ``len(indices)`` and stay views of the (new, smaller) flat buffer; their ``.grad`` is
        reset to None. State, step counts, hyperparameters, the active mask and
        ``last_grad_norms`` are indexed the same way, and the kept members continue with
        unchanged numerics. Buffers the caller stacked are the caller's to index.

        Raises:
            ConfigError: indices empty, repeated or out of range.
        """
        index = self._member_index(indices)
        self._flat = {name: flat.index_select(0, index) for name, flat in self._flat.items()}
        with torch.no_grad():
            self._layout.adopt(self.params, self._flat["param"])
            for p in self.params:
                p.grad = None
        self._views()
        self.steps = self.steps.index_select(0, index)
        self._hp = {name: t.index_select(0, index) for name, t in self._hp.items()}
        self._hyperparameters_changed()
        if self._max_grad_norm is not None:
            self._max_grad_norm = self._max_grad_norm.index_select(0, index)
        if self.last_grad_norms is not None:
            self.last_grad_norms = self.last_grad_norms.index_select(0, index)
        self.active = self._active.index_select(0, index)

    def _views(self) -> None:
        """Per-tensor views of the flat state and gradient buffers (after they change)."""
        self.state: dict[str, list[Tensor]] = {
            name: self._layout.views(self._flat[name]) for name in self._STATE
        }
        # Not views but aliases, each with its own version counter: a write into one (backward
        # adding a gradient, p.grad.copy_(g)) moves only that tensor's counter.
        self._grad_views = self._layout.aliases(self._flat["grad"])
        self._zeroed = [g._version for g in self._grad_views]  # the counters when last zeroed
        # The flat buffers' column groups, by whether decayed and other columns are apart.
        self._columns: dict[bool, tuple] = {}
        self._fused_calls = None  # the fused kernel's per-member calls, made on first use

    def _member_index(self, indices: Sequence[int] | Tensor) -> Tensor:
        k = self.num_members
        index = torch.as_tensor(indices)
        if index.dtype == torch.bool:
            raise ConfigError("keep() takes member indices, not a bool mask")
        if index.ndim != 1 or index.numel() == 0 or index.is_floating_point():
            raise ConfigError(
                f"keep() needs a non-empty 1-D sequence of member indices, got {indices!r}"
            )
        values = index.tolist()
        bad = [i for i in values if not 0 <= i < k]
        if bad:
            raise ConfigError(f"member indices must lie in [0, {k}), got {bad[0]}")
        if len(set(values)) != len(values):
            raise ConfigError(f"member indices must not repeat, got {values}")
        return index.to(device=self._device, dtype=torch.long)

    # -- hyperparameters -----------------------------------------------------------------------

    @property
    def hyperparameters(self) -> dict[str, Tensor]:
        """Copies of the per-member hyperparameters, each [K]; ``max_grad_norm`` inf = off."""
        out = {name: t.clone() for name, t in self._hp.items()}
        if self._max_grad_norm is not None:
            out["max_grad_norm"] = self._max_grad_norm.clone()
        return out

    def set_hyperparameters(self, **values: HyperparameterValue | None) -> None:
        """Replace hyperparameters, each a float (all members) or a [K] tensor; validated.

        ``max_grad_norm=None`` turns clipping off for every member; an inf entry turns it off
        for that member. For a per-step learning-rate schedule pass ``lr_scale`` to
        :meth:`step` instead: it is not validated and costs nothing extra.

        Raises:
            ConfigError: an unknown name, a value out of range, or a tensor of the wrong shape.
        """
        allowed = (*self._HYPERPARAMETERS, "max_grad_norm")
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ConfigError(
                f"{type(self).__name__} has no hyperparameter {unknown[0]!r}; "
                f"known: {', '.join(allowed)}"
            )
        # Validate everything before changing anything, in torch.optim's order.
        checked: dict[str, Tensor | None] = {}
        for name in allowed:
            if name not in values:
                continue
            value = values[name]
            if value is None and name == "max_grad_norm":
                checked[name] = None
            else:
                checked[name] = self._member_tensor(name, value)
        for name, tensor in checked.items():
            if name == "max_grad_norm":
                self._max_grad_norm = tensor
            else:
                self._hp[name] = tensor
        self._hyperparameters_changed()

    def _member_tensor(self, name: str, value: HyperparameterValue | None) -> Tensor:
        k = self.num_members
        if isinstance(value, Tensor):
            if value.is_complex() or value.dtype == torch.bool:
                raise ConfigError(f"{name} must be a real tensor, got dtype {value.dtype}")
            if value.ndim == 0:
                per_member = False
            elif tuple(value.shape) == (k,):
                per_member = True
            else:
                raise ConfigError(
                    f"{name} must be a float or a tensor of shape ({k},), one value per member "
                    f"(K={k}), got shape {tuple(value.shape)}"
                )
            tensor = value.detach().to(device=self._device, dtype=self._hp_dtype)
            tensor = tensor.expand(k).clone()
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            per_member = False
            tensor = torch.full((k,), float(value), dtype=self._hp_dtype, device=self._device)
        else:
            raise ConfigError(
                f"{name} must be a float or a tensor of shape ({k},), got {type(value).__name__}"
            )
        rule = _RULES[name]
        for member, x in enumerate(tensor.tolist() if per_member else [float(tensor[0])]):
            if not rule.holds(x):
                where = f" (member {member})" if per_member else ""
                raise ConfigError(f"{rule.message}: {x}{where}")
        return tensor

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """A checkpoint of the optimizer, which :meth:`load_state_dict` continues from bit for bit.

        Copies, not views: the step counts, each state buffer per parameter tensor ([K, ...],
        e.g. ``state["exp_avg"][i]``), the hyperparameters (``max_grad_norm`` included, None
        when off), the active mask and ``last_grad_norms``; and, to refuse a state that does
        not fit, the class name, K, the parameters' shapes and the decay mask. The parameters
        and gradients are not in it: save the stacked parameters yourself, as with torch.optim.
        It holds only tensors, lists, dicts, strings, numbers and None, so
        ``torch.load(path)`` reads it with the default ``weights_only=True``.
        """
        return {
            "optimizer": type(self).__name__,
            "num_members": self.num_members,
            "shapes": [list(p.shape) for p in self.params],
            "decay_mask": None if self.decay_mask is None else list(self.decay_mask),
            "steps": self.steps.clone(),
            "state": {
                name: [t.clone(memory_format=torch.contiguous_format) for t in tensors]
                for name, tensors in self.state.items()
            },
            "hyperparameters": {name: t.clone() for name, t in self._hp.items()},
            "max_grad_norm": None if self._max_grad_norm is None else self._max_grad_norm.clone(),
            "active": self._active.clone(),
            "last_grad_norms": None if self.last_grad_norms is None else self.last_grad_norms.clone(),
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Continue from a :meth:`state_dict` of an optimizer built like this one.

        The state is checked whole before anything changes. The parameters are not touched:
        load their values yourself (e.g. ``p.copy_(saved)`` under ``torch.no_grad()``).

        Raises:
            ConfigError: not a state_dict of this class, or one for another K, other parameter
                shapes or another decay_mask, or holding values out of range.
        """
        name = type(self).__name__
        keys = ("optimizer", "num_members", "shapes", "decay_mask", "steps", "state",
                "hyperparameters", "max_grad_norm", "active", "last_grad_norms")
        missing = [key for key in keys if not isinstance(state, Mapping) or key not in state]
        if missing:
            raise ConfigError(f"not a state_dict() of {name}: it lacks {missing[0]!r}")
        if state["optimizer"] != name:
            raise ConfigError(f"the state_dict is {state['optimizer']}'s, not {name}'s")
        k = self.num_members
        if state["num_members"] != k:
            raise ConfigError(
                f"the state_dict has K={state['num_members']} members, this {name} has K={k}"
            )
        shapes = [list(p.shape) for p in self.params]
        if [list(s) for s in state["shapes"]] != shapes:
            raise ConfigError(
                f"the state_dict is for parameters of shapes {state['shapes']}, this {name} "
                f"has {shapes}"
            )
        decay_mask = None if self.decay_mask is None else list(self.decay_mask)
        if state["decay_mask"] != decay_mask:
            raise ConfigError(
                f"the state_dict has decay_mask={state['decay_mask']}, this {name} has "
                f"decay_mask={decay_mask}: build it with the same decay_mask"
            )
        buffers = state["state"]
        if sorted(buffers) != sorted(self._STATE):
            raise ConfigError(
                f"the state_dict's state buffers are {sorted(buffers)}, {name} needs "
                f"{sorted(self._STATE)}"
            )
        for buffer, tensors in buffers.items():
            got = [_shape(t) for t in tensors]
            if got != shapes:
                raise ConfigError(f"the state_dict's {buffer} has shapes {got}, expected {shapes}")
        for key in ("steps", "active", "last_grad_norms"):
            t = state[key]
            if not (t is None and key == "last_grad_norms") and _shape(t) != [k]:
                raise ConfigError(f"the state_dict's {key} must have shape [{k}], got {_shape(t)}")
        if state["active"].dtype != torch.bool:
            raise ConfigError(f"the state_dict's active must be bool, got {state['active'].dtype}")
        if sorted(state["hyperparameters"]) != sorted(self._HYPERPARAMETERS):
            raise ConfigError(
                f"the state_dict's hyperparameters are {sorted(state['hyperparameters'])}, "
                f"{name} has {sorted(self._HYPERPARAMETERS)}"
            )
        hp = {n: self._member_tensor(n, state["hyperparameters"][n]) for n in self._HYPERPARAMETERS}
        max_grad_norm = state["max_grad_norm"]
        if max_grad_norm is not None:
            max_grad_norm = self._member_tensor("max_grad_norm", max_grad_norm)

        with torch.no_grad():
            for buffer, tensors in buffers.items():
                for view, saved in zip(self.state[buffer], tensors, strict=True):
                    view.copy_(saved)
            self.steps.copy_(state["steps"])  # in place: the fused calls hold views of it
        self._hp = hp
        self._max_grad_norm = max_grad_norm
        self._hyperparameters_changed()
        self.active = state["active"]
        norms = state["last_grad_norms"]
        self.last_grad_norms = None if norms is None else norms.to(self._device).clone()

    def __getstate__(self) -> dict:
        self._settle()  # version counters are not pickled: what they said goes in _cleared
        state = self.__dict__.copy()
        # Caches of views into the flat buffers, remade on first use.
        state["_columns"] = {}
        state["_fused_calls"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        # The copies' version counters start afresh.
        self._zeroed = [g._version for g in self._grad_views]

    # -- stepping ------------------------------------------------------------------------------

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of the stacked parameters, like ``torch.optim.Optimizer``.

        The gradients stay attached as zeroed views of one flat [K, P] buffer, so the next
        backward adds into it in place (no allocation, no copy of a transposed gradient). With
        ``set_to_none=True`` (the default) a tensor that then receives no gradient is skipped
        by :meth:`step`, exactly as torch.optim skips a ``None`` gradient; only ``p.grad is
        None`` no longer shows it. A gradient is anything written into ``p.grad`` since:
        backward's, or one written in place by hand (``p.grad.copy_(g)``, ``p.grad += g``),
        or a new tensor assigned to ``p.grad``. Any in-place write counts, even one that
        leaves zeros (e.g. scaling every ``p.grad``); set ``p.grad = None`` to leave a tensor
        out of the step.
        """
        self._settle()
        self._flat["grad"].zero_()
        for i, (p, view) in enumerate(zip(self.params, self._grad_views, strict=True)):
            had = p.grad is not None and not (p.grad is view and self._cleared[i])
            p.grad = view
            self._cleared[i] = set_to_none or not had  # torch leaves a None gradient None
            self._zeroed[i] = view._version

    @torch.no_grad()
    def step(self, lr_scale: float | Tensor | None = None) -> None:
        """Update every active member from the ``.grad`` of the stacked parameters.

        Computes ``last_grad_norms`` (unclipped, every member), clips the gradients in place
        per member where ``max_grad_norm`` is set (as ``clip_grad_norm_`` does), then applies
        the optimizer. Inactive members' parameters, state and step counts stay bit-identical.
        Parameters whose ``.grad`` is None, or that nothing wrote a gradient into since
        :meth:`zero_grad`, are skipped, as in torch.optim; their step count, though, is the
        member's, which goes on, so their next Adam update sees the member's bias correction.

        Args:
            lr_scale: multiplier of the learning rate for this step only, a float or a [K]
                tensor (e.g. warmup/cosine factors per member). A tensor's values are not
                checked (that would synchronise the device every step). The effective lr is
                ``lr * lr_scale``, as ``LambdaLR`` computes ``base_lr * factor``, so AdamW's
                decay also uses the scaled lr.
        """
        if lr_scale is not None:
            lr_scale = self._checked_lr_scale(lr_scale)
        positions = self._gradients()
        if not positions:
            return
        grads = [self._grad_views[i] for i in positions]
        # Per tensor, then the norm of those, as clip_grad_norm_ takes it. One norm over a
        # member's whole flat row would be one call instead of one per tensor, but on the CPU
        # its float32 error grows with the row: 1e-4 relative at 16M parameters.
        norms = _kernels.member_grad_norms(grads)
        self.last_grad_norms = norms
        whole = len(positions) == len(self.params)
        if whole:
            # Every tensor has a gradient: work on the flat buffers' column groups, a couple of
            # tensors instead of one per parameter tensor.
            grouped = self.decay_mask is not None and self._decay is not None
            if grouped not in self._columns:
                self._columns[grouped] = (
                    self._layout.columns(self._flat["param"], grouped),
                    self._layout.columns(self._flat["grad"], grouped),
                    {name: self._layout.columns(self._flat[name], grouped) for name in self._STATE},
                    self._layout.column_groups(grouped),
                )
            params, grads, state, decay_mask = self._columns[grouped]
        else:
            params = [self.params[i] for i in positions]
            state = {name: [tensors[i] for i in positions] for name, tensors in self.state.items()}
            decay_mask = None if self.decay_mask is None else [self.decay_mask[i] for i in positions]
        if self._max_grad_norm is not None:
            _kernels.clip_grads_per_member_(grads, norms, self._max_grad_norm)

        if self.fused:
            self._update_fused(params, grads, state, lr_scale, decay_mask, whole)
            return
        lr = self._hp["lr"]
        if lr_scale is not None:
            lr = lr * (lr_scale.to(device=self._device, dtype=self._hp_dtype)
                       if isinstance(lr_scale, Tensor) else lr_scale)
        frozen = self._inactive_index
        if frozen is None:
            self._update(params, grads, state, lr, decay_mask)
            return
        # Run the kernel on everyone, then put the frozen members back bit for bit: cost
        # proportional to the frozen members, and NaNs in their gradients cannot leak.
        tracked = [*params, *(t for tensors in state.values() for t in tensors), self.steps]
        saved = _kernels.snapshot_members(tracked, frozen)
        self._update(params, grads, state, lr, decay_mask)
        _kernels.restore_members_(tracked, saved, frozen)

    def _gradients(self) -> list[int]:
        """Positions of the tensors that have a gradient, each now in the flat gradient buffer.

        A gradient the caller assigned (or autograd made while ``.grad`` was None) is copied
        into the buffer and ``.grad`` pointed back at the buffer's view.
        """
        self._settle()
        positions = []
        for i, (p, view) in enumerate(zip(self.params, self._grad_views, strict=True)):
            g = p.grad
            if g is None:
                continue
            if g is not view:
                if g.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                view.copy_(g)
                p.grad = view
                self._cleared[i] = False
            elif self._cleared[i]:
                continue
            positions.append(i)
        return positions

    def _settle(self) -> None:
        """Mark as no longer cleared each tensor whose buffer gradient was written since zero_grad."""
        for i, view in enumerate(self._grad_views):
            if self._cleared[i] and view._version != self._zeroed[i]:
                self._cleared[i] = False

    def _checked_lr_scale(self, lr_scale: float | Tensor) -> Tensor | float:
        if not isinstance(lr_scale, Tensor):
            if not lr_scale >= 0.0 or math.isinf(lr_scale):
                raise ConfigError(f"lr_scale must be a finite number >= 0, got {lr_scale}")
            return float(lr_scale)
        if tuple(lr_scale.shape) not in ((), (self.num_members,)):
            raise ConfigError(
                f"lr_scale must be a float or a tensor of shape ({self.num_members},), "
                f"got shape {tuple(lr_scale.shape)}"
            )
        return lr_scale

    def _host_hyperparameters(self) -> dict[str, list[float]]:
        """The hyperparameters as K Python floats each (read from the device once per change)."""
        if self._hp_host is None:
            self._hp_host = {name: t.tolist() for name, t in self._hp.items()}
        return self._hp_host

    def _hyperparameters_changed(self) -> None:
        """Drop what was derived from the old hyperparameters: the host copies and the decay."""
        self._hp_host = None
        self._fused_calls = None  # the fused calls follow the decay groups, which may change here
        # None lets the kernel skip the decay work entirely when no member decays; decided
        # here, not in step(), because the test reads the tensor (a device sync).
        wd = self._hp["weight_decay"]
        no_tensor_decays = self.decay_mask is not None and not any(self.decay_mask)
        self._decay = None if no_tensor_decays or not bool((wd != 0).any()) else wd

    def _update(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        state: dict[str, list[Tensor]],
        lr: Tensor,
        decay_mask: list[bool] | None,
    ) -> None:
        raise NotImplementedError

    def _update_fused(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        state: dict[str, list[Tensor]],
        lr_scale: Tensor | float | None,
        decay_mask: list[bool] | None,
        whole: bool,
    ) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        shapes = ", ".join(str(tuple(p.shape)) for p in self.params)
        return f"{type(self).__name__}(K={self.num_members}, params=[{shapes}])"


class BatchedAdam(_BatchedOptimizer):
    """``torch.optim.Adam`` (coupled L2 weight decay) for K stacked members at once.

    Args:
        params: stacked parameter tensors, each [K, ...] (e.g. the values of
            ``torch.func.stack_module_state(models)[0]``), same device and dtype.
        lr, betas, eps, weight_decay: as in torch.optim.Adam; each a float shared by all
            members or a tensor of shape [K], best float64 (a float32 tensor carries float32
            values, e.g. 0.9990000128746033 for 0.999).
        max_grad_norm: per-member gradient clipping threshold (float or [K] tensor, inf = off
            for that member), or None for no clipping.
        decay_mask: one bool per parameter tensor; False gives that tensor weight_decay 0.
        fused: True: update with torch's fused Adam kernel, the one ``torch.optim.Adam(...,
            fused=True)`` runs, called on each member's row (one pass over memory per step;
            member k then matches ``fused=True`` bit for bit, but for an ulp on a few
            elements where the row and the separate tensors put them in the kernel's
            vectorised loop and its tail differently). False: the stacked kernels
            (about ten whole-buffer operations; member k matches torch.optim's default
            for-loop implementation). None (default): fused wherever the kernel can run (CPU
            with torch >= 2.4, CUDA).

    Step counts are per member, not per tensor as in torch.optim: a tensor that misses
    gradients at some steps then sees the member's bias correction, not its own.

    Not a ``torch.optim.Optimizer`` subclass (no ``param_groups``, so no
    ``torch.optim.lr_scheduler``): a schedule goes through ``step(lr_scale=...)``, LambdaLR's
    factor, and a checkpoint through :meth:`state_dict` / :meth:`load_state_dict`.

    Raises:
        ConfigError: a hyperparameter out of range or of the wrong shape, bad params, or
            fused=True where the fused kernel cannot run.
    """

    _HYPERPARAMETERS = ("lr", "eps", "beta1", "beta2", "weight_decay")
    _STATE = ("exp_avg", "exp_avg_sq")
    _kernel = staticmethod(_kernels.adam_)
    _decoupled = False

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: HyperparameterValue = 1e-3,
        betas: tuple[HyperparameterValue, HyperparameterValue] = (0.9, 0.999),
        eps: HyperparameterValue = 1e-8,
        weight_decay: HyperparameterValue = 0.0,
        *,
        max_grad_norm: HyperparameterValue | None = None,
        decay_mask: Sequence[bool] | None = None,
        fused: bool | None = None,
    ) -> None:
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ConfigError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        super().__init__(
            params,
            {
                "lr": lr,
                "eps": eps,
                "beta1": betas[0],
                "beta2": betas[1],
                "weight_decay": weight_decay,
            },
            max_grad_norm,
            decay_mask,
        )
        # Each member's parameters are one dense row of the flat buffer, as the kernel needs.
        why_not = fused_adam_unavailable(self._device, self.params[0].dtype)
        if fused and why_not:
            raise ConfigError(f"fused=True is not possible: {why_not}")
        self.fused = fused is not False and why_not is None
        if self.fused:
            # As torch.optim's fused Adam: float32 step counts, which the kernel reads.
            self.steps = self.steps.to(torch.float32)

    def _update(self, params, grads, state, lr, decay_mask):
        hp = self._hp
        self._kernel(
            params,
            grads,
            state["exp_avg"],
            state["exp_avg_sq"],
            self.steps,
            lr=lr,
            beta1=hp["beta1"],
            beta2=hp["beta2"],
            eps=hp["eps"],
            weight_decay=self._decay,
            decay_mask=decay_mask,
        )

    def _update_fused(self, params, grads, state, lr_scale, decay_mask, whole):
        hp = self._host_hyperparameters()
        lr = hp["lr"]
        if isinstance(lr_scale, Tensor):
            scale = lr_scale.expand(self.num_members).tolist()  # a device sync if on a GPU
            lr = [a * b for a, b in zip(lr, scale, strict=True)]
        elif lr_scale is not None:
            lr = [a * lr_scale for a in lr]
        tensors = (params, grads, state["exp_avg"], state["exp_avg_sq"])
        def calls() -> list:
            decays = [self._decay is not None and (decay_mask is None or decay_mask[i]) for i in range(len(params))]
            return _kernels.member_calls(*tensors, self.steps, decays)

        if whole:
            # The flat buffers only change in keep(), the decay groups with the
            # hyperparameters: the member slices are made once.
            if self._fused_calls is None:
                self._fused_calls = calls()
            member_calls = self._fused_calls
        else:
            member_calls = calls()
        _kernels.adam_fused_rows_(
            member_calls,
            self.steps,
            members=self._active_rows,
            lr=lr,
            beta1=hp["beta1"],
            beta2=hp["beta2"],
            eps=hp["eps"],
            weight_decay=None if self._decay is None else hp["weight_decay"],
            decoupled_weight_decay=self._decoupled,
        )


class BatchedAdamW(BatchedAdam):
    """``torch.optim.AdamW`` (decoupled decay θ ← θ·(1 − lr·λ)) for K stacked members.

    Same arguments as :class:`BatchedAdam`; ``weight_decay`` defaults to 0.01 as in torch.
    Not a ``torch.optim.Optimizer`` subclass: a schedule goes through ``step(lr_scale=...)``,
    LambdaLR's factor, and a checkpoint through :meth:`state_dict` / :meth:`load_state_dict`.
    """

    _kernel = staticmethod(_kernels.adamw_)
    _decoupled = True

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: HyperparameterValue = 1e-3,
        betas: tuple[HyperparameterValue, HyperparameterValue] = (0.9, 0.999),
        eps: HyperparameterValue = 1e-8,
        weight_decay: HyperparameterValue = 1e-2,
        *,
        max_grad_norm: HyperparameterValue | None = None,
        decay_mask: Sequence[bool] | None = None,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            max_grad_norm=max_grad_norm,
            decay_mask=decay_mask,
            fused=fused,
        )


class BatchedAdadelta(_BatchedOptimizer):
    """``torch.optim.Adadelta`` for K stacked members at once.

    Args:
        params: stacked parameter tensors, each [K, ...], same device and dtype.
        lr, rho, eps, weight_decay: as in torch.optim.Adadelta; each a float or a [K] tensor,
            best float64 (a float32 tensor carries float32 values).
        max_grad_norm: per-member clipping threshold (float or [K], inf = off) or None.
        decay_mask: one bool per parameter tensor; False gives that tensor weight_decay 0.

    Not a ``torch.optim.Optimizer`` subclass (no ``param_groups``, so no
    ``torch.optim.lr_scheduler``): a schedule goes through ``step(lr_scale=...)``, LambdaLR's
    factor, and a checkpoint through :meth:`state_dict` / :meth:`load_state_dict`.

    Raises:
        ConfigError: a hyperparameter out of range or of the wrong shape, or bad params.
    """

    _HYPERPARAMETERS = ("lr", "rho", "eps", "weight_decay")
    _STATE = ("square_avg", "acc_delta")

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: HyperparameterValue = 1.0,
        rho: HyperparameterValue = 0.9,
        eps: HyperparameterValue = 1e-6,
        weight_decay: HyperparameterValue = 0.0,
        *,
        max_grad_norm: HyperparameterValue | None = None,
        decay_mask: Sequence[bool] | None = None,
    ) -> None:
        super().__init__(
            params,
            {"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay},
            max_grad_norm,
            decay_mask,
        )

    def _update(self, params, grads, state, lr, decay_mask):
        hp = self._hp
        _kernels.adadelta_(
            params,
            grads,
            state["square_avg"],
            state["acc_delta"],
            self.steps,
            lr=lr,
            rho=hp["rho"],
            eps=hp["eps"],
            weight_decay=self._decay,
            decay_mask=decay_mask,
        )


def _check_params(params: Iterable[Tensor]) -> list[Tensor]:
    if isinstance(params, Tensor):
        raise ConfigError("params must be a list of stacked tensors, got a single tensor")
    params = list(params)
    if not params:
        raise ConfigError("params must hold at least one stacked tensor, got an empty list")
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise ConfigError(f"params must be tensors, got {type(p).__name__} at index {i}")
        if not p.is_floating_point():
            raise ConfigError(f"params must be floating point, got {p.dtype} at index {i}")
        if not p.is_leaf:
            raise ConfigError(
                f"params must be leaf tensors, got one computed from others at index {i} (e.g. "
                f"torch.stack of the models' parameters): stack the models with "
                f"torch.func.stack_module_state, whose tensors are leaves"
            )
        if p.ndim == 0 or p.shape[0] == 0:
            raise ConfigError(
                f"params must have a leading member dimension K >= 1, got shape "
                f"{tuple(p.shape)} at index {i}"
            )
    k, device, dtype = params[0].shape[0], params[0].device, params[0].dtype
    for i, p in enumerate(params):
        if p.shape[0] != k:
            raise ConfigError(
                f"all params must share the leading member dimension K={k}, got shape "
                f"{tuple(p.shape)} at index {i}"
            )
        if p.device != device or p.dtype != dtype:
            raise ConfigError(
                f"all params must share one device and dtype ({device}, {dtype}), got "
                f"({p.device}, {p.dtype}) at index {i}"
            )
    if len({id(p) for p in params}) != len(params):
        raise ConfigError("params must not contain the same tensor twice")
    return params


def _shape(t: object) -> list[int] | str:
    """A tensor's shape as a list, or what else ``t`` is (for messages about a loaded state)."""
    return list(t.shape) if isinstance(t, Tensor) else type(t).__name__


def _check_decay_mask(decay_mask: Sequence[bool] | None, n: int) -> tuple[bool, ...] | None:
    if decay_mask is None:
        return None
    mask = tuple(decay_mask)
    if len(mask) != n:
        raise ConfigError(
            f"decay_mask must have one entry per parameter tensor ({n}), got {len(mask)}"
        )
    if not all(isinstance(m, bool) for m in mask):
        raise ConfigError(f"decay_mask entries must be bool, got {list(mask)}")
    return mask
