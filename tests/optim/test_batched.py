"""Differential tests: member k of a batched optimizer == torch.optim on model k alone.

One harness trains K small models stacked (vmap over functional_call) with a batched optimizer
and, side by side, each model alone with the matching torch.optim optimizer (plus
clip_grad_norm_, two param groups for a decay mask, LambdaLR for a per-member lr schedule).
Every test is parametrised over the three optimizer families.
"""

from __future__ import annotations

import copy
import io
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from adamtune.errors import ConfigError
from adamtune.optim import (
    BatchedAdadelta,
    BatchedAdam,
    BatchedAdamW,
    matrix_decay_mask,
    member_grad_norms,
)

# The module-level filter in batched.py does not survive pytest's per-test warning capture.
pytestmark = pytest.mark.filterwarnings("ignore:grad and param do not obey the gradient layout")

K = 4
STEPS = 30  # past every warmup of the schedule case and well into its cosine
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}

# A hyperparameter value in a case: one float for every member, or a list with one per member.
Value = float | list[float]


@dataclass(frozen=True)
class Family:
    """One optimizer: its batched class, its torch.optim reference and default lr."""

    name: str
    batched: type
    reference: type
    default_lr: float
    moments: tuple[str, ...]  # the case keys this family reads besides lr/eps/weight_decay
    fused: bool | None = None  # Adam family: torch's fused kernel (True) or the stacked kernels

    def make(self, params, **kwargs):
        if self.fused is not None:
            kwargs["fused"] = self.fused
        return self.batched(params, **kwargs)

    def make_reference(self, params, foreach: bool | None = None, **kwargs):
        # The fused family's reference is torch.optim's fused implementation (same kernel).
        if self.fused and foreach is None:
            kwargs["fused"] = True
        return self.reference(params, foreach=foreach, **kwargs)

    def batched_kwargs(self, hp: dict[str, Value]) -> dict:
        def arg(v: Value):
            return torch.tensor(v, dtype=torch.float64) if isinstance(v, list) else v

        kwargs = {name: arg(v) for name, v in hp.items() if name not in ("beta1", "beta2")}
        if "beta1" in hp or "beta2" in hp:
            kwargs["betas"] = (arg(hp.get("beta1", 0.9)), arg(hp.get("beta2", 0.999)))
        return kwargs

    def torch_kwargs(self, hp: dict[str, Value], k: int) -> dict:
        member = {name: (v[k] if isinstance(v, list) else v) for name, v in hp.items()}
        if "beta1" in member or "beta2" in member:
            member["betas"] = (member.pop("beta1", 0.9), member.pop("beta2", 0.999))
        return member


ADAM_MOMENTS = ("beta1", "beta2")
FAMILIES = [
    Family("adam", BatchedAdam, torch.optim.Adam, 1e-2, ADAM_MOMENTS, fused=True),
    Family("adam-stacked", BatchedAdam, torch.optim.Adam, 1e-2, ADAM_MOMENTS, fused=False),
    Family("adamw", BatchedAdamW, torch.optim.AdamW, 1e-2, ADAM_MOMENTS, fused=True),
    Family("adamw-stacked", BatchedAdamW, torch.optim.AdamW, 1e-2, ADAM_MOMENTS, fused=False),
    Family("adadelta", BatchedAdadelta, torch.optim.Adadelta, 1.0, ("rho",)),
]


def warmup_cosine(warmup: int) -> Callable[[int], float]:
    def factor(t: int) -> float:
        if t < warmup:
            return (t + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (t - warmup) / (STEPS - warmup)))

    return factor


@dataclass(frozen=True)
class Case:
    """A row of the differential table. lr is a factor of the family's default lr."""

    id: str
    lr: Value = 1.0
    beta1: Value | None = None
    beta2: Value | None = None
    rho: Value | None = None
    eps: Value | None = None
    weight_decay: Value | None = None
    max_grad_norm: Value | None = None
    decay_mask: bool = False
    schedules: tuple[Callable[[int], float], ...] | None = None  # one per member

    def hyperparameters(self, family: Family, k: int = K) -> dict[str, Value]:
        """The case for the first k members, lr scaled to the family."""
        lr = self.lr
        hp: dict[str, Value] = {
            "lr": [family.default_lr * f for f in lr[:k]]
            if isinstance(lr, list)
            else family.default_lr * lr
        }
        for name in (*family.moments, "eps", "weight_decay"):
            value = getattr(self, name)
            if value is not None:
                hp[name] = value[:k] if isinstance(value, list) else value
        return hp

    def max_grad_norms(self, k: int = K) -> Value | None:
        v = self.max_grad_norm
        return v[:k] if isinstance(v, list) else v

    def clip(self, k: int) -> float | None:
        v = self.max_grad_norm
        v = v[k] if isinstance(v, list) else v
        return None if v is None or math.isinf(v) else v


