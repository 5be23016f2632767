import math
import re

import optuna
import pytest

from adamtune import Config, Dimension, SearchSpace, SpaceError, preset
from adamtune.space import parse_override, with_overrides


@pytest.mark.parametrize("budget, tuned", [
    (1, ("lr",)), (5, ("lr",)), (6, ("lr", "weight_decay")), (9, ("lr", "weight_decay")),
    (10, ("lr", "weight_decay", "beta1")), (24, ("lr", "weight_decay", "beta1")),
    (25, ("lr", "weight_decay", "beta1", "eps")), (49, ("lr", "weight_decay", "beta1", "eps")),
    (50, ("lr", "weight_decay", "beta1", "eps", "beta2")), (500, ("lr", "weight_decay", "beta1", "eps", "beta2")),
])
def test_budget_rule_adamw(budget, tuned):
    assert preset("adamw", "generic", budget).tuned == tuned


def test_budget_rule_adam_has_no_weight_decay_and_adadelta_tunes_rho():
    assert preset("adam", "generic", 8).tuned == ("lr",)
    assert preset("adam", "generic", 30).tuned == ("lr", "beta1", "eps")
    assert preset("adadelta", "generic", 12).tuned == ("lr", "rho")


@pytest.mark.parametrize("task, lr, wd", [
    ("generic", (1e-5, 1e-2), (1e-5, 0.3)), ("cnn", (3e-5, 1e-2), (1e-5, 0.3)),
    ("transformer", (3e-6, 3e-4), (1e-4, 0.3)), ("llm", (1e-5, 3e-3), (1e-3, 0.3)),
])
def test_task_windows(task, lr, wd):
    s = preset("adamw", task, 60)
    assert (s.dimension("lr").low, s.dimension("lr").high) == lr
    assert (s.dimension("weight_decay").low, s.dimension("weight_decay").high) == wd
    assert s.dimension("lr").scale == "log"
    assert (s.dimension("beta1").low, s.dimension("beta1").high, s.dimension("beta1").scale) == (0.8, 0.999, "log1m")
    assert (s.dimension("beta2").low, s.dimension("beta2").high) == (0.9, 0.9999)
    assert (s.dimension("eps").low, s.dimension("eps").high) == (1e-10, 1e-5)


def test_adadelta_windows():
    s = preset("adadelta", "generic", 30)
    assert (s.dimension("lr").low, s.dimension("lr").high) == (1e-2, 10.0)
    assert (s.dimension("rho").low, s.dimension("rho").high) == (0.8, 0.99)
    assert (s.dimension("eps").low, s.dimension("eps").high) == (1e-8, 1e-4)


def test_untuned_take_pytorch_defaults():
    s = preset("adamw", "generic", 3)
    t = optuna.trial.FixedTrial({"lr": 3e-3})
    assert s.suggest(t) == Config(optimizer="adamw", lr=3e-3)


@pytest.mark.parametrize("optimizer", ["adamw", "adam"])
def test_llm_fixes_beta2_at_0_95_until_the_budget_tunes_it(optimizer):
    # LLM pretraining runs with beta2 = 0.95, not PyTorch's 0.999, also where it is not tuned
    for budget in (1, 16, 49):
        s = preset(optimizer, "llm", budget)
        assert s.fixed == (("beta2", 0.95),) and s.config_with({}).beta2 == 0.95
    s = preset(optimizer, "llm", 50)
    assert "beta2" in s.tuned and s.fixed == ()
    assert with_overrides(preset(optimizer, "llm", 16), ["beta2=0.99"]).config_with({}).beta2 == 0.99
    assert preset(optimizer, "generic", 16).config_with({}).beta2 == 0.999  # elsewhere PyTorch's default
    assert preset("adadelta", "llm", 16).fixed == ()


