"""The guide's formulas and numbers against what PyTorch runs and what the rest of adamtune uses."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from adamtune import guide
from adamtune.config import OPTIMIZER_PARAMS, OPTIMIZERS, TORCH_DEFAULTS, TRAINING_PARAMS
from adamtune.errors import AdamtuneError, ConfigError, SpaceError

RTOL = 1e-12
ATOL = 1e-15

HYPER = {
    "adam": dict(lr=3e-2, beta1=0.8, beta2=0.95, eps=1e-6),
    "adamw": dict(lr=3e-2, beta1=0.8, beta2=0.95, eps=1e-6),
    "adadelta": dict(lr=0.7, rho=0.85, eps=1e-4),
}
TORCH_CLASS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adadelta": torch.optim.Adadelta}


def _torch_kwargs(optimizer: str, hyper: dict[str, float], weight_decay: float) -> dict:
    kwargs = {"lr": hyper["lr"], "eps": hyper["eps"], "weight_decay": weight_decay}
    if optimizer == "adadelta":
        kwargs["rho"] = hyper["rho"]
    else:
        kwargs["betas"] = (hyper["beta1"], hyper["beta2"])
    return kwargs


def _gradients(steps: int, shape: tuple[int, ...], seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    # Gradients of very different sizes per step, so eps and the bias corrections matter.
    return [torch.randn(shape, generator=gen, dtype=torch.float64) * 10.0 ** (i % 5 - 3) for i in range(steps)]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("optimizer", ["adam", "adamw", "adadelta"])
def test_reference_step_matches_torch_optim_step_for_step(optimizer, weight_decay, foreach):
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    real = torch.nn.Parameter(start.clone())
    opt = TORCH_CLASS[optimizer]([real], foreach=foreach, **_torch_kwargs(optimizer, HYPER[optimizer], weight_decay))

    param = start.clone()
    state = guide.reference_init(optimizer, param)
    for grad in _gradients(8, (4, 3), seed=1):
        real.grad = grad.clone()
        opt.step()
        param, state = guide.reference_step(
            optimizer, param, grad, state, weight_decay=weight_decay, **HYPER[optimizer]
        )
        torch.testing.assert_close(param, real.detach(), rtol=RTOL, atol=ATOL)
        torch_state = opt.state[real]
        assert state.step == int(torch_state["step"])
        if optimizer == "adadelta":
            torch.testing.assert_close(state.v, torch_state["square_avg"], rtol=RTOL, atol=ATOL)
            torch.testing.assert_close(state.u, torch_state["acc_delta"], rtol=RTOL, atol=ATOL)
        else:
            torch.testing.assert_close(state.m, torch_state["exp_avg"], rtol=RTOL, atol=ATOL)
            torch.testing.assert_close(state.v, torch_state["exp_avg_sq"], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "adadelta"])
def test_reference_step_on_floats_matches_tensors_and_leaves_inputs_alone(optimizer):
    hyper = dict(HYPER[optimizer], weight_decay=0.05)
    tensor = torch.tensor([0.5], dtype=torch.float64)
    tensor_state = guide.reference_init(optimizer, tensor)
    value, float_state = 0.5, guide.reference_init(optimizer, 0.5)
    for grad in (0.3, -1.2, 0.01):
        grad_tensor = torch.tensor([grad], dtype=torch.float64)
        new_tensor, tensor_state = guide.reference_step(optimizer, tensor, grad_tensor, tensor_state, **hyper)
        assert grad_tensor.item() == grad and new_tensor is not tensor
        tensor = new_tensor
        value, float_state = guide.reference_step(optimizer, value, grad, float_state, **hyper)
        assert value == pytest.approx(tensor.item(), rel=RTOL)


@pytest.mark.parametrize("max_norm", [1e-3, 1.0, 1e6])
def test_reference_clip_matches_clip_grad_norm(max_norm):
    grads = _gradients(3, (5, 2), seed=2) + _gradients(1, (7,), seed=3)
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    torch_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)

    clipped, norm = guide.reference_clip(grads, max_norm)
    torch.testing.assert_close(norm, torch_norm, rtol=RTOL, atol=0.0)
    for ours, p in zip(clipped, params):
        torch.testing.assert_close(ours, p.grad, rtol=RTOL, atol=ATOL)
    changed = [not torch.equal(ours, g) for ours, g in zip(clipped, grads)]
    assert changed == [float(norm) > max_norm] * len(grads)


def test_reference_clip_on_floats():
    clipped, norm = guide.reference_clip([3.0, 4.0], 1.0)
    assert norm == 5.0
    assert clipped == pytest.approx([3.0 / (5.0 + 1e-6), 4.0 / (5.0 + 1e-6)])


def test_reference_step_unknown_optimizer():
    with pytest.raises(SpaceError, match=r"optimizer must be one of adamw, adam, adadelta, got 'sgd'"):
        guide.reference_step("sgd", 1.0, 1.0, guide.AdamState(0, 0.0, 0.0), lr=1.0)


# --- the text agrees with the step functions and with PyTorch ---------------------------------


def test_update_rules_cover_the_optimizers_in_configs_order():
    assert guide.GUIDE_OPTIMIZERS == OPTIMIZERS
    assert tuple(guide.UPDATE_RULES) == OPTIMIZERS


def test_update_rule_text_is_torchs_op_order():
    adam = guide.update_rule("adam").lines
    assert "step_size ← lr / (1 − β1^t)" in adam
    assert "denom ← √v / √(1 − β2^t) + ε" in adam
    assert "if λ > 0: g ← g + λ·θ" in adam
    adamw = guide.update_rule("adamw").lines
    assert adamw.index("θ ← θ·(1 − lr·λ)") < adamw.index("m ← β1·m + (1 − β1)·g")
    assert "g ← g + λ·θ" not in " ".join(adamw)
    assert "Δ ← √(u + ε) / √(v + ε) · g" in guide.update_rule("adadelta").lines
    assert "scale ← min(1, max_norm / (norm + 1e-6))" in guide.CLIP_RULE.lines


@pytest.mark.parametrize(
    "optimizer, torch_class",
    [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("adadelta", torch.optim.Adadelta)],
)
def test_displayed_defaults_agree_with_config_and_torch(optimizer, torch_class):
    shown = {p.name: p.default_for(optimizer) for p in guide.params_for(optimizer) if p.default_for(optimizer)}
    assert set(shown) == set(TORCH_DEFAULTS[optimizer])
    for name, text in shown.items():
        assert float(text) == TORCH_DEFAULTS[optimizer][name], name

    signature = inspect.signature(torch_class).parameters
    torch_values = {name: signature[name].default for name in ("lr", "eps", "weight_decay")}
    if optimizer == "adadelta":
        torch_values["rho"] = signature["rho"].default
    else:
        torch_values["beta1"], torch_values["beta2"] = signature["betas"].default
    assert {name: float(text) for name, text in shown.items()} == torch_values


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_optimizer_is_explained_exactly_the_parameters_it_reads(optimizer):
    names = {p.name for p in guide.params_for(optimizer)}
    assert names == set(OPTIMIZER_PARAMS[optimizer]) | set(TRAINING_PARAMS)


def test_every_parameter_is_described_for_every_task():
    for p in guide.PARAMS.values():
        assert tuple(task for task, _ in p.typical) == guide.TASKS, p.name
        assert p.what and p.too_large and p.too_small and p.scale_why, p.name
        for task in guide.TASKS:
            for optimizer in p.optimizers:
                typical = p.typical_for(task, optimizer)
                assert typical.text
                if typical.low is not None:
                    assert typical.low <= typical.high


def test_per_optimizer_texts_are_for_optimizers_that_use_the_parameter():
    for p in guide.PARAMS.values():
        for optimizer, _ in (*p.typical_override, *p.too_large_override, *p.too_small_override):
            assert optimizer in p.optimizers, (p.name, optimizer)
    eps = guide.param_guide("eps")
    assert eps.too_small_for("adam") == eps.too_small_for("adamw") == eps.too_small
    assert "√(u + ε)" in eps.too_small_for("adadelta") and "blow-up" not in eps.too_small_for("adadelta")


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("task", guide.TASKS)
def test_scales_and_typical_values_sit_inside_the_preset_windows(optimizer, task):
    # The windows span beyond the typical values, so the boundary check can fire.
    for p in guide.params_for(optimizer):
        window = guide.search_window(optimizer, task, p.name)
        assert p.scale == window.scale, p.name
        typical = p.typical_for(task, optimizer)
        if typical.low is not None:
            assert window.low <= typical.low <= typical.high <= window.high, (p.name, typical, window)


def test_a_tasks_untuned_values_are_its_typical_ones_inside_the_window():
    assert guide.untuned_values("adamw", "llm") == guide.untuned_values("adam", "llm") == {"beta2": 0.95}
    assert guide.untuned_values("adamw", "generic") == {} and guide.untuned_values("adadelta", "llm") == {}
    for task, by_optimizer in guide.TASK_UNTUNED.items():
        for optimizer, values in by_optimizer.items():
            for name, value in values.items():
                typical = guide.param_guide(name).typical_for(task, optimizer)
                window = guide.search_window(optimizer, task, name)
                assert typical.low <= value <= typical.high and window.low < value < window.high


def test_typical_beta2_and_low_precision_eps_lie_inside_their_windows():
    beta2, eps = guide.search_window("adamw", "llm", "beta2"), guide.search_window("adamw", "llm", "eps")
    assert beta2.low < 0.95 and eps.low < 1e-8 and 1e-5 <= eps.high


def test_typical_values_follow_the_task():
    lr = guide.param_guide("lr")
    assert (lr.typical_for("transformer").low, lr.typical_for("transformer").high) == (2e-5, 5e-5)
    assert lr.typical_for("llm").text.startswith("1e-4–6e-4")
    assert lr.typical_for("cnn", "adadelta").low == 1.0
    assert guide.param_guide("beta2").typical_for("llm").low == 0.95
    assert guide.param_guide("weight_decay").typical_for("cnn", "adam").low is None


def test_cnn_weight_decay_is_typical_for_adamw_not_sgd():
    # ResNet's lr 3e-4 for a 90-epoch ImageNet run (~450k steps): AdamW's typical lambda must decay
    # within the run; SGD's habitual 1e-4 would have tau ~74x the run
    typical = guide.param_guide("weight_decay").typical_for("cnn", "adamw")
    assert (typical.low, typical.high) == (0.01, 0.1) and "1e-4 is SGD's L2 habit" in typical.text
    assert guide.decay_timescale(3e-4, typical.low) < 450_000 < guide.decay_timescale(3e-4, 1e-4)


def test_lookups_name_the_valid_choices():
    with pytest.raises(SpaceError, match=r"parameter must be one of lr, beta1, .*warmup, got 'momentum'"):
        guide.param_guide("momentum")
    with pytest.raises(SpaceError, match=r"optimizer must be one of adamw, adam, adadelta, got 'sgd'"):
        guide.params_for("sgd")
    with pytest.raises(SpaceError, match=r"task must be one of generic, cnn, transformer, llm, got 'rnn'"):
        guide.task_label("rnn")
    with pytest.raises(SpaceError, match="task must be one of"):
        guide.param_guide("lr").typical_for("rnn")
    assert issubclass(SpaceError, AdamtuneError)


# --- weight decay conversions ------------------------------------------------------------------


def test_decay_timescale():
    assert guide.decay_timescale(1e-3, 0.1) == pytest.approx(10_000)
    assert guide.decay_timescale(1e-3, 0.0) == math.inf
    assert guide.weight_decay_for_timescale(1e-3, 10_000) == pytest.approx(0.1)
    assert guide.weight_decay_for_run_fraction(1e-3, 0.5, 20_000) == pytest.approx(0.1)
    for lr, wd in [(3e-4, 0.01), (5e-5, 0.05), (1.0, 1e-4)]:
        assert guide.weight_decay_for_timescale(lr, guide.decay_timescale(lr, wd)) == pytest.approx(wd)


def test_the_decay_timescale_advice_points_the_way_its_formula_does():
    # tau kept a fixed fraction f of a T-step run: lambda = 1/(lr * f * T) falls as T or lr grows
    action = guide.ACTIONS["decay_timescale"]
    assert "weight_decay = 1/(lr·τ), so weight_decay goes down when the run gets longer or lr goes up" in action
    assert "raise it" not in action
    lr, f = 0.004935, 1.0
    assert guide.weight_decay_for_run_fraction(lr, f, 400) == pytest.approx(0.5066, rel=1e-3)
    assert guide.weight_decay_for_run_fraction(lr, f, 4000) == pytest.approx(0.05066, rel=1e-3)
    assert guide.weight_decay_for_run_fraction(2 * lr, f, 400) < guide.weight_decay_for_run_fraction(lr, f, 400)


def test_weight_decay_too_large_says_what_over_regularises():
    # tau much shorter than an epoch; 0.1 is the rule of thumb at lr ~1e-3 in long runs (tau 10,000 steps)
    too_large = guide.param_guide("weight_decay").too_large
    assert "1/(lr·λ) is much shorter than an epoch" in too_large
    assert f"λ > {guide.STRONG_WEIGHT_DECAY:g} at typical lrs near 1e-3 in long runs" in too_large
    assert guide.decay_timescale(1e-3, guide.STRONG_WEIGHT_DECAY) == pytest.approx(10_000)


def test_timescale_is_the_ema_horizon_of_pytorchs_adamw():
    # With zero gradient AdamW only decays: after tau steps the weight has shrunk by ~1/e.
    lr, wd = 1e-2, 0.5
    tau = guide.decay_timescale(lr, wd)
    real = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    opt = torch.optim.AdamW([real], lr=lr, weight_decay=wd)
    for _ in range(round(tau)):
        real.grad = torch.zeros_like(real)
        opt.step()
    assert real.item() == pytest.approx(math.exp(-1), rel=0.01)


def test_independent_decay_conversion():
    assert guide.to_independent_decay(0.1, lr_max=1e-3) == pytest.approx(1e-4)
    assert guide.from_independent_decay(1e-4, lr_max=1e-3) == pytest.approx(0.1)
    assert guide.from_independent_decay(guide.to_independent_decay(0.03, 6e-4), 6e-4) == pytest.approx(0.03)


def test_independent_decay_reproduces_pytorchs_decay_under_a_schedule():
    # PyTorch decays by lr_t·λ = lr_max·η_t·λ; the independent convention by η_t·λ_independent.
    lr_max, wd = 6e-4, 0.1
    independent = guide.to_independent_decay(wd, lr_max)
    for multiplier in (0.01, 0.5, 1.0):
        assert 1 - (lr_max * multiplier) * wd == pytest.approx(1 - multiplier * independent, rel=1e-15)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: guide.decay_timescale(0.0, 0.1), "lr must be > 0, got 0.0"),
        (lambda: guide.decay_timescale(1e-3, -0.1), "weight_decay must be >= 0, got -0.1"),
        (lambda: guide.weight_decay_for_timescale(1e-3, 0), "steps must be > 0, got 0"),
        (lambda: guide.weight_decay_for_run_fraction(1e-3, -0.5, 100), "fraction must be > 0, got -0.5"),
        (lambda: guide.weight_decay_for_run_fraction(1e-3, 0.5, 0), "total_steps must be > 0, got 0"),
        (lambda: guide.to_independent_decay(0.1, lr_max=-1.0), "lr_max must be > 0, got -1.0"),
        (lambda: guide.from_independent_decay(-1.0, lr_max=1e-3), "independent_decay must be >= 0, got -1.0"),
    ],
)
def test_conversions_reject_bad_input(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


# --- procedure and actions ---------------------------------------------------------------------


def test_procedure_order_follows_the_playbook():
    steps = guide.procedure_for("adamw")
    titles = [step.title.lower() for step in steps]
    assert "learning rate alone" in titles[0]
    assert "weight decay" in titles[1]
    assert "clip" in titles[2]
    unstable = steps[3].detail
    assert unstable.index("warmup") < unstable.index("clipping") < unstable.index("last resort")


def test_actions_cover_every_finding_the_report_names():
    assert set(guide.ACTIONS) == {
        "overfitting", "late_variance", "still_improving", "saturated_early", "no_learning", "unstable",
        "lr_too_high", "nonfinite_start", "failed", "boundary", "clip", "decay_timescale",
    }
    assert "1/(lr·weight_decay)" in guide.ACTIONS["decay_timescale"]
    assert "larger" in guide.ACTIONS["no_learning"] and "smaller" in guide.ACTIONS["lr_too_high"]
    assert "weight_decay" in guide.ACTIONS["overfitting"]
    assert "largest lrs" in guide.ACTIONS["failed"] and "stops below them" in guide.ACTIONS["failed"]
    assert "train longer" in guide.ACTIONS["still_improving"]
    assert "train shorter" in guide.ACTIONS["saturated_early"]
    assert "90th percentile" in guide.ACTIONS["clip"] and "50%" in guide.ACTIONS["clip"]
    unstable = guide.ACTIONS["unstable"]
    assert unstable.index("warmup") < unstable.index("clipping") < unstable.index("last resort")
    assert "For Adam/AdamW, β2 0.95–0.98 also stabilises." in unstable


def test_a_large_beta2_is_named_as_a_cause_of_spikes():
    # a long beta2 horizon lets v lag behind a gradient that grows suddenly: m/sqrt(v) spikes
    assert "stale v gives an update spike (why LLM recipes use 0.95)" in guide.param_guide("beta2").too_large
    steps = {}
    for beta2 in (0.999, 0.95):  # 3000 small gradients, then one 100x larger: the step it gives
        p, state = 0.0, guide.reference_init("adam", 0.0)
        for g in [0.01] * 3000 + [1.0]:
            before = p
            p, state = guide.reference_step("adam", p, g, state, lr=1.0, beta1=0.9, beta2=beta2, eps=1e-8,
                                            weight_decay=0.0)
        steps[beta2] = before - p
    assert steps[0.999] > 5 * steps[0.95] and steps[0.999] > 2  # steady steps are about lr = 1


def test_the_shortest_decay_timescale_is_an_epoch_or_a_tenth_of_the_run():
    assert guide.shortest_decay_timescale(400, 1437 / 64) == pytest.approx(1437 / 64)
    assert guide.shortest_decay_timescale(400) == pytest.approx(40)  # the data's size unknown
    assert guide.shortest_decay_timescale(400, 1000) == pytest.approx(40)  # an epoch longer than the run
    # charlm: 3,956 windows at batch 16 make an epoch of 247 steps in a 250-step run; "τ from one epoch to
    # the run" left the window to test 0.2236..0.226. Above half the run, the run's own tenth stands in
    assert guide.shortest_decay_timescale(250, 3956 / 16) == pytest.approx(25)
    assert guide.shortest_decay_timescale(400, 200) == pytest.approx(200)  # half the run: still the epoch
    assert guide.shortest_decay_timescale(400, 201) == pytest.approx(40)
    assert guide.shortest_decay_timescale(5) == 1.0  # never under one step: lr·λ <= 1
    with pytest.raises(ConfigError, match="run_steps must be > 0, got 0"):
        guide.shortest_decay_timescale(0)