INF = math.inf
CASES = [
    Case("defaults"),
    Case(
        "per_member_lr_moments_eps",
        lr=[1.0, 0.3, 3.0, 0.1],
        beta1=[0.9, 0.5, 0.0, 0.99],
        beta2=[0.999, 0.9, 0.99, 0.5],
        rho=[0.9, 0.5, 0.99, 0.0],
        eps=[1e-8, 1e-3, 1e-6, 1e-12],
    ),
    Case("weight_decay_per_member", weight_decay=[0.0, 0.1, 0.5, 0.01]),
    Case("clip_shared_triggers", weight_decay=0.05, max_grad_norm=0.3),
    Case(
        "clip_per_member_with_off",
        lr=[1.0, 2.0, 0.5, 1.0],
        weight_decay=[0.1, 0.0, 0.2, 0.05],
        max_grad_norm=[0.2, INF, 1.0, 0.05],
        decay_mask=True,
    ),
    Case(
        "decay_mask_schedule_everything",
        lr=[1.0, 3.0, 0.3, 2.0],
        beta1=[0.9, 0.8, 0.95, 0.7],
        rho=[0.9, 0.95, 0.8, 0.5],
        eps=[1e-8, 1e-6, 1e-7, 1e-5],
        weight_decay=[0.2, 0.0, 0.05, 0.5],
        max_grad_norm=[0.5, 0.1, INF, 0.25],
        decay_mask=True,
        schedules=(warmup_cosine(5), warmup_cosine(1), warmup_cosine(20), lambda t: 1.0),
    ),
]
CASE_BY_ID = {c.id: c for c in CASES}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These tensors are tiny: intra-op threads only add contention (10-100x slower on a busy
    # 2-core machine). Restored afterwards for the rest of the session.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_model(seed: int, dtype: torch.dtype) -> nn.Module:
    # LayerNorm and biases are 1-D, so a dim>=2 decay mask really splits the tensors.
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.LayerNorm(8), nn.Linear(8, 2)).to(dtype)


