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
    ("exits.py", "it called sys.exit(5) (exits.py, line 2);"),
    ("script.py", "it called sys.exit(2) (script.py, line 4) after printing 'adamtune: error: unrecognized arguments: tune"),
    ("factory.py", "'factory.py:make': calling make() failed: it called sys.exit(0) (factory.py, line 2);"),
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


BROKEN = {
    "raises_at_import.py": "import os\n\nraise RuntimeError('CUDA not found on this box')\n",
    "factory_raises.py": "import os\n\ndef make():\n    x = load_my_data('/data/missing.npz')\n",
    "needs_arguments.py": "def make(steps, lr_hint=None):\n    raise AssertionError('never called')\n",
    "class_needs_arguments.py": "class make:\n    def __init__(self, size):\n        pass\n",
    "objective.py": "def make(config, trial):\n    return 0.5\n",  # objective mode's function, given to the CLI
    "two_arguments.py": "def make(steps, batch_size):\n    return 0.5\n",  # a factory's: no objective hint
    "module_of_two.py": "class make:\n    def __init__(self, config, trial):\n        pass\n",  # a class: none
    # the innermost line of the user's code: in the sibling module the factory calls, not in a library
    "calls_a_sibling.py": "import helper\n\ndef make():\n    return helper.load()\n",
}


@pytest.mark.parametrize("name, said", [
    ("raises_at_import.py", "importing '{path}' failed: RuntimeError: CUDA not found on this box "
                            "(raises_at_import.py, line 3)"),
    ("factory_raises.py", "'{path}:make': calling make() failed: NameError: name 'load_my_data' is not defined "
                          "(factory_raises.py, line 4)"),
    ("needs_arguments.py", "'{path}:make' must be a Workload or a function that takes no argument and returns one; "
                           "make() cannot be called with no argument (missing a required argument: 'steps')"),
    ("class_needs_arguments.py", "'{path}:make' must be a Workload or a function that takes no argument and returns "
                                 "one; make() cannot be called with no argument (missing a required argument: 'size')"),
    ("objective.py", "'{path}:make' must be a Workload or a function that takes no argument and returns one; make() "
                     "cannot be called with no argument (missing a required argument: 'config'); an objective function "
                     "of (config, trial) is tuned from Python: adamtune.tune(make, budget=...)"),
    ("two_arguments.py", "'{path}:make' must be a Workload or a function that takes no argument and returns one; "
                         "make() cannot be called with no argument (missing a required argument: 'steps')"),
    ("module_of_two.py", "'{path}:make' must be a Workload or a function that takes no argument and returns one; "
                         "make() cannot be called with no argument (missing a required argument: 'config')"),
    ("calls_a_sibling.py", "'{path}:make': calling make() failed: FileNotFoundError: [Errno 2] No such file or "
                           "directory: '/no/such/data.npz' (helper.py, line 4)"),
])
def test_an_error_in_a_workload_file_says_what_failed_and_where(name, said, tmp_path, monkeypatch):
    """A factory that needs arguments is told apart from one that raised while it ran; what raised
    is named by the innermost line of the user's own code, in one line."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "helper", raising=False)
    (tmp_path / "helper.py").write_text("import os\n\ndef load():\n    return open('/no/such/data.npz')\n")
    (tmp_path / name).write_text(BROKEN[name])
    with pytest.raises(WorkloadError) as e:
        load_workload(f"{tmp_path / name}:make")
    assert str(e.value) == said.format(path=tmp_path / name)


def test_the_adamtune_command_says_where_a_workload_factory_failed(tmp_path, adamtune_command):
    (tmp_path / "factory_raises.py").write_text(BROKEN["factory_raises.py"])
    r = subprocess.run([adamtune_command, "tune", "--budget", "1", "--no-report", "--workload", "factory_raises.py:make"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 2
    assert r.stderr == ("adamtune: error: 'factory_raises.py:make': calling make() failed: NameError: name "
                        "'load_my_data' is not defined (factory_raises.py, line 4)\n")


def test_a_reference_with_a_colon_too_many_or_to_no_regular_file_says_so(tmp_path):
    """``file.py:wl:extra`` was reported as a file that does not exist, the file being there."""
    (tmp_path / "w.py").write_text("")
    with pytest.raises(WorkloadError) as e:
        load_workload(f"{tmp_path / 'w.py'}:wl:extra")
    assert str(e.value) == (f"workload reference '{tmp_path / 'w.py'}:wl:extra' has more than one ':' after the file "
                            f"'{tmp_path / 'w.py'}'; write {tmp_path / 'w.py'}:ATTR, ATTR being a Workload or a "
                            "function that returns one")
    with pytest.raises(WorkloadError, match=r"^workload reference 'os.path:join:x' has more than one ':'; write "
                                            r"module:ATTR"):
        load_workload("os.path:join:x")
    with pytest.raises(WorkloadError, match=r"^workload file '/dev/null' is not a regular file; name a \.py file: "
                                            r"FILE\.py:wl$"):
        load_workload("/dev/null:wl")


def test_a_module_imported_before_that_hides_the_working_directorys_file_is_named(tmp_path, monkeypatch):
    """``random:wl`` with ./random.py took Python's own random (torch imports it first) and said
    only that it had no attribute wl."""
    import random

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "random.py").write_text(f"import sys\nsys.path.insert(0, {TESTS!r})\nfrom tiny_workloads import tiny\n")
    with pytest.raises(WorkloadError) as e:
        load_workload("random:tiny")
    assert str(e.value) == (f"workload module 'random' is {random.__file__}, not random.py in the working directory: a "
                            "module of that name was imported first and hides yours; rename yours, or give its path: "
                            "./random.py:tiny")
    assert isinstance(load_workload("./random.py:tiny"), Workload)  # the way the message gives
