import math
import re

import pytest
import torch
from torch import nn

from adamtune import Config, ConfigError, clip_gradients, make_optimizer, make_scheduler, python_snippet

BAD = [
    (dict(lr=-1e-3), "lr must be > 0, got -0.001"),
    (dict(lr=0.0), "lr must be > 0, got 0.0"),
    (dict(beta1=1.0), "beta1 must be in [0, 1), got 1.0"),
    (dict(beta1=1.5), "beta1 must be in [0, 1), got 1.5"),
    (dict(beta2=-0.1), "beta2 must be in [0, 1), got -0.1"),
    *((dict(optimizer=o, eps=0.0), "eps must be > 0, got 0.0: with eps=0 a coordinate whose gradient has been "
       "exactly 0 gets 0/0 = NaN (torch.optim accepts it, but cannot train with it)") for o in ("adamw", "adam", "adadelta")),
    (dict(eps=-1e-8), "eps must be > 0, got -1e-08"),
    (dict(weight_decay=-0.01), "weight_decay must be >= 0, got -0.01"),
    (dict(optimizer="adadelta", rho=1.5), "rho must be in [0, 1], got 1.5"),
    (dict(optimizer="adadelta", eps=-1.0), "eps must be > 0, got -1.0"),
    (dict(max_grad_norm=0.0), "max_grad_norm must be > 0 (or None for no clipping: none or off in --set), got 0.0"),
    (dict(warmup=1.0), "warmup must be a fraction of the steps in [0, 1), got 1.0"),
    (dict(schedule="linear"), "schedule must be one of constant, cosine, got 'linear'"),
    (dict(optimizer="sgd"), "optimizer must be one of adamw, adam, adadelta, got 'sgd'"),
    (dict(lr=float("nan")), "lr must be finite, got nan"),
    (dict(lr="fast"), "lr must be a number, got 'fast'"),
    (dict(lr=10**400), "lr must be finite, got an integer of 401 digits"),  # no OverflowError
    (dict(warmup=True), "warmup must be a number, got True"),
    (dict(max_grad_norm=10**400), f"max_grad_norm must be > 0 (or None for no clipping: none or off in --set), got {10**400}"),
]