@dataclass
class Harness:
    """K stacked members under the batched optimizer next to K solo torch.optim runs."""

    family: Family
    case: Case
    dtype: torch.dtype = torch.float64
    k: int = K
    device: str = "cpu"
    reference_foreach: bool | None = None
    solo_norms: list[list[float]] = field(default_factory=list)
    batched_norms: list[torch.Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        models = [make_model(seed, self.dtype).to(self.device) for seed in range(self.k)]
        self.solo = [copy.deepcopy(m) for m in models]
        self.params, self.buffers = stack_module_state(models)
        self.base = copy.deepcopy(models[0]).to("meta")
        hp = self.case.hyperparameters(self.family, self.k)
        kwargs = self.family.batched_kwargs(hp)
        mgn = self.case.max_grad_norms(self.k)
        if mgn is not None:
            kwargs["max_grad_norm"] = (
                torch.tensor(mgn, dtype=torch.float64) if isinstance(mgn, list) else mgn
            )
        if self.case.decay_mask:
            kwargs["decay_mask"] = matrix_decay_mask(self.params.values())
        self.opt = self.family.make(list(self.params.values()), **kwargs)
        self.solo_opts = []
        self.solo_scheds = []
        for k, model in enumerate(self.solo):
            member = self.family.torch_kwargs(hp, k)
            groups: list = list(model.parameters())
            if self.case.decay_mask:
                wd = member.pop("weight_decay", 0.01 if self.family.name == "adamw" else 0.0)
                groups = [
                    {"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": wd},
                    {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0},
                ]
            opt = self.family.make_reference(groups, foreach=self.reference_foreach, **member)
            self.solo_opts.append(opt)
            if self.case.schedules is not None:
                schedule = self.case.schedules[k]
                self.solo_scheds.append(torch.optim.lr_scheduler.LambdaLR(opt, schedule))
        self.members = list(range(self.k))  # original member held by each batched row
        self.taken = [0] * self.k  # optimizer steps each original member has taken

    def same_gradients(self, g: torch.Generator) -> None:
        """Random gradients drawn from ``g``, the same into the stack and into each solo model."""
        for name, stacked in self.params.items():
            grad = torch.randn(stacked.shape, generator=g, dtype=torch.float64).to(self.dtype)
            stacked.grad = grad.clone()
            for k, model in enumerate(self.solo):
                dict(model.named_parameters())[name].grad = grad[k].clone()

    def batch(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(10_000 + t)
        x = torch.randn(16, 4, generator=g, dtype=torch.float64)
        y = torch.randn(16, 2, generator=g, dtype=torch.float64)
        return x.to(self.device, self.dtype), y.to(self.device, self.dtype)

    def loss(self, params, buffers, x, y) -> torch.Tensor:
        return ((functional_call(self.base, (params, buffers), (x,)) - y) ** 2).mean()

    def batched_step(self, t: int, corrupt: Callable[[], None] | None = None) -> None:
        x, y = self.batch(t)
        self.opt.zero_grad()
        losses = vmap(self.loss, in_dims=(0, 0, None, None))(self.params, self.buffers, x, y)
        losses.sum().backward()
        if corrupt is not None:
            corrupt()
        scale = None
        if self.case.schedules is not None:
            scale = torch.tensor(
                [self.case.schedules[m](self.taken[m]) for m in self.members], dtype=torch.float64
            )
        self.opt.step(lr_scale=scale)
        self.batched_norms.append(self.opt.last_grad_norms.clone())
        active = self.opt.active.tolist()
        for row, m in enumerate(self.members):
            self.taken[m] += active[row]

    def solo_step(self, k: int, t: int) -> float:
        x, y = self.batch(t)
        model, opt = self.solo[k], self.solo_opts[k]
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        max_norm = self.case.clip(k)
        if max_norm is None:
            norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
        else:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        opt.step()
        if self.solo_scheds:
            self.solo_scheds[k].step()
        return float(norm)

    def step_all(self, t: int) -> None:
        self.batched_step(t)
        self.solo_norms.append([self.solo_step(m, t) for m in self.members])

    def member_diff(self, row: int) -> float:
        """Largest relative difference between batched row and its solo model, over tensors."""
        solo = dict(self.solo[self.members[row]].named_parameters())
        worst = 0.0
        for name, stacked in self.params.items():
            ours, ref = stacked[row].detach(), solo[name].detach()
            if not torch.equal(ours.isnan(), ref.isnan()):
                return math.inf
            diff = (ours - ref).nan_to_num(0.0).abs().max()
            scale = ref.nan_to_num(0.0).abs().max().clamp_min(1e-30)
            worst = max(worst, float(diff / scale))
        return worst

    def max_diff(self) -> float:
        return max(self.member_diff(row) for row in range(len(self.members)))


family_params = pytest.mark.parametrize("family", FAMILIES, ids=[f.name for f in FAMILIES])


# float64 over every case; float32 over the plain and the everything-at-once case (runtime).
F32_CASES = ("defaults", "decay_mask_schedule_everything")
PARITY = [pytest.param(c, torch.float64, id=f"f64-{c.id}") for c in CASES] + [
    pytest.param(CASE_BY_ID[c], torch.float32, id=f"f32-{c}") for c in F32_CASES
]


@family_params
@pytest.mark.parametrize(("case", "dtype"), PARITY)
def test_member_matches_torch_optim(family: Family, case: Case, dtype: torch.dtype) -> None:
    h = Harness(family, case, dtype)
    for t in range(STEPS):
        h.step_all(t)
    assert h.max_diff() < TOLERANCE[dtype]
    # The members really differ from each other (a shared update would not be tested).
    w = h.params["0.weight"].detach()
    assert not torch.equal(w[0], w[1])
    # last_grad_norms is the unclipped norm torch computes for each model, every step.
    ours = torch.stack(h.batched_norms).double()
    theirs = torch.tensor(h.solo_norms, dtype=torch.float64)
    torch.testing.assert_close(ours, theirs, rtol=TOLERANCE[dtype], atol=0.0)
    if case.max_grad_norm is not None:
        thresholds = torch.tensor([case.clip(k) or INF for k in range(K)], dtype=torch.float64)
        clipped = theirs > thresholds
        assert clipped.any(dim=0).sum() >= 2, "the clipping case must actually clip"


@family_params
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_same_gradients_give_the_same_bits(family: Family, dtype: torch.dtype) -> None:
    # Feeding identical gradients isolates the optimizer from vmap's rounding: what is left is
    # the kernel's own arithmetic, which mirrors torch.optim's operation for operation.
    case = CASE_BY_ID["decay_mask_schedule_everything"]
    h = Harness(family, case, dtype)
    g = torch.Generator().manual_seed(7)
    solo_params = [list(m.parameters()) for m in h.solo]
    for t in range(30):
        h.same_gradients(g)
        scale = torch.tensor([case.schedules[k](t) for k in range(K)], dtype=torch.float64)
        h.opt.step(lr_scale=scale)
        for k, opt in enumerate(h.solo_opts):
            max_norm = case.clip(k)
            if max_norm is not None:
                torch.nn.utils.clip_grad_norm_(solo_params[k], max_norm)
            opt.step()
            h.solo_scheds[k].step()
    if family.fused:
        # The same kernel with the same inputs: bit for bit.
        assert h.opt.fused and h.max_diff() == 0.0
    else:
        # Bit-identical except where torch.pow and Python's ** round a bias correction
        # differently.
        assert h.max_diff() <= {torch.float64: 1e-14, torch.float32: 1e-6}[dtype]


STACKED = [f for f in FAMILIES if not f.fused]


@pytest.mark.parametrize("family", STACKED, ids=[f.name for f in STACKED])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_half_precision_stacked_kernels_give_torch_optims_bits(family: Family, dtype) -> None:
    # torch.optim computes a half-precision op with its Python float hyperparameters in
    # float32; rounding them to the parameter dtype first drifted 1e-3..1e-2 in 200 steps.
    # Per-member lr, betas, rho, eps and clipping; AdamW with its default decay. Left out: Adam's and
    # Adadelta's coupled decay (grad.add(param, alpha=wd)) and an Adadelta lr that is no power
    # of 2 (param.add_(delta, alpha=-lr)): torch's own CPU kernel rounds an add with alpha one
    # way in its vectorised loop and another in its scalar tail.
    case = replace(CASE_BY_ID["per_member_lr_moments_eps"], lr=[1.0, 0.5, 2.0, 0.25],
                   max_grad_norm=[0.3, INF, 2.0, 0.7])
    h = Harness(family, case, dtype)
    g = torch.Generator().manual_seed(3)
    for t in range(30):
        h.same_gradients(g)
        h.opt.step()
        for k, opt in enumerate(h.solo_opts):
            if case.clip(k) is not None:
                torch.nn.utils.clip_grad_norm_(h.solo[k].parameters(), case.clip(k))
            opt.step()
    assert h.max_diff() == 0.0
    for k, model in enumerate(h.solo):
        for i, p in enumerate(model.parameters()):
            for name, tensors in h.opt.state.items():
                # float16 Adadelta's eps=1e-8 rounds to 0, so 0/0 makes NaNs on both sides.
                torch.testing.assert_close(tensors[i][k], h.solo_opts[k].state[p][name],
                                           rtol=0.0, atol=0.0, equal_nan=True)


@family_params
def test_reference_foreach_implementation_agrees(family: Family) -> None:
    h = Harness(family, CASE_BY_ID["decay_mask_schedule_everything"], reference_foreach=True)
    for t in range(25):
        h.step_all(t)
    assert h.max_diff() < TOLERANCE[torch.float64]


@family_params
def test_keep_mid_training_continues_exactly(family: Family) -> None:
    h = Harness(family, CASE_BY_ID["decay_mask_schedule_everything"])
    held = dict(h.params)  # the engine's own references to the stacked tensors
    for t in range(15):
        h.step_all(t)
    h.opt.active = torch.tensor([True, True, False, True])
    h.opt.keep([3, 1, 2])  # reorder as well as drop
    h.members = [3, 1, 2]
    assert all(h.params[name] is held[name] for name in held)
    assert all(p.shape[0] == 3 and p.grad is None for p in h.params.values())
    assert h.opt.num_members == 3 and h.opt.last_grad_norms.shape == (3,)
    assert h.opt.active.tolist() == [True, True, False]
    h.opt.active = torch.ones(3, dtype=torch.bool)
    for t in range(15, STEPS):
        h.step_all(t)
    assert h.max_diff() < TOLERANCE[torch.float64]
    assert h.opt.hyperparameters["lr"].shape == (3,)


@family_params
def test_frozen_members_do_not_change_and_resume(family: Family) -> None:
    case = CASE_BY_ID["clip_per_member_with_off"]
    h = Harness(family, case, k=3)
    frozen = 1

    def poison() -> None:
        # A frozen member's gradient may be garbage (e.g. it diverged); nothing may leak.
        next(iter(h.params.values())).grad[frozen] = float("nan")

    for t in range(10):
        h.step_all(t)
    before = [p.detach()[frozen].clone() for p in h.opt.params]
    state_before = {n: [s[frozen].clone() for s in ts] for n, ts in h.opt.state.items()}
    steps_before = h.opt.steps[frozen].clone()
    h.opt.active = torch.tensor([True, False, True])
    for t in range(10, 20):
        h.batched_step(t, corrupt=poison)
        for m in (0, 2):
            h.solo_step(m, t)
        assert all(torch.equal(p.detach()[frozen], b) for p, b in zip(h.opt.params, before))
        for name, tensors in h.opt.state.items():
            assert all(torch.equal(s[frozen], b) for s, b in zip(tensors, state_before[name]))
        assert torch.equal(h.opt.steps[frozen], steps_before)
    h.opt.active = torch.ones(3, dtype=torch.bool)
    # The frozen member continues as if the frozen steps never happened.
    for t in range(20, STEPS):
        h.step_all(t)
    assert h.max_diff() < TOLERANCE[torch.float64]
    assert h.opt.steps.tolist() == [30.0, 20.0, 30.0]


@family_params
@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_nonfinite_gradient_stays_in_its_member(family: Family, bad: float) -> None:
    h = Harness(family, CASE_BY_ID["clip_shared_triggers"], k=3)
    victim = 2

    def poison() -> None:
        h.params["3.weight"].grad[victim, 0, 0] = bad

    for t in range(5):
        h.step_all(t)
    h.batched_step(5, corrupt=poison)
    for m in (0, 1):
        h.solo_step(m, 5)
    assert not math.isfinite(float(h.opt.last_grad_norms[victim]))
    assert torch.isfinite(h.opt.last_grad_norms[:victim]).all()
    for t in range(6, 15):
        h.batched_step(t)
        for m in (0, 1):
            h.solo_step(m, t)
    assert max(h.member_diff(row) for row in (0, 1)) < TOLERANCE[torch.float64]
    assert not torch.isfinite(h.params["3.weight"].detach()[victim]).all()


@family_params
def test_set_hyperparameters_between_steps(family: Family) -> None:
    h = Harness(family, CASE_BY_ID["weight_decay_per_member"])
    for t in range(10):
        h.step_all(t)
    new_lr = [family.default_lr * f for f in (0.5, 2.0, 1.0, 0.1)]
    h.opt.set_hyperparameters(lr=torch.tensor(new_lr, dtype=torch.float64), max_grad_norm=0.2)
    h.case = Case("changed", max_grad_norm=0.2)
    for k, opt in enumerate(h.solo_opts):
        for group in opt.param_groups:
            group["lr"] = new_lr[k]
    for t in range(10, 20):
        h.step_all(t)
    assert h.max_diff() < TOLERANCE[torch.float64]


def test_member_grad_norms_match_clip_grad_norm() -> None:
    grads = [torch.randn(K, 5, 3, dtype=torch.float64), torch.randn(K, 3, dtype=torch.float64)]
    grads.append(torch.randn(K, dtype=torch.float64))  # a 0-dim parameter, stacked
    expected = [
        float(torch.nn.utils.get_total_norm([g[k] for g in grads])) for k in range(K)
    ]
    assert member_grad_norms(grads).tolist() == expected


def test_keep_leaves_autograd_working_with_a_live_old_graph() -> None:
    params, _ = stack_module_state([make_model(s, torch.float64) for s in range(3)])
    base = make_model(0, torch.float64).to("meta")
    opt = BatchedAdam(list(params.values()))
    x = torch.randn(5, 4, dtype=torch.float64)

    def f(p):
        return functional_call(base, p, (x,)).sum()

    old = vmap(f)(params).sum()
    old.backward(retain_graph=True)
    opt.step()
    opt.keep([2])
    vmap(f)(params).sum().backward()
    assert params["0.weight"].grad.shape == (1, 8, 4)
    opt.step()
    with pytest.raises(RuntimeError):  # the stale graph must not write old-shaped grads
        old.backward()


# -- checkpoints --------------------------------------------------------------------------------

CHECKPOINT_CASE = CASE_BY_ID["decay_mask_schedule_everything"]


def _uninterrupted(family: Family, steps: int = 20) -> Harness:
    h = Harness(family, CHECKPOINT_CASE)
    for t in range(steps):
        _checkpointed_run_step(h, t)
    return h


def _checkpointed_run_step(h: Harness, t: int) -> None:
    if t == 6:  # what a checkpoint must carry besides the state: changed hyperparameters, a mask
        h.opt.set_hyperparameters(max_grad_norm=torch.tensor([0.3, INF, 0.2, 1.0], dtype=torch.float64))
        h.opt.active = torch.tensor([True, True, False, True])
    h.batched_step(t)


def _assert_same_run(h: Harness, reference: Harness) -> None:
    for name, p in reference.params.items():
        assert torch.equal(h.params[name], p), name
    for name, tensors in reference.opt.state.items():
        assert all(torch.equal(a, b) for a, b in zip(h.opt.state[name], tensors)), name
    assert torch.equal(h.opt.steps, reference.opt.steps)
    assert torch.equal(h.opt.last_grad_norms, reference.opt.last_grad_norms)


@family_params
def test_state_dict_resumes_bit_for_bit_in_a_fresh_optimizer(family: Family) -> None:
    reference = _uninterrupted(family)
    h = Harness(family, CHECKPOINT_CASE)
    for t in range(10):
        _checkpointed_run_step(h, t)
    buf = io.BytesIO()
    torch.save({"params": {n: p.detach() for n, p in h.params.items()},
                "optimizer": h.opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf)  # weights_only=True: the state is plain tensors and containers
    # A new process: models built afresh, stacked, the optimizer built with the original
    # arguments, then the checkpoint loaded into both.
    resumed = Harness(family, CHECKPOINT_CASE)
    with torch.no_grad():
        for name, p in resumed.params.items():
            p.copy_(saved["params"][name])
    resumed.opt.load_state_dict(saved["optimizer"])
    resumed.taken = h.taken  # the schedule's position, which the engine keeps
    assert resumed.opt.active.tolist() == [True, True, False, True]
    for t in range(10, 20):
        resumed.batched_step(t)
    _assert_same_run(resumed, reference)


@family_params
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_pickled_or_copied_optimizer_keeps_training(family: Family, how: str) -> None:
    # Tensor hooks are neither pickled nor copied; without them every step after zero_grad
    # and backward was a silent no-op.
    reference = _uninterrupted(family)
    h = Harness(family, CHECKPOINT_CASE)
    for t in range(10):
        _checkpointed_run_step(h, t)
    original = {n: p.detach().clone() for n, p in h.params.items()}
    if how == "pickle":
        buf = io.BytesIO()
        torch.save({"params": h.params, "optimizer": h.opt}, buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=False)
    else:
        loaded = copy.deepcopy({"params": h.params, "optimizer": h.opt})
    held = h.params
    h.params, h.opt = loaded["params"], loaded["optimizer"]
    for t in range(10, 20):
        h.batched_step(t)
    _assert_same_run(h, reference)
    assert all(torch.equal(held[n], p) for n, p in original.items())  # the original is untouched


def _refused_states() -> list:
    def other_class(h):
        other = FAMILIES[0] if h.family.batched is not BatchedAdam else FAMILIES[2]
        return Harness(other, CHECKPOINT_CASE).opt.state_dict()

    def other_k(h):
        return Harness(h.family, CHECKPOINT_CASE, k=3).opt.state_dict()

    def other_shapes(h):
        models = [nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)).double() for _ in range(K)]
        params, _ = stack_module_state(models)
        return h.family.make(list(params.values())).state_dict()

    def other_decay_mask(h):
        return Harness(h.family, CASE_BY_ID["defaults"]).opt.state_dict()

    def bad_lr(h):
        state = h.opt.state_dict()
        state["hyperparameters"]["lr"][1] = -1.0
        return state

    return [
        pytest.param(other_class, r"^the state_dict is Batched\w+'s, not Batched\w+'s$",
                     id="class"),
        pytest.param(other_k, r"^the state_dict has K=3 members, this \w+ has K=4$", id="k"),
        pytest.param(other_shapes, r"^the state_dict is for parameters of shapes", id="shapes"),
        pytest.param(other_decay_mask, r"^the state_dict has decay_mask=None", id="decay_mask"),
        pytest.param(bad_lr, r"^Invalid learning rate: -1\.0 \(member 1\)$", id="bad_lr"),
        pytest.param(lambda h: {"steps": h.opt.steps}, r"^not a state_dict\(\) of \w+: it lacks",
                     id="not_a_state"),
    ]


@family_params
@pytest.mark.parametrize(("make_state", "pattern"), _refused_states())
def test_load_state_dict_refuses_a_state_that_does_not_fit(family, make_state, pattern) -> None:
    h = Harness(family, CHECKPOINT_CASE)
    for t in range(3):
        h.batched_step(t)
    state = make_state(h)
    before = h.opt.state_dict()
    with pytest.raises(ConfigError, match=pattern):
        h.opt.load_state_dict(state)
    after = h.opt.state_dict()
    assert torch.equal(after["steps"], before["steps"])
    assert all(torch.equal(after["hyperparameters"][n], t) for n, t in before["hyperparameters"].items())
    for name, tensors in before["state"].items():
        assert all(torch.equal(a, b) for a, b in zip(after["state"][name], tensors))


# -- memory layout and the fused kernel --------------------------------------------------------


def _transposed_layout(t: torch.Tensor) -> torch.Tensor:
    """Same values, each member's matrix stored transposed (as vmap hands Linear gradients)."""
    return t.transpose(1, 2).contiguous().transpose(1, 2)


def _fixed_grads(params: list[torch.Tensor], step: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]


def _run(opt, params: list[torch.Tensor], steps: range, grad_layout=lambda g, p: g) -> None:
    for t in steps:
        for p, g in zip(params, _fixed_grads(params, t)):
            p.grad = grad_layout(g, p)
        opt.step()


@pytest.mark.parametrize("cls", [BatchedAdam, BatchedAdamW], ids=["adam", "adamw"])
def test_fused_kernel_follows_the_parameters_memory_layout(cls) -> None:
    # Weights stored [K, in, out] but shaped [K, out, in] (what the engine does so autograd
    # need not copy gradients) get the very same numbers, before and after keep().
    plain = [torch.randn(3, 5, 4, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)]
    laid = [_transposed_layout(plain[0]), plain[1].clone()]
    kw = dict(lr=torch.tensor([1e-2, 3e-2, 1e-3], dtype=torch.float64), weight_decay=0.1)
    a, b = cls(plain, **kw), cls(laid, **kw)
    # Each member's tensors lie side by side in one row of 5*4 + 5 = 25 values; inside it the
    # weight keeps its transposed layout.
    assert a.fused and b.fused and laid[0].stride() == (25, 1, 5)
    same_layout_as_param = lambda g, p: torch.empty_like(p).copy_(g)  # noqa: E731
    _run(a, plain, range(5))
    _run(b, laid, range(5), grad_layout=same_layout_as_param)
    a.keep([2, 0])
    b.keep([2, 0])
    assert laid[0].stride() == (25, 1, 5) and b.state["exp_avg"][0].stride() == (25, 1, 5)
    _run(a, plain, range(5, 10))
    _run(b, laid, range(5, 10))  # contiguous gradients for a transposed parameter: still right
    assert all(torch.equal(x, y) for x, y in zip(plain, laid))


def test_any_layout_is_packed_into_member_rows() -> None:
    members_innermost = torch.randn(6, 3, dtype=torch.float64).t()  # [K=3, 6], stride (1, 3)
    values = members_innermost.clone()
    opt = BatchedAdam([members_innermost], lr=1e-2, fused=True)
    # The caller's tensor, same object and values, now holds each member in one dense row.
    assert opt.fused and members_innermost.stride() == (6, 1) and torch.equal(members_innermost, values)
    reference = BatchedAdam([values.contiguous()], lr=1e-2, fused=True)
    _run(opt, opt.params, range(5))
    _run(reference, reference.params, range(5))
    assert torch.equal(opt.params[0], reference.params[0])


def test_gradients_accumulate_in_one_flat_buffer_and_missing_ones_are_skipped() -> None:
    # zero_grad keeps gradients attached (backward adds into one buffer), yet a tensor that
    # gets no gradient is skipped as torch.optim skips a None gradient: no decay, no update.
    # (Step counts are per member, not per tensor as in torch.optim: a tensor that gets a
    # gradient only now and then would see other bias corrections, so this model's later
    # layers get none at all.)
    models = [make_model(s, torch.float64) for s in range(2)]
    solo = copy.deepcopy(models[0])
    params, _ = stack_module_state(models)
    before = {n: p.detach().clone() for n, p in params.items()}
    opt = BatchedAdamW(list(params.values()), lr=1e-2, weight_decay=0.1)
    ref = torch.optim.AdamW(solo.parameters(), lr=1e-2, weight_decay=0.1)
    base = copy.deepcopy(models[0]).to("meta")
    x = torch.randn(5, 4, dtype=torch.float64)

    def first_layer_only(p):
        return functional_call(base[:2], {n: t for n, t in p.items() if n.startswith("0.")}, (x,))

    for _ in range(6):
        opt.zero_grad()
        ref.zero_grad()
        vmap(first_layer_only)(params).pow(2).sum().backward()
        solo[:2](x).pow(2).sum().backward()
        assert len({p.grad.untyped_storage().data_ptr() for p in params.values()}) == 1
        opt.step()
        ref.step()
    unused = {"2.weight", "2.bias", "3.weight", "3.bias"}
    assert {n for n, p in solo.named_parameters() if p.grad is None} == unused
    for name, p in solo.named_parameters():
        torch.testing.assert_close(params[name][0], p.detach(), rtol=1e-12, atol=0.0)
        if name in unused:
            assert torch.equal(params[name], before[name])
        else:
            assert not torch.equal(params[name], before[name])


WRITES = {
    "copy_": lambda p, g: p.grad.copy_(g),
    "+=": lambda p, g: p.grad.__iadd__(g),
    "add_": lambda p, g: p.grad.add_(g),
    "assign": lambda p, g: setattr(p, "grad", g.clone()),
}


@family_params
@pytest.mark.parametrize("write", list(WRITES))
@pytest.mark.parametrize("set_to_none", [True, False], ids=["to_none", "to_zero"])
def test_gradient_written_in_place_after_zero_grad_is_used(family: Family, write, set_to_none) -> None:
    # After zero_grad p.grad is a zeroed tensor, not None: a gradient written into it in place
    # (from torch.func.grad, or accumulated by hand) is a gradient, as the user means it.
    reference = Harness(family, CASE_BY_ID["weight_decay_per_member"], k=3)
    h = Harness(family, CASE_BY_ID["weight_decay_per_member"], k=3)
    skipped = "3.bias"  # nothing writes its gradient: skipped, as torch.optim skips None
    untouched = h.params[skipped].detach().clone()
    for t in range(4):
        g = torch.Generator().manual_seed(t)
        grads = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in h.params.items()}
        reference.opt.zero_grad()
        h.opt.zero_grad(set_to_none=set_to_none)
        for name, p in h.params.items():
            if name != skipped:
                reference.params[name].grad = grads[name].clone()
                WRITES[write](p, grads[name])
        reference.opt.step()
        h.opt.step()
    for name, p in reference.params.items():
        assert torch.equal(h.params[name], p), name
    assert torch.equal(h.opt.last_grad_norms, reference.opt.last_grad_norms)
    assert torch.equal(h.params[skipped], untouched)


