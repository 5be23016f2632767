"""The ``adamtune`` command lines that messages, findings and reports tell the user to run.

One builder, so every such line is quoted for a POSIX shell the same way and never repeats a
storage URL's password (a message or a report may be shared).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from adamtune.storage import redact


def command_line(subcommand: str, *options: str, storage: str | None = None, study: str | None = None,
                 then: Sequence[str] = ()) -> str:
    """``adamtune SUBCOMMAND OPTIONS... [--storage URL] [--study NAME] THEN...``, shell-quoted.

    Args:
        subcommand: ``tune``, ``show``, ...
        options: the words that come first, as they are.
        storage: the storage URL (None: the default storage, not named); its password is masked.
        study: the study's name (None: not named).
        then: the words that come last, as they are.
    """
    parts = ["adamtune", subcommand, *options]
    if storage:
        parts += ["--storage", redact(storage)]
    if study is not None:
        parts += ["--study", study]
    parts += then
    return " ".join(shlex.quote(p) for p in parts)
