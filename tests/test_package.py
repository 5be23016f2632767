"""The package's face: every public name resolves, and the CLI starts without importing torch
(reading a study does not need it either)."""

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


def test_the_submodules_the_readme_spells_out_work_after_a_plain_import():
    """`adamtune.report.html.write_report(...)` (the README's way to the report from Python) raised
    AttributeError after `import adamtune`: nothing had imported adamtune.report."""
    code = ("import adamtune; print(adamtune.report.html.write_report.__name__, adamtune.cluster.tune_on_ray.__name__, "
            "adamtune.analysis.__name__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["write_report", "tune_on_ray", "adamtune.analysis"]
    with pytest.raises(AttributeError, match="module 'adamtune.report' has no attribute 'htm'"):
        adamtune.report.htm  # noqa: B018


def test_the_cli_starts_without_torch():
    # `adamtune --help` and `adamtune dashboard` never train: they must not wait for torch to import.
    code = "import sys, adamtune.cli; print(sorted(m for m in ('torch', 'adamtune.study') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("command", [["show"], ["show", "--json"], ["best"], ["studies"], ["report", "--out", "r.html"]],
                         ids=lambda c: " ".join(c[:2]))
def test_commands_that_only_read_a_study_do_not_import_torch(command, tmp_path, tiny_ref):
    # Importing torch takes seconds (6 s on the development VM without bytecode caches); a
    # command that only reads the study has no use for it.
    url = f"sqlite:///{tmp_path / 'study.db'}"
    adamtune.tune(tiny_ref, budget=2, storage=url, pruner="none")
    code = (
        "import sys\n"
        "from adamtune.cli import app\n"
        f"sys.argv = ['adamtune', *{command!r}, '--storage', {url!r}]\n"
        "try:\n    app()\nexcept SystemExit as e:\n    status = e.code\n"
        "print('exit', status, 'torch', 'torch' in sys.modules, file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.stderr.strip().splitlines()[-1] == "exit 0 torch False", r.stderr