def test_beta_is_searched_as_log_of_one_minus_beta():
    s = preset("adamw", "generic", 16)
    d = s.dimension("beta1")
    assert d.optuna_name == "1-beta1"
    dist = s.distributions()["1-beta1"]
    assert dist.log and dist.low == pytest.approx(0.001) and dist.high == pytest.approx(0.2)
    cfg = s.suggest(optuna.trial.FixedTrial({"lr": 1e-3, "weight_decay": 1e-3, "1-beta1": 0.01}))
    assert cfg.beta1 == pytest.approx(0.99)
    assert s.params_from_optuna({"lr": 1e-3, "1-beta1": 0.01})["beta1"] == pytest.approx(0.99)
    # unit positions: equal steps in log(1 - beta)
    assert d.to_unit(0.8) == pytest.approx(0) and d.to_unit(0.999) == pytest.approx(1)
    mid = d.from_unit(0.5)
    assert 1 - mid == pytest.approx(math.sqrt(0.2 * 0.001))


def test_overrides_window_fix_and_clipping():
    s = with_overrides(preset("adamw", "generic", 16), ["lr=1e-4:1e-2", "beta1=0.9", "max_grad_norm=0.5:5", "warmup=0.05"])
    assert s.tuned == ("lr", "weight_decay", "max_grad_norm")
    assert s.dimension("lr") == Dimension("lr", 1e-4, 1e-2, "log")
    assert dict(s.fixed) == {"beta1": 0.9, "warmup": 0.05}
    cfg = s.suggest(optuna.trial.FixedTrial({"lr": 1e-3, "weight_decay": 0.01, "max_grad_norm": 1.0}))
    assert (cfg.beta1, cfg.warmup, cfg.max_grad_norm) == (0.9, 0.05, 1.0)
    assert parse_override("max_grad_norm=none") == ("max_grad_norm", None)
    assert parse_override("lr=1e-5:1e-1:linear")[1].scale == "linear"
    assert parse_override("schedule=cosine") == ("schedule", "cosine")


@pytest.mark.parametrize("override, message", [
    ("lr=1e-2:1e-5", "`low < high` must hold for lr, got low=0.01, high=1e-05"),
    ("beta1=1.5", "beta1 must be in [0, 1), got 1.5"),
    ("beta1=0.5:1.5", "a log(1-x) range of beta1 needs high < 1, got 1.5"),
    ("lr=0:1e-2", "a log-scale range of lr needs low > 0, got 0"),
    ("lr=-1:1:linear", "lr must be > 0, got -1.0"),
    ("rho=0.9", "rho is not a hyperparameter of adamw; choose from lr, beta1, beta2, eps, weight_decay, max_grad_norm, warmup, schedule"),
    ("momentum=0.9", "--set momentum: unknown hyperparameter"),
    ("lr=fast", "--set lr: 'fast' is not a number"),
    ("lr=1_0e-3", "--set lr: '1_0e-3' is not a number"),  # float() would take these
    ("lr=\u0661", "--set lr: '\u0661' is not a number"),
    ("lr=1e-4:0x10", "--set lr: '0x10' is not a number"),
    ("eps=1e-8:1e-6:log1m", "--set eps: the log1m scale (log of 1-x) is for beta1, beta2, rho; use log or linear"),
    ("lr", "--set needs NAME=LOW:HIGH[:log|:linear|:log1m] or NAME=VALUE, got 'lr'"),
    ("lr=1e-4:1e-2:cubic", "--set lr: scale must be log, linear or log1m, got 'cubic'"),
    ("eps=1e-8:1e-6:log:x", "--set eps: expected LOW:HIGH[:log|:linear|:log1m]"),
])
def test_bad_overrides(override, message):
    with pytest.raises(SpaceError, match=re.escape(message)):
        with_overrides(preset("adamw", "generic", 16), [override])


@pytest.mark.parametrize("value, message", [("nan", "lr must be finite, got nan"), ("inf", "lr must be finite, got inf"),
                                            ("1e400", "lr must be finite, got inf"), ("0", "lr must be > 0, got 0.0"),
                                            ("-1", "lr must be > 0, got -1.0")])
def test_a_fixed_value_is_checked_when_nothing_is_tuned(value, message):
    # budget 3 tunes lr only: fixing it leaves no window whose ends would check the fixed values
    with pytest.raises(SpaceError, match=re.escape(message)):
        with_overrides(preset("adamw", "generic", 3), [f"lr={value}"])


