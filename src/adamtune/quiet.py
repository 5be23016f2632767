"""Optuna's messages about adamtune's own doings, kept out of the user's way.

adamtune uses some of Optuna's experimental interfaces (the QMC sampler, metric names) and
makes studies of its own; Optuna says so each time (an ``ExperimentalWarning``, an INFO line "A
new study created ..."). Those concern adamtune's choices, not the user's code, so they are
silenced where adamtune makes them; Optuna's other messages are left as they are.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import optuna


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Inside: no ExperimentalWarning and no Optuna INFO log line; both restored after."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(verbosity, optuna.logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)
