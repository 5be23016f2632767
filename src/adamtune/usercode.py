"""Where the user's own code is: the line of it an error came from, and the call a notice points at.

An error names the innermost frame of its traceback that is the user's code, not Python's, an
installed package's or adamtune's: ``NameError: ... (model.py, line 29)``. A stored traceback
may come from another machine (a Ray worker), so its frames are also judged by their paths'
shape (``site-packages``, ``lib/python3.X``, a file of adamtune's).
"""

from __future__ import annotations

import os
import re
import site
import sys
import sysconfig
import warnings
from collections.abc import Iterable

from adamtune.errors import AdamtuneWarning

PACKAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "")  # adamtune's own files, under it

_FRAME = re.compile(r'^\s*File "(.+)", line (\d+)')
_LIBRARY = re.compile(r"[/\\](?:site-packages|dist-packages|lib[/\\]python3\.\d+)[/\\]")


def where(e: BaseException | None) -> str:
    """`` (file.py, line 3)``: the innermost frame of ``e``'s traceback in the user's own code, or
    '' if none (an error raised inside torch only, or no ``e``); a SyntaxError names its own."""
    if e is None or isinstance(e, SyntaxError):
        return ""
    frames = []
    tb = e.__traceback__
    while tb is not None:
        frames.append((tb.tb_frame.f_code.co_filename, tb.tb_lineno))
        tb = tb.tb_next
    return _innermost(frames)


def where_in(traceback_text: str | None) -> str:
    """:func:`where` for a traceback as ``traceback.format_exc()`` wrote it: the frames of its last
    exception (after its last ``Traceback (most recent call last):``), '' if it holds none."""
    if not traceback_text:
        return ""
    last = traceback_text.rsplit("Traceback (most recent call last):", 1)[-1]
    return _innermost((m.group(1), int(m.group(2))) for m in map(_FRAME.match, last.splitlines()) if m)


def _innermost(frames: Iterable[tuple[str, int]]) -> str:
    found = ""
    libraries = _library_dirs()
    for path, line in frames:
        if not _library(path, libraries):
            found = f" ({os.path.basename(path)}, line {line})"
    return found


def _library(path: str, libraries: tuple[str, ...]) -> bool:
    """Whether ``path`` is not the user's code: Python's own, an installed package's, adamtune's,
    or not a file (``<string>``, ``<frozen importlib._bootstrap>``)."""
    if path.startswith("<") or os.path.abspath(path).startswith(libraries) or _LIBRARY.search(path):
        return True
    parts = re.split(r"[/\\]", path)  # adamtune's files where another machine keeps them
    return any(p == "adamtune" and os.path.isfile(os.path.join(PACKAGE, *parts[i + 1:]))
               for i, p in enumerate(parts[:-1]))


def _library_dirs() -> tuple[str, ...]:
    """Where Python's own modules, installed packages and adamtune live: code that is not the user's."""
    dirs = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs.update(site.getsitepackages() if hasattr(site, "getsitepackages") else ())
    dirs.add(site.getusersitepackages())
    dirs.add(PACKAGE)
    return tuple(os.path.join(os.path.abspath(d), "") for d in dirs if d)


def warn(message: str) -> None:
    """The default ``notice``: an AdamtuneWarning attributed to the first caller outside adamtune
    (the user's ``adamtune.tune(...)`` or ``confirm(...)`` line, however deep adamtune's own calls
    go), not to adamtune's source."""
    frame, level = sys._getframe(1), 2  # stacklevel 2: this function's caller
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, AdamtuneWarning, stacklevel=level)
