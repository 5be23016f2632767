"""Pure per-member optimizer kernels over stacked parameters.

Every tensor here is *stacked*: its leading dimension indexes K members (independent models
made with ``torch.func.stack_module_state``). Hyperparameters are 1-D tensors of shape [K]
(float64 recommended: they play the part of the Python floats torch.optim computes with) and
are broadcast against each parameter as [K, 1, ..., 1].

The kernels mirror the floating point operations of PyTorch's single-tensor implementations
(``torch/optim/adam.py:_single_tensor_adam``, ``torch/optim/adadelta.py``,
``torch/nn/utils/clip_grad.py``) operation for operation, so member k reproduces a solo
``torch.optim`` run to the last bit or nearly so. Known sources of difference: the bias
corrections use ``torch.pow`` where torch.optim uses Python's ``**``; the two disagree by one
ulp now and then. For float16/bfloat16 parameters, an op torch.optim calls with ``alpha=``
(coupled weight decay, Adadelta's lr) is rounded differently by torch's CPU kernel in its
vectorised loop and in its scalar tail, which a stacked tensor and a solo one reach
differently.

The stacked kernels loop over parameter tensors, never over members, and update in place.
:func:`adam_fused_rows_` is the other way round: it hands each member's slices to torch's fused
Adam kernel (what ``torch.optim.Adam(fused=True)`` runs), one call per member and decay group,
so every element is read and written once per step instead of once per operation.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "adadelta_",
    "adam_",
    "adam_fused_rows_",
    "adamw_",
    "clip_grads_per_member_",
    "member_grad_norms",
    "member_calls",
    "restore_members_",
    "snapshot_members",
]

# torch.nn.utils.clip_grad_norm_ adds this to the norm before dividing.
_CLIP_EPS = 1e-6


def _opmath(dtype: torch.dtype) -> torch.dtype:
    """The dtype torch computes a ``dtype`` tensor's elementwise ops in: float32 for half types."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class _PerMember:
    """Casts [K] hyperparameter tensors to the dtype torch.optim uses them in, viewed [K, 1, ...].

    torch.optim passes Python floats. An elementwise op takes such a scalar in the dtype it
    computes in (float32 for float16/bfloat16 parameters, else the parameter's dtype), except
    an ``alpha=`` argument and the number added by ``add``, which are first rounded to the
    parameter's dtype (``rounded=True``). A half-precision kernel here therefore computes
    with float32 hyperparameters and rounds each result to the parameter's dtype where
    torch's op stores it (in place: once, on the store). Cast once per dtype, not per tensor.
    """

    def __init__(self, **values: Tensor) -> None:
        self._values = values
        self._cast: dict[tuple[str, torch.dtype], Tensor] = {}
        self._views: dict[tuple[str, torch.dtype, int], Tensor] = {}

    def __call__(self, name: str, like: Tensor, rounded: bool = False) -> Tensor:
        """``name`` for tensors like ``like``; ``rounded``: torch's op rounds it to like's dtype."""
        dtype = like.dtype if rounded else _opmath(like.dtype)
        key = (name, dtype, like.ndim)
        view = self._views.get(key)
        if view is None:
            cast = self._cast.get(key[:2])
            if cast is None:
                cast = self._values[name].to(dtype=dtype, device=like.device)
                self._cast[key[:2]] = cast
            view = self._views[key] = cast.view((-1,) + (1,) * (like.ndim - 1))
        return view


def _lerp_(start: Tensor, end: Tensor, weight: Tensor) -> Tensor:
    """``start.lerp_(end, weight)``, for a weight in the dtype the op computes in."""
    if weight.dtype == start.dtype:
        return start.lerp_(end, weight)
    # lerp_ wants one dtype: compute in the weight's, round once, as torch's half kernel does.
    return start.copy_(start.to(weight.dtype).lerp_(end.to(weight.dtype), weight))


def member_grad_norms(grads: Sequence[Tensor]) -> Tensor:
    """Per-member L2 norm over all gradients, as ``clip_grad_norm_`` computes it for one model.

    Args:
        grads: stacked gradients, each of shape [K, ...].

    Returns:
        Tensor of shape [K] in the gradients' dtype: the norm of the per-tensor norms.
    """
    per_tensor = [
        torch.linalg.vector_norm(g, dim=tuple(range(1, g.ndim))) if g.ndim > 1 else g.abs()
        for g in grads
    ]
    return torch.linalg.vector_norm(torch.stack(per_tensor, dim=1), dim=1)


