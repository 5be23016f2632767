"""The stacked forward of a plain ``nn.Sequential`` written out as batched matmuls.

``torch.vmap(functional_call(...))`` runs any model, but every op goes through vmap's batching
rules, and for the small models a CPU tunes that costs more than the matmuls (digits-mlp, K=16,
one thread: forward+backward 3.1 ms under vmap, 2.5 ms written out; ``benchmarks/step_costs.py``).
An ``nn.Sequential`` of the layers below needs no vmap: a Linear layer of K members is one
``baddbmm`` of [K, N, in] by the stacked [K, in, out] weights, and activations and dropout act
element by element on the [K, ...] activations. The values are vmap's up to float rounding
(tested against it); any other model goes through vmap.

Written out: ``Linear``, ``LayerNorm``, ``Flatten``, ``Softmax``/``LogSoftmax`` (with a
``dim``), ``Identity``, ``Dropout`` and the elementwise activations in ``_ELEMENTWISE``, in
``nn.Sequential`` containers (nested or not), with no buffers and no hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adamtune.workloads import accuracy, cross_entropy, one_value, targets_per_prediction

# Modules whose forward acts on each element alone (dropout draws one mask element per
# element, so each member gets its own mask) and that hold no parameters.
_ELEMENTWISE = (
    nn.Identity, nn.Dropout, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Tanh, nn.Sigmoid, nn.ELU, nn.CELU, nn.SELU, nn.Softplus, nn.Hardtanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Tanhshrink, nn.Softsign,
)

StackedForward = Callable[[dict[str, Tensor], Tensor], Tensor]

# A Linear layer with fewer outputs than this (a classifier's head) runs as ``_NarrowLinear``.
# MKL's batched matmul is slow for products with a narrow result: [16, 64, 128] @ [16, 128, 10]
# and the [16, 128, 64] @ [16, 64, 10] weight gradient of its backward took 3-4x as long as the
# same products computed transposed (195 against 55 us, 216 against 48 us, one thread, AMD
# EPYC); from 32 outputs on, the two ways were within 10% of each other, the usual way ahead.
_NARROW = 16


class _NarrowLinear(torch.autograd.Function):
    """``h @ w^T + b`` for stacked ``h`` [K, N, in] and ``w`` [K, out, in] with a narrow ``out``.

    Computed as ``(w @ h^T)^T``; autograd's own backward of that would hand the layer below a
    transposed [K, N, in] gradient, and torch's elementwise backward ops (ReLU's, for one) run
    several times slower on that layout (251 against 10 us for a [16, 64, 128] ReLU, Xeon, two
    threads) than the matmuls gain. The backward here makes every gradient in its dense layout.
    """

    @staticmethod
    def forward(ctx, h: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        ctx.save_for_backward(h, w)
        ctx.has_bias = b is not None
        k, n, o = w.shape[0], h.shape[1], w.shape[1]
        # [K, N, out] laid out [K, out, N], written in place: a tensor of its own, not a view
        # (autograd forbids changing in place a view a Function returns, as ReLU(inplace=True) does)
        out = torch.empty_strided((k, n, o), (o * n, 1, n), dtype=w.dtype, device=w.device)
        if b is None:
            torch.bmm(w, h.transpose(1, 2), out=out.transpose(1, 2))
        else:
            torch.baddbmm(b.unsqueeze(2), w, h.transpose(1, 2), out=out.transpose(1, 2))
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        h, w = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad
        gh = torch.bmm(g, w) if need_h else None  # [K, N, in], dense
        gw = torch.bmm(g.transpose(1, 2), h) if need_w else None  # [K, out, in], dense
        gb = g.sum(1) if need_b and ctx.has_bias else None
        return gh, gw, gb


def _leaves(module: nn.Module) -> Iterator[nn.Module]:
    """The modules a Sequential runs, in order: one used twice comes twice (``named_children``
    would list it once)."""
    if type(module) is nn.Sequential:
        for child in module._modules.values():
            if child is not None:
                yield from _leaves(child)
    else:
        yield module


def _has_hooks(module: nn.Module) -> bool:
    return any(
        getattr(m, attr, None)
        for m in module.modules()
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    )


def _linear(m: nn.Linear, names: dict[int, str]):
    narrow = m.out_features < _NARROW
    weight = names[id(m.weight)]
    bias = names[id(m.bias)] if m.bias is not None else None

    def run(p: dict[str, Tensor], h: Tensor, stacked: bool) -> Tensor:
        w = p[weight]  # [K, out, in]
        k = w.shape[0]
        lead = h.shape[1:-1] if stacked else h.shape[:-1]
        if h.shape[-1] != m.in_features:  # the reshape below would say only "shape ... is invalid"
            raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({lead.numel()}x{h.shape[-1]} "
                               f"and {m.in_features}x{m.out_features})")
        # An unstacked input (the minibatch itself) is shared: expand is a view, not K copies.
        h3 = h.reshape(k, -1, m.in_features) if stacked else h.reshape(1, -1, m.in_features).expand(k, -1, -1)
        b = p[bias] if bias is not None else None
        if narrow:
            out = _NarrowLinear.apply(h3, w, b)
        else:
            wt = w.transpose(1, 2)
            out = torch.bmm(h3, wt) if b is None else torch.baddbmm(b.unsqueeze(1), h3, wt)
        return out.reshape(k, *lead, m.out_features)
    return run


def _layer_norm(m: nn.LayerNorm, names: dict[int, str]):
    shape = tuple(m.normalized_shape)
    weight = names[id(m.weight)] if m.weight is not None else None
    bias = names[id(m.bias)] if m.bias is not None else None

    def run(p: dict[str, Tensor], h: Tensor, stacked: bool) -> Tensor:
        # [K, *shape] -> [K, 1, ..., 1, *shape], broadcasting over the member's other dims
        ones = (1,) * (h.ndim - (1 if stacked else 0) - len(shape))
        h = F.layer_norm(h, shape, None, None, m.eps)
        w = p[weight] if weight is not None else None
        b = p[bias] if bias is not None else None
        if w is not None:
            h = h * w.reshape(w.shape[0], *ones, *shape)
        if b is not None:
            h = h + b.reshape(b.shape[0], *ones, *shape)
        return h
    return run


def _member_dim(dim: int, stacked: bool) -> int:
    """A member's dimension ``dim`` in the [K, ...] tensor (the member dimension comes first)."""
    return dim + 1 if stacked and dim >= 0 else dim


