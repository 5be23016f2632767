"""Loading a user's workload file or module: what its code does at import reaches the user as one line."""

import subprocess

import pytest

from adamtune import WorkloadError
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