def clip_grads_per_member_(grads: Sequence[Tensor], norms: Tensor, max_norm: Tensor) -> None:
    """Scale member k's gradients by ``min(1, max_norm[k] / (norms[k] + 1e-6))`` in place.

    Args:
        grads: stacked gradients, each of shape [K, ...]; modified in place.
        norms: [K] unclipped per-member norms from :func:`member_grad_norms`.
        max_norm: [K] thresholds; ``inf`` leaves that member's gradients untouched.
    """
    # Same expression as torch: `max_norm / (total_norm + 1e-6)` evaluates as
    # `(total_norm + 1e-6).reciprocal() * max_norm` (Tensor.__rtruediv__).
    # A half-precision product with the float32 threshold is rounded back, as in torch.
    threshold = max_norm.to(dtype=_opmath(norms.dtype), device=norms.device)
    coef = ((norms + _CLIP_EPS).reciprocal() * threshold).to(norms.dtype)
    coef = torch.clamp(coef, max=1.0)
    # An infinite threshold means "off"; multiplying by exactly 1 keeps NaN/inf gradients as they
    # are instead of turning inf * 0 into NaN.
    coef = torch.where(torch.isinf(max_norm).to(norms.device), torch.ones_like(coef), coef)
    for g in grads:
        g.mul_(coef.view((-1,) + (1,) * (g.ndim - 1)))


def adam_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    steps: Tensor,
    *,
    lr: Tensor,
    beta1: Tensor,
    beta2: Tensor,
    eps: Tensor,
    weight_decay: Tensor | None,
    decay_mask: Sequence[bool] | None = None,
    decoupled_weight_decay: bool = False,
) -> None:
    """One Adam (or AdamW) step for every member, in place, exactly as torch.optim.Adam.

    Args:
        params, grads, exp_avgs, exp_avg_sqs: stacked tensors [K, ...], aligned by position.
        steps: [K] step counts (floating point); incremented in place.
        lr, beta1, beta2, eps: [K] hyperparameters.
        weight_decay: [K] decay factors, or None for no decay at all (skips the work).
        decay_mask: one bool per parameter tensor; False exempts that tensor from decay.
        decoupled_weight_decay: False for Adam's L2 (g += wd*θ), True for AdamW (θ *= 1-lr*wd).
    """
    steps.add_(1)
    # The scalar arithmetic torch.optim does in Python floats, done once for all members.
    bias_correction1 = 1 - beta1**steps
    bias_correction2 = 1 - beta2**steps
    step_size = lr / bias_correction1
    values = {
        "one_minus_beta1": 1 - beta1,
        "beta2": beta2,
        "one_minus_beta2": 1 - beta2,
        "bias_correction2_sqrt": bias_correction2**0.5,
        "neg_step_size": -step_size,
        "eps": eps,
    }
    if weight_decay is not None:
        values["decay"] = 1 - lr * weight_decay if decoupled_weight_decay else weight_decay
    per_member = _PerMember(**values)

    for i, param in enumerate(params):
        grad = grads[i]
        exp_avg = exp_avgs[i]
        exp_avg_sq = exp_avg_sqs[i]
        if weight_decay is not None and (decay_mask is None or decay_mask[i]):
            if decoupled_weight_decay:
                param.mul_(per_member("decay", param))
            else:
                # == grad.add(param, alpha=wd): both evaluate fma(param, wd, grad).
                grad = torch.addcmul(grad, param, per_member("decay", param, rounded=True))

        _lerp_(exp_avg, grad, per_member("one_minus_beta1", param))
        # addcmul_(g, g, value=c) evaluates v + (c*g)*g; pre-scaling one factor keeps that order.
        exp_avg_sq.mul_(per_member("beta2", param)).addcmul_(
            grad * per_member("one_minus_beta2", param), grad
        )
        # .to(): a half-precision quotient is rounded before eps is added, as in torch.
        denom = (exp_avg_sq.sqrt() / per_member("bias_correction2_sqrt", param)).to(param.dtype)
        denom.add_(per_member("eps", param, rounded=True))
        # addcdiv_(m, d, value=-s) evaluates p + (-s*m)/d.
        param.addcdiv_(exp_avg * per_member("neg_step_size", param), denom)


adamw_ = functools.partial(adam_, decoupled_weight_decay=True)
adamw_.__doc__ = "One AdamW step for every member: :func:`adam_` with decoupled weight decay."


def member_calls(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    steps: Tensor,
    decays: Sequence[bool],
) -> list[list[tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor], list[Tensor], bool]]]:
    """The fused kernel's calls for each member, as :func:`adam_fused_rows_` takes them.

    Member k gets one call per decay group (its decayed tensors, then the others):
    ``(params, grads, exp_avgs, exp_avg_sqs, steps, decayed)``, the first five lists of member
    k's slices (views, made once, reusable while the tensors stay the same).

    Args:
        params, grads, exp_avgs, exp_avg_sqs: stacked tensors [K, ...], aligned by position.
        steps: [K] step counts; member k's calls read ``steps[k]``.
        decays: one bool per tensor: whether it takes weight decay.
    """
    n = len(params)
    groups = [(idx, d) for d in (True, False) if (idx := [i for i in range(n) if bool(decays[i]) == d])]
    rows = [[t.unbind(0) for t in tensors] for tensors in (params, grads, exp_avgs, exp_avg_sqs)]
    return [
        [
            (*([r[i][k] for i in idx] for r in rows), [step] * len(idx), decayed)
            for idx, decayed in groups
        ]
        for k, step in enumerate(steps.unbind(0))
    ]


