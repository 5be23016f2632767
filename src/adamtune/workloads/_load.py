"""Resolving a workload reference: a built-in name, ``path/file.py:ATTR`` or ``module:ATTR``.

A workload file imports the modules next to it, as ``python file.py`` lets a script do: its
directory goes first on ``sys.path``. A ``module:ATTR`` is looked up from the working directory
too, as ``python -m``, uvicorn and gunicorn do (the ``adamtune`` command's own ``sys.path[0]`` is
the directory of its script, not the working directory). Either stays on ``sys.path``: the
model factory runs later, in every trial, and may import its neighbours only then.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import io
import os
import sys
from collections.abc import Callable

from adamtune import usercode
from adamtune.errors import WorkloadError, first_line
from adamtune.workloads._base import Workload
from adamtune.workloads.charlm import charlm
from adamtune.workloads.digits import digits_cnn, digits_mlp

BUILTIN: dict[str, Callable[[], Workload]] = {
    "digits-mlp": digits_mlp,
    "digits-cnn": digits_cnn,
    "charlm": charlm,
}


def load_workload(ref: str | Workload) -> Workload:
    """Resolve ``ref`` to a Workload.

    ``ATTR`` may name a Workload or a zero-argument callable returning one.

    Raises:
        WorkloadError: unknown name, missing file/module/attribute, a colon too many, a module
            of the name imported before that hides the working directory's file, not a
            Workload, a callable that needs arguments (one of two, an objective function, is
            told it is tuned from Python), or an error raised while importing the file or
            running the factory (named with the innermost line of the user's own code that
            raised it).
    """
    if isinstance(ref, Workload):
        return ref
    if ref in BUILTIN:
        return BUILTIN[ref]()
    if ":" not in ref:
        if ref.endswith(".py") and os.path.isfile(ref):  # the file is there: only the attribute is missing
            raise WorkloadError(f"name the workload in {ref!r} after a colon: {ref}:ATTR, ATTR being a Workload "
                                "or a function that returns one")
        raise WorkloadError(
            f"unknown workload {ref!r}: use a built-in ({', '.join(BUILTIN)}), "
            "path/to/file.py:ATTR or module:ATTR"
        )
    where, _, attr = ref.rpartition(":")
    if where.endswith(".py") or os.sep in where or "/" in where:
        if os.path.isdir(where):
            raise WorkloadError(f"workload file {where!r} is a directory; name a .py file in it: "
                                f"{os.path.join(where, 'FILE.py')}:{attr}")
        if not os.path.isfile(where):
            file = next((where[:i] for i, c in enumerate(where) if c == ":" and os.path.isfile(where[:i])), None)
            if file is not None:  # file.py:wl:extra: the file is there, the reference has a colon too many
                raise WorkloadError(f"workload reference {ref!r} has more than one ':' after the file {file!r}; "
                                    f"write {file}:ATTR, ATTR being a Workload or a function that returns one")
            if os.path.exists(where):
                raise WorkloadError(f"workload file {where!r} is not a regular file; name a .py file: FILE.py:{attr}")
            raise WorkloadError(f"workload file {where!r} does not exist")
        module = _import_file(where)
    else:
        if ":" in where:
            raise WorkloadError(f"workload reference {ref!r} has more than one ':'; write module:ATTR, ATTR being a "
                                "Workload or a function that returns one")
        _importable(os.getcwd())
        try:
            module = _users_code(importlib.import_module, where)
        except ImportError as e:
            raise WorkloadError(f"cannot import workload module {where!r}: {e}{usercode.where(e)}") from None
        except (Exception, SystemExit) as e:  # a user's module: report, don't crash
            raise WorkloadError(f"importing workload module {where!r} failed: {_what_failed(e)}") from None
        _not_hidden(module, where, attr)
    if not hasattr(module, attr):
        raise WorkloadError(f"{where!r} has no attribute {attr!r}")
    obj = getattr(module, attr)
    if callable(obj) and not isinstance(obj, Workload):
        try:
            inspect.signature(obj).bind()
        except TypeError as e:
            raise WorkloadError(f"{ref!r} must be a Workload or a function that takes no argument and returns one; "
                                f"{attr}() cannot be called with no argument ({e}){_objective(obj, attr)}") from None
        except ValueError:  # no signature to read (some built-ins): calling it says
            pass
        try:
            obj = _users_code(obj)
        except WorkloadError:  # the factory is fine; the Workload it made says what must hold
            raise
        except (Exception, SystemExit) as e:  # noqa: BLE001 - a user's factory: one line
            raise WorkloadError(f"{ref!r}: calling {attr}() failed: {_what_failed(e)}") from None
    if not isinstance(obj, Workload):
        raise WorkloadError(f"{ref!r} must be an adamtune.Workload or return one, got {type(obj).__name__}")
    return obj


def _objective(fn: Callable, attr: str) -> str:
    """``; an objective function ...``: how to tune ``fn`` when it needs two arguments, as
    objective(config, trial) does (a loop of the user's own, which only ``adamtune.tune`` in
    Python takes); else ''."""
    if isinstance(fn, type):  # a class (an nn.Module's constructor), not a loop
        return ""
    try:
        signature = inspect.signature(fn)
        signature.bind(None, None)
    except (TypeError, ValueError):
        return ""
    with contextlib.suppress(TypeError):
        signature.bind(None)
        return ""  # one argument is enough: not an objective's (config, trial)
    names = list(signature.parameters)
    if names[:1] != ["config"] and names[1:2] != ["trial"]:
        return ""  # make(steps, batch_size): a factory's arguments, not an objective's (config, trial)
    return f"; an objective function of (config, trial) is tuned from Python: adamtune.tune({attr}, budget=...)"


def _not_hidden(module, where: str, attr: str) -> None:
    """Refuse ``module``, imported for ``where``, when the working directory holds a file or
    package of that name that it is not: a module imported before (Python's own ``random``,
    which torch imports) is taken from ``sys.modules`` whatever ``sys.path`` says, and hides
    the user's ``random.py``.

    Raises:
        WorkloadError: naming the module imported and the one meant, and how to load that one.
    """
    imported = getattr(module, "__file__", None)
    mine = os.path.join(os.getcwd(), *where.split("."))
    for path, how in ((mine + ".py", f", or give its path: {os.path.join(os.curdir, os.path.relpath(mine + '.py'))}:{attr}"),
                      (os.path.join(mine, "__init__.py"), "")):
        if imported is not None and os.path.isfile(path) and os.path.realpath(imported) != os.path.realpath(path):
            raise WorkloadError(f"workload module {where!r} is {imported}, not {os.path.relpath(path)} in the working "
                                f"directory: a module of that name was imported first and hides yours; rename "
                                f"yours{how}")


def _importable(directory: str) -> None:
    """Put ``directory`` first on ``sys.path`` unless it is there already ('' is the working directory)."""
    here = os.path.abspath(directory)
    if not any(os.path.abspath(p or os.curdir) == here for p in sys.path):
        sys.path.insert(0, here)


def _import_file(path: str):
    _importable(os.path.dirname(os.path.abspath(path)))
    name = "adamtune_user_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, os.path.abspath(path))
    if spec is None or spec.loader is None:
        raise WorkloadError(f"cannot load {path!r} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        _users_code(spec.loader.exec_module, module)
    except (Exception, SystemExit) as e:  # a user's file: report, don't crash
        del sys.modules[name]
        raise WorkloadError(f"importing {path!r} failed: {_what_failed(e)}") from None
    return module


def _users_code(fn: Callable, *args):
    """``fn(*args)``; what it writes to stderr is passed on, unless it exits (argparse refusing
    adamtune's own arguments prints two lines first): then its last line goes into the error."""
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            return fn(*args)
    except SystemExit as e:
        said = [line.strip() for line in held.getvalue().splitlines() if line.strip()]
        e.last_words = said[-1] if said else None
        held = None
        raise
    finally:
        if held is not None and held.getvalue():
            sys.stderr.write(held.getvalue())


def _what_failed(e: BaseException) -> str:
    """What a user's code raised, in words, and where (:func:`adamtune.usercode.where`); a
    sys.exit() (a script's command-line code run at import, argparse refusing adamtune's own
    arguments) says where such code belongs."""
    if isinstance(e, SystemExit):
        said = getattr(e, "last_words", None)
        return (f"it called sys.exit({e.code!r}){usercode.where(e)}{f' after printing {said!r}' if said else ''}; code that "
                "parses the command line or exits belongs under if __name__ == '__main__':")
    return f"{type(e).__name__}: {first_line(e)}{usercode.where(e)}"

