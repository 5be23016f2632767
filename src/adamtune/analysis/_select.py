"""Which trials an analysis looks at: the completed ones, the best of them, and where they sit."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

from adamtune.space import Dimension
from adamtune.results import StudySettings, TuneResult
from adamtune.trials import TrialRecord, ranked

# The playbook's "best trials": the top 10% of the completed trials, but never fewer than 3.
TOP_FRACTION = 0.1
TOP_MIN = 3

Study = Union[TuneResult, Sequence[TrialRecord]]


def unpack(study: Study, settings: StudySettings | None) -> tuple[tuple[TrialRecord, ...], StudySettings]:
    """``(trials, settings)`` from a TuneResult, or from trials plus their settings.

    Raises:
        TypeError: trials were given without settings.
    """
    if isinstance(study, TuneResult):
        return study.trials, settings or study.settings
    if settings is None:
        raise TypeError("pass a TuneResult, or the trials together with their StudySettings")
    return tuple(study), settings


def top_count(n_completed: int) -> int:
    """How many trials count as "the best trials" among ``n_completed``: 10%, at least 3."""
    return min(n_completed, max(TOP_MIN, math.ceil(TOP_FRACTION * n_completed)))


def top_trials(trials: Sequence[TrialRecord], direction: str) -> list[TrialRecord]:
    """The best trials (``top_count`` of the completed ones), best first."""
    done = ranked(trials, direction)
    return done[:top_count(len(done))]


def unit(dim: Dimension, trial: TrialRecord) -> float | None:
    """Where ``trial`` sits in ``dim``'s window on its own scale (0 = low, 1 = high); None if unset."""
    v = trial.params.get(dim.name)
    if v is None or not math.isfinite(v):
        return None
    return dim.to_unit(v)


def lr_of(trial: TrialRecord) -> float | None:
    """The trial's learning rate: tuned, or fixed in its config."""
    if "lr" in trial.params:
        return trial.params["lr"]
    return (trial.config or {}).get("lr")
