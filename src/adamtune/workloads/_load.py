"""Resolving a workload reference: a built-in name, ``path/file.py:ATTR`` or ``module:ATTR``."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable

from adamtune.errors import WorkloadError
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
        WorkloadError: unknown name, missing file/module/attribute, or not a Workload.
    """
    if isinstance(ref, Workload):
        return ref
    if ref in BUILTIN:
        return BUILTIN[ref]()
    if ":" not in ref:
        raise WorkloadError(
            f"unknown workload {ref!r}: use a built-in ({', '.join(BUILTIN)}), "
            "path/to/file.py:ATTR or module:ATTR"
        )
    where, _, attr = ref.rpartition(":")
    if where.endswith(".py") or os.sep in where or "/" in where:
        if not os.path.isfile(where):
            raise WorkloadError(f"workload file {where!r} does not exist")
        module = _import_file(where)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise WorkloadError(f"cannot import workload module {where!r}: {e}") from None
        except Exception as e:  # a user's module: report, don't crash
            raise WorkloadError(f"importing workload module {where!r} failed: {type(e).__name__}: {e}") from None
    if not hasattr(module, attr):
        raise WorkloadError(f"{where!r} has no attribute {attr!r}")
    obj = getattr(module, attr)
    if callable(obj) and not isinstance(obj, Workload):
        try:
            obj = obj()
        except Exception as e:  # noqa: BLE001 - a user's factory (or not a factory at all): one line
            raise WorkloadError(f"{ref!r} must be a Workload or a function that takes no argument and returns one; "
                                f"calling {attr}() failed: {type(e).__name__}: {e}") from None
    if not isinstance(obj, Workload):
        raise WorkloadError(f"{ref!r} must be an adamtune.Workload or return one, got {type(obj).__name__}")
    return obj


def _import_file(path: str):
    name = "adamtune_user_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, os.path.abspath(path))
    if spec is None or spec.loader is None:
        raise WorkloadError(f"cannot load {path!r} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a user's file: report, don't crash
        del sys.modules[name]
        raise WorkloadError(f"importing {path!r} failed: {type(e).__name__}: {e}") from None
    return module
