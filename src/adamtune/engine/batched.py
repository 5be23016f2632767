"""Train K trials at once as one stacked, vmapped model with per-member hyperparameters.

A plain ``nn.Sequential`` of known layers runs written out as batched matmuls
(``stacked.py``), any other model under ``torch.vmap(functional_call(...))``.

Member k starts from exactly the weights the sequential engine would build for its trial
(same seed), sees the same minibatches, and is updated by a batched optimizer whose member k
matches ``torch.optim`` step for step. Members are evaluated together; a pruned or diverged
member is told to its Optuna trial at that evaluation and dropped from the stack, so it costs
nothing afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence

import optuna
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from adamtune.config import Config, lr_multiplier
from adamtune.errors import WorkloadError, first_line
from adamtune.engine.evaluate import evaluate, metric_fault
from adamtune.engine.monitor import CurveLog, DivergenceMonitor, GradNormLog
from adamtune.engine.outcome import Outcome
from adamtune.engine.sequential import better, infeasible, prunes
from adamtune.engine.stacked import member_losses, one_per_member, stacked_forward
from adamtune.optim import BatchedAdadelta, BatchedAdam, BatchedAdamW, matrix_decay_mask
from adamtune.storage import report_many, should_prune_many
from adamtune.workloads import Workload, batch_stream, cross_entropy, one_value


class NotBatchable(Exception):
    """The workload's model cannot be trained as a vmapped stack; the reason is the message."""


@contextlib.contextmanager
def as_a_stack() -> Iterator[None]:
    """The settings a stack runs under, restored afterwards (also on an error); a decorator too.

    PyTorch's fast path for ``nn.TransformerEncoder`` and ``nn.MultiheadAttention`` is off: in
    eval mode with a padding mask it packs the batch into a nested tensor, which vmap cannot
    batch; off, the same layers compute the same values with plain ops. And vmap's note that an
    op (fused attention, say) runs member by member "because we have not yet implemented the
    batching rule", which asks the user to file a PyTorch issue, is not shown (a warnings filter
    added at the first stack and kept): it is the stack's doing, not the user's code, whatever
    line of it the warning names.
    """
    global _stacks, _fastpath
    with _stacks_lock:  # the setting is the process's: stacks in several threads share one saved value
        if not any(f[0] == "ignore" and getattr(f[1], "pattern", None) == _PERFORMANCE_DROP for f in warnings.filters):
            # Added once and kept, not per stack: warnings.catch_warnings is not thread-safe, and
            # entering it clears Python's record of the warnings shown (a user's own came again).
            warnings.filterwarnings("ignore", message=_PERFORMANCE_DROP)
        if _stacks == 0:
            _fastpath = torch.backends.mha.get_fastpath_enabled()
            torch.backends.mha.set_fastpath_enabled(False)
        _stacks += 1
    try:
        yield
    finally:
        with _stacks_lock:
            _stacks -= 1
            if _stacks == 0:
                torch.backends.mha.set_fastpath_enabled(_fastpath)


# vmap's note that an op runs member by member, which asks to file a PyTorch issue: the stack's doing.
_PERFORMANCE_DROP = "There is a performance drop because we have not yet implemented the batching rule"
_stacks_lock = threading.Lock()
_stacks = 0  # stacks running now, in any thread
_fastpath = True  # the setting before the first of them


