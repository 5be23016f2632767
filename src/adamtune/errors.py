"""Errors adamtune raises for bad input. Each message names what must hold and what was given.

The CLI turns any ``AdamtuneError`` into one line on stderr and exit status 2.
"""

from __future__ import annotations

import numbers

import re


class AdamtuneError(Exception):
    """Base class: bad input the user can fix; never a bug in adamtune."""


class ConfigError(AdamtuneError, ValueError):
    """An optimizer hyperparameter is out of its valid range."""


class SpaceError(AdamtuneError, ValueError):
    """A search-space dimension, override or preset is malformed."""


class WorkloadError(AdamtuneError):
    """A workload reference cannot be resolved or the workload is malformed."""


class StorageError(AdamtuneError):
    """A storage URL is malformed or the database cannot be opened."""


class StudyError(AdamtuneError):
    """A study is missing, inconsistent with the request, or cannot go on."""


class Terminated(KeyboardInterrupt):
    """SIGTERM while tuning (``kill``, ``timeout``, a batch scheduler's time limit): handled
    like Ctrl-C, so the trials being trained end as cut short instead of staying running."""


class OutputClosed(KeyboardInterrupt):
    """The command's output was closed while tuning (``adamtune tune | head``, a pager quit):
    handled like Ctrl-C, so the trials being trained end as cut short, not as failed."""


class AdamtuneWarning(UserWarning):
    """A notice from adamtune that does not stop the study (batching fell back, a trial cut short
    earlier runs again): what ``tune(..., notice=None)`` and ``confirm`` warn with. Filter it like
    any warning: ``warnings.simplefilter("ignore", adamtune.AdamtuneWarning)``."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def name_problem(name: object) -> str | None:
    """What a study name must be and ``name`` is not (``must be ..., got ...``), or None.

    A Workload's name is its default study name, so both are held to this one rule: a name
    that is not a string cannot be read back from a study's settings, and an empty one or one
    holding a newline or another control character breaks every table and line that shows it.
    """
    if not isinstance(name, str) or not name.strip():
        return f"must be a non-empty string, got {name!r}"
    if not name.isprintable():
        return f"must be printable (no newline, tab or other control character), got {name!r}"
    return None


_WHOLE = re.compile(r"\s*[+-]?[0-9]+\s*")


def integral(value: object) -> int | None:
    """``value`` as an int if it is a whole number type (int, numpy's integers; not bool), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def whole_number(text: str) -> int | None:
    """``text`` as an int if it is a whole number in ASCII digits (an optional sign, spaces
    around), else None: ``int()`` also takes ``1_0`` and other scripts' digits (``３``), which
    every whole-number option refuses alike."""
    return int(text) if _WHOLE.fullmatch(text) else None