def _flatten(m: nn.Flatten):
    def run(p: dict[str, Tensor], h: Tensor, stacked: bool) -> Tensor:
        return torch.flatten(h, _member_dim(m.start_dim, stacked), _member_dim(m.end_dim, stacked))
    return run


def _softmax(m: nn.Softmax | nn.LogSoftmax):
    fn = F.softmax if type(m) is nn.Softmax else F.log_softmax

    def run(p: dict[str, Tensor], h: Tensor, stacked: bool) -> Tensor:
        return fn(h, _member_dim(m.dim, stacked))
    return run


def stacked_forward(model: nn.Module) -> StackedForward | None:
    """``forward(params, x)``: every member's output, [K, *out], or None if ``model`` isn't covered.

    Args:
        model: one member's module (its parameters may live on the meta device); its
            ``training`` flags are read at each call, so ``model.eval()`` turns dropout off.
            ``params`` maps ``model``'s parameter names to stacked [K, ...] tensors; ``x`` is
            the minibatch shared by all members.
    """
    if type(model) is not nn.Sequential or next(model.buffers(), None) is not None or _has_hooks(model):
        return None
    # Each parameter under the name ``params`` has for it: a module used twice, or a weight tied
    # to another module's, is one stacked tensor under the first name, as named_parameters gives.
    names = {id(p): n for n, p in model.named_parameters()}
    steps = []  # (run, whether its output is stacked, the Dropout module it is or None)
    for m in _leaves(model):
        if type(m) is nn.Linear:
            steps.append((_linear(m, names), True, None))
        elif type(m) is nn.LayerNorm:
            steps.append((_layer_norm(m, names), m.elementwise_affine, None))
        elif type(m) is nn.Flatten:
            steps.append((_flatten(m), False, None))
        elif type(m) in (nn.Softmax, nn.LogSoftmax) and m.dim is not None:
            steps.append((_softmax(m), False, None))
        elif type(m) in _ELEMENTWISE and next(m.parameters(), None) is None:
            steps.append((lambda p, h, stacked, m=m: m(h), False, m if type(m) is nn.Dropout else None))
        else:
            return None

    def forward(params: dict[str, Tensor], x: Tensor) -> Tensor:
        h, stacked = x, False
        k = next(iter(params.values())).shape[0]
        for run, makes_stacked, draws in steps:
            if draws is not None and draws.training and not stacked:
                # Dropout on the shared input: each member draws its own mask on its own copy.
                h, stacked = h.unsqueeze(0).expand(k, *h.shape), True
                if draws.inplace:
                    h = h.contiguous()
            h = run(params, h, stacked)
            stacked = stacked or makes_stacked
        if not stacked:  # no layer with parameters: every member computes the same thing
            h = h.unsqueeze(0).expand(k, *h.shape)
        return h

    return forward