def why_not_batchable(model: nn.Module) -> str | None:
    """A reason the model cannot be stacked, from its structure alone (None if it can)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.momentum is None:
            return (f"{type(m).__name__} at '{name or 'model'}' has momentum=None (a cumulative average, "
                    "which divides by its step count as a Python number: one per member in a stack)")
    if any(not p.requires_grad for p in model.parameters()):
        return "the model has frozen parameters (requires_grad=False)"
    kinds = sorted({f"{str(p.dtype).removeprefix('torch.')} on {p.device}" for p in model.parameters()})
    if len(kinds) > 1:
        return f"its parameters are of several dtypes or devices ({', '.join(kinds)}); a stack needs one"
    return None


def buffer_updates(model: nn.Module, workload: Workload, x: Tensor, y: Tensor) -> tuple[list[str], str | None]:
    """The buffers a training step updates in place, and a reason the model cannot be stacked
    because its forward replaces a buffer (or None).

    ``functional_call`` hands the stack's buffers to every call, so a buffer that ``forward``
    assigns anew (``self.mean = 0.9 * self.mean + ...``) would be lost after each step, and the
    members would train another model than the sequential engine does; one updated in place
    (BatchNorm's running statistics, ``self.mean.mul_(0.9).add_(...)``) is kept per member, which
    :func:`lost_updates` checks on the stack. One training-mode forward of a copy of ``model`` on
    ``x`` shows both; the random state is restored after it.
    """
    if next(model.buffers(), None) is None:
        return [], None
    probe = copy.deepcopy(model).train()
    same = dict(probe.named_buffers())
    before = {n: b.clone() for n, b in same.items()}
    devices = [d for d in {b.device for b in before.values()} if d.type == "cuda"]
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            workload.loss(probe(x), y)
    except Exception:  # noqa: BLE001 - a model that fails here fails in the stack too, and says why there
        return [], None
    updated = []
    for name, b in probe.named_buffers():
        if same.get(name) is not b:
            return [], (f"its forward assigns the buffer '{name}' anew in training, which a vmapped stack cannot "
                        "keep per member (update it in place, e.g. with mul_ and add_, to train batched)")
        if not torch.equal(b, before[name]):
            updated.append(name)
    return updated, None


def lost_updates(updated: Sequence[str], before: dict[str, Tensor], after: dict[str, Tensor]) -> str | None:
    """A reason the stack cannot train the model if a buffer that one model's training step
    updates in place (``updated``) kept its value from ``before`` the stack's step in some member.

    vmap updates a stacked buffer in place through a view of it (BatchNorm's running statistics
    go to the backend's kernel as one [K*C] vector); a backend that worked on a copy would leave
    the members' statistics where they started, and every evaluation in eval mode would be off.
    """
    for name in updated:
        stale = [k for k, (b, a) in enumerate(zip(before[name], after[name])) if torch.equal(b, a)]
        if stale:
            return (f"the buffer '{name}', updated in place in training, did not change in member {stale[0]} "
                    "of the vmapped stack (as it does in one model alone)")
    return None


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on the meta device (no memory).

    ``Module.to("meta")`` makes a new tensor per module, so a weight two modules share (a
    tied embedding and output layer) would become two; here it stays one tensor, which
    ``named_parameters()`` names once, as ``stack_module_state`` and ``functional_call`` expect.
    """
    first: dict[int, tuple[str, str]] = {}
    ties = []  # (module path, attribute, the path and attribute of its first use)
    for path, module in model.named_modules(remove_duplicate=False):
        for store in (module._parameters, module._buffers):
            for name, t in store.items():
                if t is None:
                    continue
                if id(t) not in first:
                    first[id(t)] = (path, name)
                elif first[id(t)] != (path, name):
                    ties.append((path, name, first[id(t)]))
    base = copy.deepcopy(model).to("meta")
    for path, name, (first_path, first_name) in ties:
        setattr(base.get_submodule(path), name, getattr(base.get_submodule(first_path), first_name))
    return base


def evaluates_per_call(model: nn.Module) -> bool:
    """Whether the model's output for one example depends on the others evaluated with it.

    BatchNorm without running statistics normalises with the statistics of the batch in
    evaluation too; its members are then evaluated on the sequential engine's chunks, not on
    a K-th of them, or their values would change with K.
    """
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats for m in model.modules())


def _not_batchable_or_raise(error: Exception, runner: str, model: nn.Module, workload: Workload,
                            device: torch.device | str, evaluation: bool, step: int | None = None) -> None:
    """Raise NotBatchable for ``error`` of the stacked model, or ``error`` itself if one model
    alone fails the same way (a bug in the user's model, loss or metric: each trial's failure
    to record, not a reason to train one at a time).

    ``runner`` names what runs the stack (``torch.func.vmap``); the reason names what it could
    not run (:func:`_refused`), in training or (``evaluation``) in evaluation of ``model``.
    ``step``: the training step ``error`` came at, after the checks before the first. One model
    alone is tried on one step only, which a bug of the user's reached later passes too, so
    there only vmap's own refusals count (:func:`_vmaps_own`).
    """
    if step is not None and not _vmaps_own(error):
        raise error
    what = _refused(error, runner, model, workload, evaluation)
    if step is not None:
        what = f"{what} at step {step}"
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            alone = workload.build_model().to(device)
            if evaluation:
                alone.eval()
                evaluate(alone, workload, device, batches=1)
            else:
                x, y = next(batch_stream(workload.train_data, workload.batch_size, 0))
                one_value(workload.loss(alone(x.to(device)), y.to(device)), "loss").backward()
    except WorkloadError:  # a loss or metric that does not return one value: said in the user's words
        raise
    except Exception:
        raise error from None
    if "device meta" in str(error):  # the stack's model keeps its own tensors on the meta device (meta_copy)
        raise NotBatchable(f"{what}: {OUTSIDE_THE_CALL}") from error
    # torch's advice to file an issue is for torch's developers: this fallback is expected
    kept = [part for part in re.split(r"(?<=[.;])\s+", first_line(error)) if "please file" not in part.lower()]
    said = " ".join(kept).strip() or type(error).__name__
    raise NotBatchable(f"{what}: {type(error).__name__}: {said}") from error


def _refused(error: BaseException, runner: str, model: nn.Module, workload: Workload, evaluation: bool) -> str:
    """What ``runner`` could not run, from the frames ``error`` came through: the workload's loss
    or a metric when one of them was running (``.item()`` in a custom loss: the model stacks fine;
    they run under vmap whatever runs the model), this model when its forward was, else both
    (an error raised in backward names neither)."""
    functions = {"the workload's loss": workload.loss}
    if evaluation:
        functions.update({f"metric {name!r}": fn for name, fn in workload.metrics.items()})
    blame = {}
    for what, fn in functions.items():  # a function, a method, or a module's forward (loss=nn.MSELoss())
        blame[getattr(fn, "__code__", None) or getattr(getattr(fn, "forward", None), "__code__", None)] = (
            f"torch.func.vmap cannot run {what}")
    run = "evaluate" if evaluation else "run"
    for m in model.modules():
        blame.setdefault(getattr(type(m).forward, "__code__", None), f"{runner} cannot {run} this model")
    blame.pop(None, None)
    found = f"{runner} cannot {'evaluate this model with its loss and metrics' if evaluation else 'run this model and loss'}"
    tb = error.__traceback__
    while tb is not None:  # the innermost frame of them decides
        found = blame.get(tb.tb_frame.f_code, found)
        tb = tb.tb_next
    return found


OUTSIDE_THE_CALL = (
    "it uses a parameter other than through its modules during forward's call (activation checkpointing "
    "recomputes the forward in backward, after the call; a parameter kept in a plain attribute or a "
    "closure does the same), where a stack cannot put each member's in its place")


def _vmaps_own(error: BaseException) -> bool:
    """Whether ``error`` is torch.func's refusal of something under vmap (a .item(), a
    data-dependent branch, an op without a batching rule), not an error of the user's code.

    """
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(
        w in text for w in ("vmap", "batching rule", "batchedtensor", "functorch", "torch.func"))


def _batched_functions(base: nn.Module, workload: Workload):
    """``forward(params, buffers, x)`` -> [K, B, ...], ``loss(params, buffers, x, y)`` -> [K], and what runs them.

    A plain Sequential of known layers runs written out as batched matmuls (``stacked.py``);
    any other model runs under ``torch.vmap(functional_call(...))``, each member drawing its
    own random numbers (dropout masks).
    """
    written_out = stacked_forward(base)
    if written_out is not None:
        losses = member_losses(workload.loss)
        return (lambda p, b, x: written_out(p, x)), (lambda p, b, x, y: losses(written_out(p, x), y)), "the stacked Sequential"

    def member_forward(p: dict, b: dict, x: Tensor) -> Tensor:
        return functional_call(base, (p, b), (x,))

    def member_loss(p: dict, b: dict, x: Tensor, y: Tensor) -> Tensor:
        return workload.loss(member_forward(p, b, x), y)

    forward = torch.vmap(member_forward, in_dims=(0, 0, None), randomness="different")
    if workload.loss is cross_entropy:
        # The built-in loss over all members' outputs at once, outside vmap: member_losses
        # sidesteps torch's slow CPU path for few classes, which vmap's batching rule takes.
        losses = member_losses(cross_entropy)
        return forward, (lambda p, b, x, y: losses(forward(p, b, x), y)), "torch.func.vmap"
    vmapped = torch.vmap(member_loss, in_dims=(0, 0, None, None), randomness="different")
    return forward, one_per_member(vmapped, "loss"), "torch.func.vmap"


def _optimizer(params: list[Tensor], configs: Sequence[Config]):
    def col(name: str) -> Tensor:
        return torch.tensor([getattr(c, name) for c in configs], dtype=torch.float64)

    clip = None
    if any(c.max_grad_norm is not None for c in configs):
        clip = torch.tensor([c.max_grad_norm if c.max_grad_norm is not None else math.inf for c in configs],
                            dtype=torch.float64)
    mask = matrix_decay_mask(params)
    kind = configs[0].optimizer
    if kind == "adadelta":
        return BatchedAdadelta(params, lr=col("lr"), rho=col("rho"), eps=col("eps"),
                               weight_decay=col("weight_decay"), max_grad_norm=clip, decay_mask=mask)
    cls = BatchedAdamW if kind == "adamw" else BatchedAdam
    return cls(params, lr=col("lr"), betas=(col("beta1"), col("beta2")), eps=col("eps"),
               weight_decay=col("weight_decay"), max_grad_norm=clip, decay_mask=mask)


def adopt_grad_layout(params: dict[str, Tensor], loss: Callable[[], Tensor]) -> dict[str, Tensor]:
    """The stacked parameters re-laid out in the memory order their gradients arrive in.

    Autograd copies a gradient whose strides differ from its parameter's into the parameter's
    layout, and torch's CPU copy of a transposed [K, m, n] tensor is slow (about 1.8 ms for
    16x128x128 on one core: longer than the step's matmuls). Under vmap a Linear layer's weight
    gradient arrives as [K, out, in] laid out as [K, in, out]; a weight stored that way takes
    its gradient as it comes. One probe backward of ``loss()`` (random state restored after it)
    shows each gradient's layout; values are unchanged, only strides differ.
    """
    layouts: dict[str, Tensor] = {}
    handles = [
        p.register_hook(lambda g, n=n: layouts.__setitem__(n, torch.empty_like(g)))
        for n, p in params.items()
    ]
    devices = [d for d in {p.device for p in params.values()} if d.type == "cuda"]
    try:
        with torch.random.fork_rng(devices=devices):
            loss().backward()
    finally:
        for h in handles:
            h.remove()
    out = {}
    for n, p in params.items():
        p.grad = None
        like = layouts.get(n)
        if like is None or like.stride() == p.stride() or like.shape != p.shape:
            out[n] = p
            continue
        # empty_like keeps a dense gradient's strides (and falls back to contiguous otherwise).
        out[n] = like.copy_(p.detach()).requires_grad_(p.requires_grad)
    return out


@as_a_stack()
def activation_bytes(workload: Workload, model: nn.Module, device: torch.device | str) -> int:
    """Bytes autograd saves for one member's forward pass on one minibatch (measured, not guessed,
    under the stack's settings)."""
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    x, y = next(batch_stream(workload.train_data, workload.batch_size, 0))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        workload.loss(model(x.to(device)), y.to(device))
    return total


def default_memory_budget(device: torch.device | str) -> int:
    """Bytes the stacked members may use: 80% of free GPU memory, or a quarter of free RAM."""
    if torch.device(device).type == "cuda":
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free * 0.8)
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        pages = 8 << 30
    return int(pages // 4)


def members_per_chunk(workload: Workload, device: torch.device | str, budget_bytes: int | None = None,
                      model: nn.Module | None = None) -> int:
    """How many members fit the memory budget: params, grads, two optimizer states, activations.

    ``model``: one the caller already built from ``workload.build_model()`` (else one is built).
    """
    budget = budget_bytes if budget_bytes is not None else default_memory_budget(device)
    return max(1, int(budget // member_bytes(workload, device, model)))


def member_bytes(workload: Workload, device: torch.device | str, model: nn.Module | None = None) -> int:
    """The memory one member of a stack takes: params, grads, two optimizer states, activations.

    ``model``: one the caller already built from ``workload.build_model()`` (else one is built).
    """
    model = (workload.build_model() if model is None else model).to(device)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return max(1, 4 * param_bytes + 2 * activation_bytes(workload, model, device))  # x2: eval and headroom


@as_a_stack()
def train_members(
    workload: Workload,
    configs: Sequence[Config],
    *,
    init_seeds: Sequence[int],
    data_seed: int,
    trials: Sequence[optuna.trial.Trial] | None = None,
    device: torch.device | str = "cpu",
    on_done: Callable[[Sequence[tuple[int, Outcome]]], None] | None = None,
) -> list[Outcome]:
    """Train ``len(configs)`` trials as one stacked model; returns one Outcome per member.

    Args:
        configs: one Config per member, all with the same optimizer.
        init_seeds: the seed each member's model is built under (as the sequential engine does).
        trials: the Optuna trial of each member, to report to and to ask its pruner.
        on_done: called with the ``(member index, outcome)`` of the members that finished
            at an evaluation, as soon as that evaluation is done, so the caller can record
            them (together) before the others end.

    Raises:
        NotBatchable: the model cannot be vmapped: checked before the first step, and again on
            an error in training or evaluation that one model alone does not raise (the members
            not yet handed to ``on_done`` are then the caller's to train again).
    """
    k = len(configs)
    if k == 0:
        return []
    if len({c.optimizer for c in configs}) != 1:
        raise ValueError("all members of a batch must use the same optimizer")
    models = []
    for seed in init_seeds:
        torch.manual_seed(seed)
        models.append(workload.build_model().to(device))
    reason = why_not_batchable(models[0])
    x, y = next(batch_stream(workload.train_data, workload.batch_size, data_seed))
    x, y = x.to(device), y.to(device)
    updated, replaced = buffer_updates(models[0], workload, x, y)
    reason = reason or replaced
    if reason:
        raise NotBatchable(reason)
    base = meta_copy(models[0])
    base.train()
    params, buffers = stack_module_state(models)
    del models

    batched_forward, batched_loss, runner = _batched_functions(base, workload)
    # The probes below run a copy of the model: Python state it keeps (a call counter, an
    # annealed temperature) starts training as the sequential engine's does. A buffer it updates
    # in place (a running mean of its own) is put back likewise.
    probe = copy.deepcopy(base)
    probe_forward, probe_loss, _ = _batched_functions(probe, workload)
    saved = {n: b.clone() for n, b in buffers.items()}
    try:
        params = adopt_grad_layout(params, lambda: probe_loss(params, buffers, x, y).sum())
    except Exception as e:  # e.g. vmap has no batching rule for something in the user's model
        _not_batchable_or_raise(e, runner, base, workload, device, evaluation=False)
    reason = lost_updates(updated, saved, buffers)
    if reason:
        raise NotBatchable(reason)
    per_call = 1 if evaluates_per_call(base) else None

    def evaluate_members(batches: int | None = None, net: nn.Module = base, forward=batched_forward) -> dict[str, Tensor]:
        net.eval()
        try:
            return evaluate(lambda xx: forward(params, buffers, xx), workload, device, batched=True,
                            members=per_call or len(members), batches=batches)
        finally:
            net.train()

    members = list(range(k))  # original index of each row of the stack
    try:  # the evaluation too, once on its first call: a model may take another path in eval mode
        with torch.random.fork_rng(devices=[d for d in {p.device for p in params.values()} if d.type == "cuda"]):
            evaluate_members(batches=1, net=probe, forward=probe_forward)
    except Exception as e:
        _not_batchable_or_raise(e, runner, base, workload, device, evaluation=True)
    with torch.no_grad():
        for n, b in buffers.items():
            b.copy_(saved[n])
    del saved
    opt = _optimizer(list(params.values()), configs)
    multipliers = [lr_multiplier(c, workload.steps) for c in configs]
    scheduled = any(c.warmup > 0 or c.schedule != "constant" for c in configs)
    monitor = DivergenceMonitor(k, workload.divergence_factor, device)
    norms = GradNormLog()
    curve = CurveLog(k)
    best = [infeasible(workload.direction)] * k
    evals = set(workload.evaluation_steps)
    outcomes: list[Outcome | None] = [None] * k
    batches = batch_stream(workload.train_data, workload.batch_size, data_seed)

    finished: list[tuple[int, Outcome]] = []  # since the last hand-over to on_done

    def finish(row: int, status: str, value: float, steps: int, diverged_at: int | None = None,
               error: str | None = None) -> None:
        i = members[row]
        # A member that diverged mid-interval stepped on with the others: its norms end at its step.
        out = Outcome(status, value, steps, curve.member(row),
                      norms.summary(row, configs[i].max_grad_norm, steps), diverged_at, error)
        outcomes[i] = out
        finished.append((i, out))

    def hand_over() -> None:
        if on_done is not None and finished:
            on_done(list(finished))
        finished.clear()

    for step in range(1, workload.steps + 1):
        x, y = next(batches)
        x, y = x.to(device), y.to(device)
        opt.zero_grad(set_to_none=True)
        try:
            losses = batched_loss(params, buffers, x, y)
            losses.sum().backward()
        except Exception as e:  # a path only some steps take (a .item() every n calls): one at a time
            _not_batchable_or_raise(e, runner, base, workload, device, evaluation=False, step=step)
        scale = None
        if scheduled:
            scale = torch.tensor([multipliers[i](step - 1) for i in members], dtype=torch.float64, device=device)
        opt.step(lr_scale=scale)
        norms.append(opt.last_grad_norms)
        monitor.update(step, losses)
        if step not in evals:
            continue

        train_loss, diverged = monitor.end_interval()
        bad_step = monitor.first_bad_step.tolist()
        try:
            metrics = evaluate_members()
        except Exception as e:
            _not_batchable_or_raise(e, runner, base, workload, device, evaluation=True, step=step)
        values = metrics[workload.objective].tolist()
        each = {name: v.tolist() for name, v in metrics.items()}
        # Members whose loss went non-finite mid-interval end without this evaluation, exactly
        # as the sequential engine stops at that step.
        for row in range(len(members)):
            if bad_step[row] >= 0:
                finish(row, "diverged", infeasible(workload.direction), bad_step[row], bad_step[row])
        curve.append(step, {"train_loss": train_loss, **metrics})
        diverged_rows = diverged.tolist()
        reports = []
        for row in range(len(members)):
            i = members[row]
            if outcomes[i] is not None:
                continue
            if not diverged_rows[row]:  # a member's own metric at fault fails that member alone
                fault = metric_fault(workload, {name: v[row] for name, v in each.items()}, step)
                if fault is not None:
                    finish(row, "failed", math.nan, step, error=fault)
                    continue
            if diverged_rows[row] or not math.isfinite(values[row]):
                finish(row, "diverged", infeasible(workload.direction), step, step)
                continue
            if better(values[row], best[i], workload.direction):
                best[i] = values[row]
            if trials is not None:
                reports.append((trials[i], values[row]))
        hand_over()  # the diverged first, as the sequential engine tells them: before the others report
        gone = set(report_many(reports, step))  # another worker ended these (this one's heartbeat had stopped)
        for row in range(len(members) if gone else 0):  # none without trials
            if outcomes[members[row]] is None and trials[members[row]].number in gone:
                finish(row, "ended", best[members[row]], step)  # stop training it
        if step < workload.steps and prunes(trials[0] if trials else None):  # the last step: complete
            # Ask every pruner only after every member has reported: members of one batch
            # compete on equal terms at each rung.
            rows = [row for row in range(len(members)) if outcomes[members[row]] is None]
            verdicts = should_prune_many([trials[members[row]] for row in rows])
            for row, pruned in zip(rows, verdicts, strict=True):
                if pruned:
                    finish(row, "pruned", best[members[row]], step)
        hand_over()
        keep = [row for row in range(len(members)) if outcomes[members[row]] is None]
        if not keep:
            break
        if len(keep) < len(members):
            index = torch.tensor(keep, device=device)
            opt.keep(index)
            for n in list(buffers):
                buffers[n] = buffers[n].index_select(0, index)
            monitor.keep(index)
            norms.keep(index)
            curve.keep(keep)
            members = [members[row] for row in keep]

    for row, i in enumerate(members):
        if outcomes[i] is None:
            finish(row, "complete", best[i], workload.steps)
    hand_over()
    return [o for o in outcomes if o is not None]
