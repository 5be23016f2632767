"""Synthetic trials for the analysis tests: records built by hand, no training, no Optuna."""

import pytest

from adamtune.space import Dimension, SearchSpace
from adamtune.results import StudySettings
from adamtune.trials import Curve, GradNorms, TrialRecord, TrialState


def make_settings(*dims, direction="minimize", metric="val_loss", optimizer="adamw", budget=None, fixed=()):
    space = SearchSpace(optimizer, tuple(dims), tuple(fixed))
    return StudySettings(
        workload="digits-mlp", workload_name="digits-mlp", optimizer=optimizer, task="generic", space=space,
        budget=budget or 16, seed=0, sampler="quasi-random", pruner="none", metric=metric, direction=direction,
    )


def make_trial(number, value=None, state=TrialState.COMPLETE, curve=None, grad_norms=None, config=None, steps=100, **params):
    return TrialRecord(
        number=number, state=state, params=params, config=config, value=value, steps=steps,
        curve=curve or Curve(), grad_norms=grad_norms,
    )


def curve(steps, **metrics):
    return Curve(tuple(steps), {k: tuple(v) for k, v in metrics.items()})


def norms(samples, max_grad_norm=None):
    import numpy as np

    s = np.asarray(samples, dtype=float)
    clipped = float((s > max_grad_norm).mean()) if max_grad_norm is not None else 0.0
    return GradNorms(count=len(s), mean=float(s.mean()), p50=float(np.percentile(s, 50)), p90=float(np.percentile(s, 90)),
                     p99=float(np.percentile(s, 99)), max=float(s.max()), clipped_fraction=clipped, samples=tuple(s))


LR = Dimension("lr", 1e-5, 1e-2, "log")
WD = Dimension("weight_decay", 1e-5, 0.3, "log")
BETA1 = Dimension("beta1", 0.8, 0.999, "log1m")


def lr_at(u):
    """The lr at position u of the 1e-5..1e-2 log window."""
    return LR.from_unit(u)


@pytest.fixture
def syn():
    """The builders above (test modules cannot import a conftest under --import-mode=importlib)."""
    import types

    return types.SimpleNamespace(settings=make_settings, trial=make_trial, curve=curve, norms=norms, lr_at=lr_at,
                                 LR=LR, WD=WD, BETA1=BETA1, S=TrialState)
