import os
import warnings

import optuna
import pytest

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

TESTS = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(TESTS, "tiny_workloads.py")


@pytest.fixture
def storage(tmp_path):
    """A real SQLite file per test."""
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.fixture
def tiny_ref():
    return f"{TINY}:tiny"


@pytest.fixture
def tiny_file():
    return TINY