# CPU log_softmax over the last dimension falls to a slow path when that dimension is narrower
# than one SIMD vector (16 floats with AVX-512): digits' 10 classes over [1024, 10] logits took
# 150 us forward against 7 us with the classes on dimension 1 of a [K, C, N] tensor. Classes
# fewer than this go through cross_entropy's class-on-dimension-1 form (same values, bit for bit).
_NARROW_CLASSES = 16


def one_per_member(fn: Callable[..., Tensor], what: str = "loss") -> Callable[..., Tensor]:
    """``fn`` (vmapped over members) with its [K, 1, ...] result as [K]: a loss or metric that
    returns a one-element tensor such as ``[1]`` instead of a scalar counts, as it does alone.

    Raises:
        WorkloadError: a member's value is not one element; ``what`` names the function
            (``loss``, ``metric 'accuracy'``), as :func:`adamtune.workloads.one_value` does.
    """
    def flat(*args: Tensor) -> Tensor:
        v = fn(*args)
        if v.numel() != v.shape[0]:
            one_value(v[0], what)  # raises, naming one member's shape
        return v.reshape(v.shape[0])
    return flat


def member_losses(loss: Callable[[Tensor, Tensor], Tensor], what: str = "loss") -> Callable[[Tensor, Tensor], Tensor]:
    """``losses(output, target)``: ``loss`` of each member's [K, ...] output against the shared target, [K].
    ``what`` names ``loss`` in an error (``loss``, ``metric 'accuracy'``).

    The built-in cross-entropy is computed over all members in one call (the mean over each
    member's targets that ``ignore_index`` keeps, as ``F.cross_entropy`` takes it); with few
    classes on a CPU the classes are moved to dimension 1, where torch's kernel is fast. The
    built-in accuracy is one comparison of all members' predictions. Any other function runs
    under ``torch.vmap``.
    """
    if loss is accuracy:
        def accuracies(output: Tensor, target: Tensor) -> Tensor:
            # accuracy(output[k], target) for every k in one comparison, no vmap per call:
            # member k's [*lead] predictions broadcast against the target exactly as they do
            # alone (singleton dims keep K apart from a target with more dims).
            # max's indices are argmax's (the first maximum, NaN counted largest), and torch's
            # CPU argmax over a strided last dimension is slow: the narrow head's [16, 64, 10]
            # output, laid out [16, 10, 64], took 118 us against 10 (Xeon, 2 threads).
            pred = output.max(dim=-1).indices
            k, lead = pred.shape[0], pred.shape[1:]
            target = targets_per_prediction(target, lead)  # as accuracy() takes it for one member
            pred = pred.reshape(k, *([1] * max(0, target.ndim - len(lead))), *lead)
            return (pred == target).reshape(k, -1).float().mean(1)
        return accuracies
    if loss is not cross_entropy:
        return one_per_member(torch.vmap(loss, in_dims=(0, None)), what)

    def losses(output: Tensor, target: Tensor) -> Tensor:
        k, c = output.shape[0], output.shape[-1]
        if c < _NARROW_CLASSES and output.device.type == "cpu":
            # [K, *lead, C] -> [K, C, *lead] (a view) against [K, *lead] targets.
            t = target.reshape(output.shape[1:-1]).unsqueeze(0).expand(k, *output.shape[1:-1])
            per = F.cross_entropy(output.movedim(-1, 1), t, reduction="none").reshape(k, -1)
        else:
            t = target.reshape(1, -1).expand(k, -1)
            per = F.cross_entropy(output.reshape(-1, c), t.reshape(-1), reduction="none").view(k, -1)
        counted = (target != -100).sum()  # F.cross_entropy's default ignore_index
        return per.sum(1) / counted

    return losses