@pytest.mark.parametrize("kwargs, message", BAD)
def test_config_rejects_bad_values_with_clear_message(kwargs, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        Config(**kwargs)


@pytest.mark.parametrize("cls", [torch.optim.Adadelta, torch.optim.Adam, torch.optim.AdamW])
def test_eps_0_is_refused_because_torch_takes_it_and_makes_nan_where_a_gradient_is_0(cls):
    # what the refusal says: torch.optim accepts eps=0, and a coordinate whose gradient has been 0 gets 0/0
    p = nn.Parameter(torch.ones(2))
    opt = cls([p], lr=1.0, eps=0.0)
    for _ in range(3):
        p.grad = torch.tensor([0.3, 0.0])
        opt.step()
    assert torch.isfinite(p[0]) and torch.isnan(p[1])


@pytest.mark.parametrize("optimizer, lr, eps, wd", [
    ("adamw", 1e-3, 1e-8, 0.01), ("adam", 1e-3, 1e-8, 0.0), ("adadelta", 1.0, 1e-6, 0.0),
])
def test_defaults_are_pytorchs(optimizer, lr, eps, wd):
    c = Config(optimizer=optimizer)
    assert (c.lr, c.eps, c.weight_decay) == (lr, eps, wd)
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "adadelta": torch.optim.Adadelta}[optimizer]
    import inspect
    sig = inspect.signature(cls.__init__).parameters
    assert sig["lr"].default == lr and sig["eps"].default == eps and sig["weight_decay"].default == wd


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.norm = nn.LayerNorm(8)
        self.out = nn.Linear(8, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        return self.out(self.norm(self.fc(x)))


@pytest.mark.parametrize("optimizer, cls", [
    ("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("adadelta", torch.optim.Adadelta)])
def test_make_optimizer_decays_only_matrices(optimizer, cls):
    net = Net()
    opt = make_optimizer(net, Config(optimizer=optimizer, weight_decay=0.05))
    assert type(opt) is cls
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(net.fc.weight), id(net.out.weight)}
    assert {id(p) for p in no_decay["params"]} == {id(net.fc.bias), id(net.norm.weight), id(net.norm.bias), id(net.out.bias)}
    # frozen parameters are left out entirely
    assert all(p.requires_grad for g in opt.param_groups for p in g["params"])


def test_make_optimizer_accepts_named_parameters_and_rejects_empty():
    net = Net()
    opt = make_optimizer(net.named_parameters(), Config())
    assert sum(len(g["params"]) for g in opt.param_groups) == 6
    with pytest.raises(ConfigError, match="no trainable parameters"):
        make_optimizer(nn.Linear(2, 2).requires_grad_(False), Config())


def test_adamw_weight_decay_is_decoupled_and_lr_coupled():
    # a zero gradient: AdamW only decays, theta *= (1 - lr * wd); Adam's L2 moves it by lr-ish steps
    p = nn.Parameter(torch.ones(2, 2, dtype=torch.float64))
    opt = make_optimizer([("w", p)], Config(lr=0.1, weight_decay=0.5))
    p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(p, torch.full((2, 2), 1 - 0.1 * 0.5, dtype=torch.float64))


def test_scheduler_warmup_then_cosine():
    p = nn.Parameter(torch.zeros(2, 2))
    cfg = Config(lr=1.0, warmup=0.1, schedule="cosine")
    opt = make_optimizer([("w", p)], cfg)
    sched = make_scheduler(opt, cfg, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1)  # never a step with lr = 0
    assert lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert lrs[-1] < 0.01
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_constant_schedule_without_warmup_is_constant():
    p = nn.Parameter(torch.zeros(2, 2))
    opt = make_optimizer([("w", p)], Config(lr=0.3))
    sched = make_scheduler(opt, Config(lr=0.3), total_steps=10)
    for _ in range(10):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.3)
        opt.step()
        sched.step()


def test_clip_gradients_returns_unclipped_norm_and_clips_like_torch():
    torch.manual_seed(0)
    a, b = Net(), Net()
    b.load_state_dict(a.state_dict())
    x = torch.randn(16, 4) * 50
    for net in (a, b):
        net(x).pow(2).sum().backward()
    norm = clip_gradients(a, Config(max_grad_norm=0.5))
    ref = torch.nn.utils.clip_grad_norm_([p for p in b.parameters() if p.grad is not None], 0.5)
    assert norm == pytest.approx(float(ref))
    assert norm > 0.5
    for pa, pb in zip(a.parameters(), b.parameters()):
        if pa.grad is not None:
            assert torch.equal(pa.grad, pb.grad)
    # off: returns the norm and leaves gradients alone
    before = [p.grad.clone() for p in b.parameters() if p.grad is not None]
    assert clip_gradients(b, Config()) == pytest.approx(0.5, rel=1e-4)
    assert all(torch.equal(g, p.grad) for g, p in zip(before, [p for p in b.parameters() if p.grad is not None]))


@pytest.mark.parametrize("cfg", [
    Config(lr=3.2e-4, beta1=0.85, weight_decay=0.02, max_grad_norm=1.0),
    Config(optimizer="adam", lr=1e-3, eps=1e-7),
    Config(optimizer="adadelta", lr=0.5, rho=0.95),
    # near 1 the window 1/(1 - beta) is what matters: 0.99951 must not print as 1 (torch refuses
    # it) nor 0.9997 as 0.999
    Config(lr=0.0035623487, beta1=0.99951, beta2=0.9997, eps=3.3333e-9, weight_decay=0.123456),
    Config(optimizer="adadelta", lr=0.7777777, rho=0.99987654),
    Config(lr=1e-3, weight_decay=0.0),  # AdamW without decay: torch's default would be 0.01
])
def test_snippet_is_runnable_and_builds_the_same_optimizer(cfg):
    model = Net()
    namespace = {"torch": torch, "model": model}
    exec(python_snippet(cfg), namespace)
    got = namespace["optimizer"]
    want = make_optimizer(model, cfg)
    assert type(got) is type(want)

    def per_parameter(opt):  # each trained parameter's hyperparameters, however the groups split them
        return {id(p): g for g in opt.param_groups for p in g["params"] if p.requires_grad}

    mine, theirs = per_parameter(got), per_parameter(want)
    assert mine.keys() == theirs.keys()
    for p, g2 in theirs.items():
        g1 = mine[p]
        for key in ("lr", "weight_decay", "eps", "betas", "rho"):
            if key in g2:
                v1, v2 = g1[key], g2[key]
                if key == "betas":
                    v1, v2 = [1 - b for b in v1], [1 - b for b in v2]
                elif key == "rho":
                    v1, v2 = 1 - v1, 1 - v2
                assert v1 == pytest.approx(v2, rel=1e-4), key
    if cfg.weight_decay == 0:
        assert "no_decay" not in python_snippet(cfg) and "(model.parameters(), lr=" in python_snippet(cfg)
    if cfg.max_grad_norm is not None:
        assert "clip_grad_norm_(model.parameters(), max_norm=1)" in python_snippet(cfg)
    assert "betas=(1," not in python_snippet(cfg) and ", 1)" not in python_snippet(cfg)


@pytest.mark.parametrize("cfg", [Config(lr=1e-3, warmup=0.1, schedule="cosine"), Config(optimizer="adam", lr=2e-3, warmup=0.05),
                                 # within 0.005% of 1, yet pasted below 1: Config refuses warmup=1
                                 Config(lr=1e-3, warmup=0.999999), Config(lr=1e-3, warmup=0.99996, schedule="cosine")])
def test_a_snippet_with_a_schedule_runs_as_pasted_and_schedules_as_the_trial_did(cfg):
    model = Net()
    namespace = {"torch": torch, "model": model}  # what a training script has; nothing of adamtune
    exec(python_snippet(cfg, total_steps=400), namespace)
    assert namespace["total_steps"] == 400
    want = make_scheduler(make_optimizer(Net(), cfg), cfg, total_steps=400)
    got = namespace["scheduler"]
    for step in (0, 19, 20, 39, 40, 200, 399):
        assert got.lr_lambdas[0](step) == want.lr_lambdas[0](step)


def test_a_snippet_without_its_steps_says_to_set_them_and_claims_no_number():
    """Its comment said 'the steps the trial trained' beside `total_steps = ...`."""
    code = python_snippet(Config(lr=1e-3, warmup=0.1))
    assert "total_steps = ...  # set it to the steps your loop trains: warmup and the schedule are fractions of them" \
        in code.splitlines()


def test_a_results_paste_code_fills_in_the_steps_its_best_trial_reported(tmp_path):
    """From Python, python_snippet(result.best_config) had no step count: the one `adamtune best`
    prints was internal."""
    import adamtune

    def objective(config, trial):
        for step in (10, 20):
            trial.report(step, config.lr)
        return config.lr

    r = adamtune.tune(objective, budget=2, storage=f"sqlite:///{tmp_path / 's.db'}", space=["warmup=0.1"])
    code = r.paste_code()
    assert "total_steps = 20  # the last step the trial reported: set the steps your loop trains" in code
    namespace = {"torch": torch, "model": Net()}
    exec(code, namespace)
    want = make_scheduler(make_optimizer(Net(), r.best_config), r.best_config, total_steps=20)
    assert [namespace["scheduler"].lr_lambdas[0](i) for i in range(20)] == [want.lr_lambdas[0](i) for i in range(20)]


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_make_optimizer_runs_torchs_fused_kernel_and_matches_the_default(optimizer):
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    b = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    b.load_state_dict(a.state_dict())
    config = Config(optimizer=optimizer, lr=1e-2, weight_decay=0.1)
    ours = make_optimizer(a, config)
    assert ours.defaults["fused"] is True
    cls = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
    groups = [{"params": [p for p in b.parameters() if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in b.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    default = cls(groups, lr=1e-2)  # torch's for-loop implementation on CPU
    x, y = torch.randn(32, 4, dtype=torch.float64), torch.randn(32, 2, dtype=torch.float64)
    for model, opt in ((a, ours), (b, default)):
        for _ in range(30):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=0.0)


def test_make_optimizer_adadelta_has_no_fused_kernel():
    assert not make_optimizer(nn.Linear(3, 2), Config(optimizer="adadelta")).defaults.get("fused")


def _optimizer():
    return make_optimizer(Net(), Config())


WRONG_TYPES = [
    (lambda: Config.from_params("adamw", None), "Config.from_params needs a mapping of hyperparameter names to values, "
     "such as {'lr': 1e-3}, got NoneType None"),
    (lambda: make_optimizer(Net(), None), "make_optimizer needs an adamtune.Config, got NoneType None"),
    (lambda: make_optimizer(Net(), {"lr": 1e-3}), "make_optimizer needs an adamtune.Config, got dict {'lr': 0.001} "
     "(Config.from_params(optimizer, params) makes one from a dict)"),
    (lambda: make_optimizer(None, Config()), "make_optimizer needs a module or an iterable of (name, parameter) pairs, "
     "got NoneType"),
    (lambda: make_optimizer(Net().parameters(), Config()), "make_optimizer needs a module or an iterable of "
     "(name, parameter) pairs, got generator"),
    (lambda: clip_gradients(None, Config(max_grad_norm=1.0)), "clip_gradients needs a module or an iterable of "
     "parameters, got NoneType"),
    (lambda: clip_gradients(Net(), None), "clip_gradients needs an adamtune.Config, got NoneType None"),
    (lambda: make_scheduler(None, Config(), 100), "make_scheduler needs a torch.optim optimizer (make_optimizer makes "
     "one), got NoneType None"),
    (lambda: make_scheduler(_optimizer(), None, 100), "make_scheduler needs an adamtune.Config, got NoneType None"),
    *((lambda steps=steps: make_scheduler(_optimizer(), Config(), steps),
       f"total_steps must be a whole number >= 1, got {steps!r}") for steps in ("100", 2.5, True, 0, None)),
]


@pytest.mark.parametrize("call, message", WRONG_TYPES, ids=[m[:40] for _, m in WRONG_TYPES])
def test_the_api_refuses_wrong_types_in_one_line_of_its_own(call, message):
    """adamtune's ConfigError naming what must hold, not Python's TypeError, AttributeError or OverflowError."""
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        call()


def test_numpy_numbers_are_taken_where_python_numbers_are():
    import numpy as np

    cfg = Config(lr=np.float32(1e-3), beta1=np.float64(0.8), max_grad_norm=np.float32(2.0), weight_decay=np.int64(0))
    assert (cfg.lr, cfg.beta1, cfg.max_grad_norm, cfg.weight_decay) == (pytest.approx(1e-3), 0.8, 2.0, 0.0)
    assert all(type(getattr(cfg, name)) is float for name in ("lr", "beta1", "max_grad_norm", "weight_decay"))
    scheduler = make_scheduler(make_optimizer(Net(), cfg.replace(warmup=0.5)), cfg.replace(warmup=0.5), np.int64(10))
    assert scheduler.lr_lambdas[0](0) == pytest.approx(0.2)


@pytest.mark.parametrize("cfg", [Config(lr=1e-3, warmup=0.1, schedule="cosine"), Config(optimizer="adadelta", rho=0.95),
                                 Config(optimizer="adam", max_grad_norm=1.0)])
def test_params_round_trip_through_from_params(cfg):
    """A cosine schedule was lost: params() left it out and from_params refused it."""
    assert Config.from_params(cfg.optimizer, cfg.params()) == cfg