# -- bad inputs ------------------------------------------------------------------------------

BY_NAME = {f.name: f for f in FAMILIES}

# (family, kwargs, exact message regex, whether torch.optim says the same for these kwargs)
ERROR_INPUTS = [
    ("adam", {"lr": -1.0}, r"^Invalid learning rate: -1\.0$", True),
    ("adam", {"lr": float("nan")}, r"^Invalid learning rate: nan$", True),
    ("adam", {"lr": torch.tensor([1e-3, 1e-3, 1e-3, -1.0])},
     r"^Invalid learning rate: -1\.0 \(member 3\)$", False),
    ("adam", {"betas": (1.0, 0.999)}, r"^Invalid beta parameter at index 0: 1\.0$", True),
    ("adam", {"betas": (0.9, -0.1)}, r"^Invalid beta parameter at index 1: -0\.1$", True),
    ("adamw", {"betas": (torch.tensor([0.9, 0.9, 1.5, 0.9]), 0.999)},
     r"^Invalid beta parameter at index 0: 1\.5 \(member 2\)$", False),
    ("adam", {"eps": -1e-8}, r"^Invalid epsilon value: -1e-08$", True),
    ("adamw", {"weight_decay": -0.1}, r"^Invalid weight_decay value: -0\.1$", True),
    ("adamw", {"weight_decay": torch.tensor([0.0, -0.5, 0.0, 0.0])},
     r"^Invalid weight_decay value: -0\.5 \(member 1\)$", False),
    ("adadelta", {"rho": 1.5}, r"^Invalid rho value: 1\.5$", True),
    ("adadelta", {"lr": -1.0}, r"^Invalid learning rate: -1\.0$", True),
    ("adadelta", {"eps": -1e-6}, r"^Invalid epsilon value: -1e-06$", True),
    ("adadelta", {"weight_decay": -1.0}, r"^Invalid weight_decay value: -1\.0$", True),
    ("adam", {"max_grad_norm": 0.0}, r"^Invalid max_grad_norm value: 0\.0$", False),
    ("adadelta", {"max_grad_norm": torch.tensor([1.0, INF, float("nan"), 1.0])},
     r"^Invalid max_grad_norm value: nan \(member 2\)$", False),
    ("adam", {"lr": torch.tensor([1e-3, 1e-3, 1e-3])},
     r"^lr must be a float or a tensor of shape \(4,\), one value per member \(K=4\), "
     r"got shape \(3,\)$", False),
    ("adadelta", {"rho": torch.ones(4, 1)}, r"rho must be .* \(K=4\), got shape \(4, 1\)$",
     False),
    ("adam", {"lr": "0.1"}, r"^lr must be a float or a tensor of shape \(4,\), got str$", False),
    ("adam", {"betas": (0.9,)}, r"^betas must be a pair \(beta1, beta2\)", False),
    ("adam", {"decay_mask": [True, False]},
     r"^decay_mask must have one entry per parameter tensor \(6\), got 2$", False),
]


