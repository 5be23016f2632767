"""The package's face: every public name resolves, and the CLI starts without importing torch."""

import importlib
import subprocess
import sys

import pytest

import adamtune


def test_every_public_name_is_the_object_of_its_home_module():
    assert sorted(adamtune.__all__) == sorted(adamtune._HOME)
    for name in adamtune.__all__:
        home = importlib.import_module(f"adamtune.{adamtune._HOME[name]}")
        assert getattr(adamtune, name) is getattr(home, name), name
    assert set(adamtune.__all__) <= set(dir(adamtune))
    namespace = {}
    exec("from adamtune import *", namespace)
    assert set(adamtune.__all__) <= set(namespace)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="module 'adamtune' has no attribute 'tunes'"):
        adamtune.tunes  # noqa: B018
    with pytest.raises(ImportError):
        exec("from adamtune import tunes", {})


def test_the_cli_starts_without_torch():
    # `adamtune --help` and `adamtune dashboard` never train: they must not wait for torch to import.
    code = "import sys, adamtune.cli; print(sorted(m for m in ('torch', 'adamtune.study') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
