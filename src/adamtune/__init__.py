"""adamtune: tune Adam, AdamW and Adadelta for PyTorch models, the Tuning Playbook's way."""

from adamtune.config import Config, clip_gradients, make_optimizer, make_scheduler, python_snippet
from adamtune.errors import AdamtuneError, ConfigError, SpaceError, StorageError, StudyError, WorkloadError
from adamtune.space import Dimension, SearchSpace, preset
from adamtune.study import Trial, TrialPruned, TuneResult, list_studies, load, tune
from adamtune.trials import TrialRecord, TrialState
from adamtune.workloads import Workload, accuracy, cross_entropy

__version__ = "0.1.0"

__all__ = [
    "AdamtuneError", "Config", "ConfigError", "Dimension", "SearchSpace", "SpaceError", "StorageError",
    "StudyError", "Trial", "TrialPruned", "TrialRecord", "TrialState", "TuneResult", "Workload",
    "WorkloadError", "accuracy", "clip_gradients", "cross_entropy", "list_studies", "load",
    "make_optimizer", "make_scheduler", "preset", "python_snippet", "tune",
]
