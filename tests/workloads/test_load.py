"""Loading a user's workload file or module: what its code does at import reaches the user as one line."""

import os
import subprocess
import sys

import pytest

from adamtune import Workload, WorkloadError
from adamtune.workloads import load_workload

EXITS = {
    "exits.py": "import sys\nsys.exit(5)\n",
    # a training script whose command-line parsing runs at import: argparse refuses adamtune's arguments
    "script.py": "import argparse\np = argparse.ArgumentParser()\np.add_argument('--lr')\np.parse_args()\n",
    "factory.py": "def make():\n    raise SystemExit(0)\n",
}


@pytest.mark.parametrize("name, said", [
    ("exits.py", "it called sys.exit(5);"),
    ("script.py", "it called sys.exit(2) after printing 'adamtune: error: unrecognized arguments: tune"),
    ("factory.py", "calling make() failed: it called sys.exit(0);"),
])
def test_a_workload_that_exits_is_one_line_not_the_end_of_adamtune(name, said, tmp_path, adamtune_command):
    (tmp_path / name).write_text(EXITS[name])
    r = subprocess.run([adamtune_command, "tune", "--budget", "1", "--no-report", "--workload", f"{name}:make"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("adamtune: error: "), r.stderr
    assert said in r.stderr and "belongs under if __name__ == '__main__':" in r.stderr
    assert not (tmp_path / "adamtune.db").exists()


def test_what_a_workload_prints_at_import_still_reaches_stderr(tmp_path, capsys):
    (tmp_path / "loud.py").write_text("import sys\nprint('loading my data', file=sys.stderr)\nw = 42\n")
    with pytest.raises(WorkloadError, match="must be an adamtune.Workload"):
        load_workload(f"{tmp_path / 'loud.py'}:w")
    assert capsys.readouterr().err == "loading my data\n"


TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A user's project: ``data.py`` next to the workload file; ``sys.path`` is put back after."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "data", raising=False)
    monkeypatch.delitem(sys.modules, "my_workload", raising=False)
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "data.py").write_text(
        f"import sys\nsys.path.insert(0, {TESTS!r})\nfrom tiny_workloads import tiny\n")
    # the factory imports its neighbour only when called, as a trial calls the model factory later
    (tmp_path / "proj" / "my_workload.py").write_text("def make():\n    from data import tiny\n    return tiny()\n")
    return tmp_path / "proj"


def test_a_workload_file_imports_the_modules_next_to_it(project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the file's directory
    w = load_workload("proj/my_workload.py:make")
    assert isinstance(w, Workload)
    assert __import__("data").tiny  # its directory stays importable for what the factory imports later
    assert str(project) in sys.path


def test_a_workload_module_is_found_in_the_working_directory(project, monkeypatch):
    monkeypatch.chdir(project)
    for entry in ("", os.curdir, str(project)):
        while entry in sys.path:
            sys.path.remove(entry)
    assert isinstance(load_workload("my_workload:make"), Workload)


def test_the_adamtune_command_finds_a_workload_module_in_the_working_directory(project, adamtune_command):
    r = subprocess.run([adamtune_command, "tune", "--budget", "1", "--no-report", "--workload", "my_workload:make",
                        "--storage", "sqlite:///s.db"], capture_output=True, text=True, cwd=project, timeout=300)
    assert r.returncode == 0, r.stderr


def test_a_workload_failing_its_own_checks_is_reported_as_it_is(tmp_path):
    (tmp_path / "bad.py").write_text(
        f"import sys\nsys.path.insert(0, {TESTS!r})\nimport dataclasses\nfrom tiny_workloads import tiny\n"
        "def make():\n    return dataclasses.replace(tiny(), objective='accuracy')\n")
    with pytest.raises(WorkloadError) as e:
        load_workload(f"{tmp_path / 'bad.py'}:make")
    assert str(e.value) == "workload 'tiny': objective must be one of val_loss, val_accuracy, got 'accuracy'"


def test_a_file_without_its_attribute_and_a_directory_say_what_to_write(tmp_path):
    from adamtune.errors import WorkloadError
    from adamtune.workloads import load_workload

    f = tmp_path / "w.py"
    f.write_text("")
    with pytest.raises(WorkloadError, match=r"name the workload in '.*w\.py' after a colon: .*w\.py:ATTR"):
        load_workload(str(f))
    with pytest.raises(WorkloadError, match=r"workload file '.*' is a directory; name a \.py file in it: .*FILE\.py:w$"):
        load_workload(f"{tmp_path}:w")