def test_a_hyperparameter_set_twice_is_refused():
    with pytest.raises(SpaceError, match=re.escape("--set lr is given twice; give each hyperparameter once")):
        with_overrides(preset("adamw", "generic", 16), ["lr=1e-4:1e-2", "lr=3e-3"])


def test_bad_preset_arguments():
    with pytest.raises(SpaceError, match="task must be one of generic, cnn, transformer, llm, got 'rnn'"):
        preset("adamw", "rnn", 16)
    with pytest.raises(SpaceError, match="budget must be a whole number of trials >= 1, got -3"):
        preset("adamw", "generic", -3)


def test_space_round_trips_through_dict():
    s = with_overrides(preset("adamw", "llm", 60), ["warmup=0.02", "max_grad_norm=1.0"])
    assert SearchSpace.from_dict(s.to_dict()) == s


def test_describe_keeps_betas_below_one():
    text = preset("adamw", "generic", 64).describe()
    assert "beta2 0.9..0.9999 (log of 1-x)" in text and "beta1 0.8..0.999 (log of 1-x)" in text
    assert "lr 1e-05..0.01 (log)" in text


@pytest.mark.parametrize("override, shown", [
    ("beta2=0.999:0.9999:linear", "beta2 0.999..0.9999 (linear)"),  # not 0.999..1: 1 is outside the window
    ("beta1=0.9:0.99999:linear", "beta1 0.9..0.99999 (linear)"),
    ("beta2=0.95:0.9990001", "beta2 0.95..0.9990001 (log of 1-x)"),
    ("lr=1.2345e-4:0.3", "lr 0.00012345..0.3 (log)"),  # not 0.000123
    ("weight_decay=1e-5:0.3", "weight_decay 1e-05..0.3 (log)"),
    ("warmup=0:0.05", "warmup 0..0.05 (linear)"),
])
def test_describe_prints_the_bounds_themselves(override, shown):
    space = with_overrides(preset("adamw", "generic", 64), [override])
    assert shown in space.describe()


@pytest.mark.parametrize("make, message", [
    (lambda: Dimension("lr", "1e-3", 1e-2, "log"), "low of lr must be a number, got '1e-3'"),
    (lambda: Dimension("lr", 1e-3, None, "log"), "high of lr must be a number, got None"),
    (lambda: Dimension("lr", 1e-3, 10**400, "log"), "lr range must be finite, got 0.001:inf"),
    (lambda: Dimension(5, 0.1, 0.9, "linear"), "a dimension's name must be a hyperparameter's, such as 'lr', got 5"),
    (lambda: SearchSpace("adamw", (Dimension("lr", 1e-4, 1e-2, "log"),), fixed={"beta1": 0.9}),
     "a SearchSpace's fixed values must be (name, value) pairs, such as (('beta1', 0.9),), got {'beta1': 0.9}"),
    (lambda: SearchSpace("adamw", ("lr=1e-4:1e-2",)), "a SearchSpace's dimensions must be Dimension objects, got str "
     "'lr=1e-4:1e-2' ('NAME=WINDOW' strings go to tune(space=[...]))"),
    (lambda: SearchSpace("adamw", None), "a SearchSpace takes a tuple of Dimension and one of (name, value) pairs, "
     "got NoneType and tuple"),
])
def test_wrong_types_are_one_line_of_adamtunes_own(make, message):
    """SpaceError naming what must hold, not Python's TypeError, ValueError or AttributeError."""
    with pytest.raises(SpaceError, match="^" + re.escape(message) + "$"):
        make()


def test_numpy_bounds_and_lists_make_the_same_space_as_floats_and_tuples():
    import numpy as np

    lr = Dimension("lr", np.float32(1e-4), np.float64(1e-2), "log")
    assert type(lr.low) is float and lr == Dimension("lr", float(np.float32(1e-4)), 1e-2, "log")
    space = SearchSpace("adamw", [lr], [["beta1", 0.8]])
    assert space == SearchSpace("adamw", (lr,), (("beta1", 0.8),)) and hash(space)
    assert SearchSpace.from_dict(space.to_dict()) == space