def adam_fused_rows_(
    calls: Sequence[Sequence[tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor], list[Tensor], bool]]],
    steps: Tensor,
    *,
    members: Sequence[int],
    lr: Sequence[float],
    beta1: Sequence[float],
    beta2: Sequence[float],
    eps: Sequence[float],
    weight_decay: Sequence[float] | None,
    decoupled_weight_decay: bool = False,
) -> None:
    """One Adam (or AdamW) step for ``members``, in place, with torch's fused kernel.

    Member k gets exactly what ``torch.optim.Adam(..., fused=True)`` computes for model k
    alone: the same kernel, called on member k's slices with member k's hyperparameters.

    Args:
        calls: per member, its fused-kernel calls (slices, step, whether decayed).
        steps: the [K] float32 step counts the calls' steps are views of.
        members: the members to update; the others are left exactly as they are.
        lr, beta1, beta2, eps: K host floats each (a Python float per member, as torch.optim
            passes them to the kernel).
        weight_decay: K host floats for the decayed calls, or None (no call is decayed).
        decoupled_weight_decay: False for Adam's L2, True for AdamW's decoupled decay.
    """
    if not members:
        return
    kernel = torch._fused_adamw_ if decoupled_weight_decay else torch._fused_adam_
    if len(members) == steps.shape[0]:
        steps.add_(1)
    else:
        index = torch.tensor(members, device=steps.device)
        steps.index_add_(0, index, torch.ones_like(index, dtype=steps.dtype))
    for k in members:
        lr_k, beta1_k, beta2_k, eps_k = lr[k], beta1[k], beta2[k], eps[k]
        decay_k = 0.0 if weight_decay is None else weight_decay[k]
        for p, g, m, v, step, decayed in calls[k]:
            kernel(
                p, g, m, v, [], step,
                lr=lr_k, beta1=beta1_k, beta2=beta2_k, eps=eps_k,
                weight_decay=decay_k if decayed else 0.0,
                amsgrad=False, maximize=False,
            )


def adadelta_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    square_avgs: Sequence[Tensor],
    acc_deltas: Sequence[Tensor],
    steps: Tensor,
    *,
    lr: Tensor,
    rho: Tensor,
    eps: Tensor,
    weight_decay: Tensor | None,
    decay_mask: Sequence[bool] | None = None,
) -> None:
    """One Adadelta step for every member, in place, exactly as torch.optim.Adadelta.

    Args:
        params, grads, square_avgs, acc_deltas: stacked tensors [K, ...], aligned by position.
        steps: [K] step counts; incremented in place (Adadelta's math does not use them).
        lr, rho, eps: [K] hyperparameters.
        weight_decay: [K] L2 factors added to the gradient, or None for no decay at all.
        decay_mask: one bool per parameter tensor; False exempts that tensor from decay.
    """
    steps.add_(1)
    values = {"rho": rho, "one_minus_rho": 1 - rho, "eps": eps, "neg_lr": -lr}
    if weight_decay is not None:
        values["weight_decay"] = weight_decay
    per_member = _PerMember(**values)

    for i, param in enumerate(params):
        grad = grads[i]
        square_avg = square_avgs[i]
        acc_delta = acc_deltas[i]
        if weight_decay is not None and (decay_mask is None or decay_mask[i]):
            grad = torch.addcmul(grad, param, per_member("weight_decay", param, rounded=True))

        rho_k = per_member("rho", param)
        one_minus_rho = per_member("one_minus_rho", param)
        eps_k = per_member("eps", param, rounded=True)
        square_avg.mul_(rho_k).addcmul_(grad * one_minus_rho, grad)
        std = square_avg.add(eps_k).sqrt_()
        delta = acc_delta.add(eps_k).sqrt_()
        delta.div_(std).mul_(grad)
        acc_delta.mul_(rho_k).addcmul_(delta * one_minus_rho, delta)
        # == param.add_(delta, alpha=-lr).
        param.addcmul_(delta, per_member("neg_lr", param, rounded=True))


def snapshot_members(tensors: Sequence[Tensor], index: Tensor) -> list[Tensor]:
    """Copies of the members ``index`` of each stacked tensor (for :func:`restore_members_`)."""
    return [t.index_select(0, index) for t in tensors]


def restore_members_(tensors: Sequence[Tensor], saved: Sequence[Tensor], index: Tensor) -> None:
    """Write members ``index`` back from a :func:`snapshot_members` copy, in place."""
    for t, s in zip(tensors, saved, strict=True):
        t.index_copy_(0, index, s)
