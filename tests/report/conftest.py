"""Studies the report tests share: two short digits-mlp studies and a synthetic one.

Built once per session: each digits study is 8 trials of 100 steps; the synthetic study runs no
training at all (objective mode) and has every kind of trial and hostile names everywhere.
"""

import importlib.util
import math
import os

import pytest

import adamtune

DIGITS_SHORT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits_short.py")

HOSTILE_STUDY = "<script>alert(1)</script>"
HOSTILE_METRIC = "<b>acc</b>"
HOSTILE_ERROR = "<img src=x onerror=alert(2)>"


def short_digits():
    """digits-mlp shortened to 100 steps (4 evaluations), from the file the CLI tests load too."""
    spec = importlib.util.spec_from_file_location("digits_short", DIGITS_SHORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.short_digits()


# In memory: these studies are read back from the result, never from disk (the CLI tests use files).
MEMORY = "sqlite:///:memory:"


@pytest.fixture(scope="session")
def low_study():
    """lr window deliberately too low: the optimum lies far above 1e-4."""
    return adamtune.tune(short_digits(), budget=8, space=["lr=1e-6:1e-4"], pruner="none", storage=MEMORY, study="low"), MEMORY


@pytest.fixture(scope="session")
def normal_study():
    """lr window around digits-mlp's optimum (about 1e-2 for 100 steps)."""
    return adamtune.tune(short_digits(), budget=8, space=["lr=1e-4:1e-1"], pruner="none", storage=MEMORY, study="normal"), MEMORY


def _objective(config, trial):
    if trial.number == 3:
        raise ValueError(HOSTILE_ERROR)
    miss = math.log10(config.lr) + 2.5  # best near lr = 3e-3
    value = math.nan
    for step in range(10, 101, 10):
        value = 0.2 + miss ** 2 + 2.0 * math.exp(-step / 30) + 0.1 * (1 - config.beta1) + config.weight_decay
        if config.lr > 4e-3 and step >= 20:
            value = math.nan  # blows up above 4e-3
        trial.report(step, value, train_loss=0.9 * value, **{HOSTILE_METRIC: 1 - value / 4})
        for i in range(10):
            trial.log_grad_norm(1.0 + 0.1 * ((step + i) % 7))
        if math.isnan(value):
            return value
        if trial.should_prune():
            raise adamtune.TrialPruned()
    return value


@pytest.fixture(scope="session")
def low_analysis(low_study):
    from adamtune.analysis import analyze

    result, url = low_study
    return analyze(result, storage=url)


@pytest.fixture(scope="session")
def normal_analysis(normal_study):
    from adamtune.analysis import analyze

    result, url = normal_study
    return analyze(result, storage=url)


@pytest.fixture(scope="session")
def hostile_analysis(hostile_study):
    from adamtune.analysis import analyze

    return analyze(hostile_study[0])


@pytest.fixture(scope="session")
def hostile_study():
    """Objective mode, 12 trials (lr, weight_decay, beta1), a hostile study name, metric and error."""
    return adamtune.tune(_objective, budget=12, storage=MEMORY, study=HOSTILE_STUDY), MEMORY


@pytest.fixture(scope="session")
def low_page(low_analysis):
    from adamtune.report.html import render_html

    return render_html(low_analysis)


@pytest.fixture(scope="session")
def normal_page(normal_analysis):
    from adamtune.report.html import render_html

    return render_html(normal_analysis)


@pytest.fixture(scope="session")
def hostile_page(hostile_analysis):
    """The synthetic study's report; rendering draws a dozen figures, so once per session."""
    from adamtune.report.html import render_html

    return render_html(hostile_analysis)


def records_study(complete, pruned, pruner="asha", *, flat=False, task="generic", fixed=(), space_budget=None):
    """A digits-mlp study made of TrialRecords: ``complete`` trials in the middle of the lr window (the
    best at its centre), ``pruned`` ones at its edges, analysed as `adamtune report` does; ``flat``: no
    trial learned anything (every curve stays at 2.3)."""
    from adamtune.analysis import analyze
    from adamtune.results import StudySettings, TuneResult
    from adamtune.space import Dimension, SearchSpace
    from adamtune.trials import Curve, TrialRecord, TrialState

    lr, wd = Dimension("lr", 1e-5, 1e-2, "log"), Dimension("weight_decay", 1e-5, 0.3, "log")
    settings = StudySettings(
        workload="digits-mlp", workload_name="digits-mlp", optimizer="adamw", task=task,
        space=SearchSpace("adamw", (lr, wd), tuple(fixed)), budget=complete + pruned, seed=0, sampler="quasi-random",
        pruner=pruner, metric="val_loss", direction="minimize", space_budget=space_budget,
    )
    shape = (1.0, 1.0, 1.0, 1.0) if flat else (2.0, 1.3, 1.05, 1.0)
    trials = []
    for i in range(complete + pruned):
        done = i < complete
        u = 0.5 + (0.03 * (i + 1) * (-1) ** i if done else (0.45 if i % 2 else -0.45))
        level = (2.3 + 0.01 * abs(u - 0.5)) if flat else (0.1 + abs(u - 0.5) if done else 1.5)
        curve = tuple(level * x for x in shape)[:4 if done else 2]
        trials.append(TrialRecord(
            i, TrialState.COMPLETE if done else TrialState.PRUNED, {"lr": lr.from_unit(u), "weight_decay": 1e-3},
            {"optimizer": "adamw", "lr": lr.from_unit(u), "weight_decay": 1e-3}, min(curve), 100 * len(curve),
            Curve(tuple(100 * (k + 1) for k in range(len(curve))), {"val_loss": curve}), None))
    best = min((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value, default=None)
    return analyze(TuneResult("s", settings, tuple(trials), best, None), storage="sqlite:///s.db")


@pytest.fixture(scope="session")
def records():
    """``records_study`` (test modules cannot import a conftest under --import-mode=importlib)."""
    return records_study
