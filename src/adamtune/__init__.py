"""adamtune: tune Adam, AdamW and Adadelta for PyTorch models, the Tuning Playbook's way.

The public names below are imported on first use (PEP 562), so that `import adamtune.cli` and
commands that never train (`adamtune dashboard`, `adamtune --help`) do not pay for importing
torch; `from adamtune import tune` works as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_HOME = {
    "Config": "config", "clip_gradients": "config", "make_optimizer": "config", "make_scheduler": "config",
    "python_snippet": "config", "confirm": "confirmation",
    "AdamtuneError": "errors", "AdamtuneWarning": "errors", "ConfigError": "errors", "SpaceError": "errors", "StorageError": "errors",
    "StudyError": "errors", "Terminated": "errors", "WorkloadError": "errors",
    "Dimension": "space", "SearchSpace": "space", "preset": "space",
    "Trial": "study", "TrialPruned": "study", "TuneResult": "results", "list_studies": "results", "load": "results",
    "tune": "study",
    "TrialRecord": "trials", "TrialState": "trials",
    "Workload": "workloads", "accuracy": "workloads", "cross_entropy": "workloads",
}

__all__ = [
    "AdamtuneError", "AdamtuneWarning", "Config", "ConfigError", "Dimension", "SearchSpace", "SpaceError", "StorageError",
    "StudyError", "Terminated", "Trial", "TrialPruned", "TrialRecord", "TrialState", "TuneResult", "Workload",
    "WorkloadError", "accuracy", "clip_gradients", "confirm", "cross_entropy", "list_studies", "load",
    "make_optimizer", "make_scheduler", "preset", "python_snippet", "tune",
]


# Submodules the README spells out in full after a plain `import adamtune`
# (`adamtune.report.html.write_report(...)`, `adamtune.cluster.tune_on_ray(...)`): imported on first use too.
_SUBMODULES = ("analysis", "cluster", "engine", "optim", "report", "workloads")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"adamtune.{name}")  # which sets it on this package
    if name not in _HOME:
        raise AttributeError(f"module 'adamtune' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"adamtune.{_HOME[name]}"), name)
    globals()[name] = value  # later lookups find it without coming here
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOME) | set(_SUBMODULES))


if TYPE_CHECKING:  # what type checkers and IDEs read
    from adamtune.config import Config, clip_gradients, make_optimizer, make_scheduler, python_snippet
    from adamtune.confirmation import confirm
    from adamtune.errors import AdamtuneError, AdamtuneWarning, ConfigError, SpaceError, StorageError, StudyError, Terminated, WorkloadError
    from adamtune.space import Dimension, SearchSpace, preset
    from adamtune.results import TuneResult, list_studies, load
    from adamtune.study import Trial, TrialPruned, tune
    from adamtune.trials import TrialRecord, TrialState
    from adamtune.workloads import Workload, accuracy, cross_entropy