@pytest.mark.parametrize(("name", "kwargs", "pattern", "torch_agrees"), ERROR_INPUTS)
def test_bad_input_is_refused_with_message(name, kwargs, pattern, torch_agrees) -> None:
    family = BY_NAME[name]
    params, _ = stack_module_state([make_model(s, torch.float64) for s in range(K)])
    with pytest.raises(ConfigError, match=pattern):
        family.batched(list(params.values()), **kwargs)
    if torch_agrees:
        with pytest.raises(ValueError, match=pattern):
            family.reference(make_model(0, torch.float64).parameters(), **kwargs)


@pytest.mark.parametrize(
    ("action", "pattern"),
    [
        (lambda o: o.keep([0, 4]), r"^member indices must lie in \[0, 4\), got 4$"),
        (lambda o: o.keep([1, 1]), r"^member indices must not repeat, got \[1, 1\]$"),
        (lambda o: o.keep([]), r"^keep\(\) needs a non-empty 1-D sequence"),
        (lambda o: setattr(o, "active", torch.ones(3, dtype=torch.bool)),
         r"^active must be a bool tensor of shape \(4,\)"),
        (lambda o: o.set_hyperparameters(rho=0.5), r"^BatchedAdam has no hyperparameter 'rho'"),
        (lambda o: o.set_hyperparameters(lr=-2.0), r"^Invalid learning rate: -2\.0$"),
        (lambda o: o.step(lr_scale=torch.ones(3)), r"^lr_scale must be a float or a tensor"),
    ],
    ids=["keep_range", "keep_repeat", "keep_empty", "active_shape", "unknown_hp", "set_lr",
         "lr_scale_shape"],
)
def test_bad_call_is_refused_and_changes_nothing(action, pattern) -> None:
    params, _ = stack_module_state([make_model(s, torch.float64) for s in range(K)])
    opt = BatchedAdam(list(params.values()), lr=1e-3)
    for p in opt.params:
        p.grad = torch.ones_like(p)
    with pytest.raises(ConfigError, match=pattern):
        action(opt)
    assert opt.num_members == K
    assert opt.hyperparameters["lr"].tolist() == [1e-3] * K


def test_bad_params_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"^params must hold at least one"):
        BatchedAdam([])
    with pytest.raises(ConfigError, match=r"leading member dimension K=2, got shape \(3, 5\)"):
        BatchedAdam([torch.zeros(2, 5), torch.zeros(3, 5)])
    with pytest.raises(ConfigError, match=r"floating point, got torch.int64"):
        BatchedAdam([torch.zeros(2, 5, dtype=torch.long)])


def test_non_leaf_params_are_refused_before_anything_changes() -> None:
    models = [make_model(s, torch.float64) for s in range(2)]
    stacked = [torch.stack([m[0].weight for m in models]), torch.stack([m[0].bias for m in models])]
    before = [(t.untyped_storage().data_ptr(), t.stride(), t.detach().clone()) for t in stacked]
    with pytest.raises(ConfigError, match=r"leaf tensors.*index 0.*torch\.func\.stack_module_state"):
        BatchedAdam(stacked)
    for t, (ptr, stride, values) in zip(stacked, before):
        assert t.untyped_storage().data_ptr() == ptr and t.stride() == stride
        assert torch.equal(t, values) and not t.is_leaf


def test_building_an_optimizer_leaves_the_warning_filters_alone() -> None:
    params, _ = stack_module_state([make_model(s, torch.float64) for s in range(2)])
    with warnings.catch_warnings():
        warnings.resetwarnings()
        BatchedAdamW(list(params.values()))
        assert warnings.filters == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@family_params
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_cuda_member_matches_torch_optim(family: Family, dtype: torch.dtype) -> None:
    h = Harness(family, CASE_BY_ID["decay_mask_schedule_everything"], dtype, device="cuda")
    for t in range(STEPS):
        h.step_all(t)
    assert h.params["0.weight"].is_cuda and h.opt.last_grad_norms.is_cuda
    assert h.max_diff() < TOLERANCE[dtype]
