"""The README's examples run as written."""

import importlib.util
import os

from typer.testing import CliRunner

import adamtune
from adamtune.cli import app

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_own_loop_objective_mode(storage):
    mod = _load("own_loop")
    r = adamtune.tune(mod.objective, budget=3, storage=storage, study="own-loop")
    assert r.best is not None and r.best.grad_norms is not None and r.best.grad_norms.count == 200
    assert set(r.best.curve.metrics) == {"value", "train_loss"}
    assert "torch.optim.AdamW(" in adamtune.python_snippet(r.best_config)


def test_my_workload_from_the_command_line(storage):
    r = CliRunner().invoke(app, ["tune", "--workload", os.path.join(EXAMPLES, "my_workload.py:workload"),
                                 "--budget", "2", "--storage", storage, "--no-report"])
    assert r.exit_code == 0, r.output
    assert "study my-classifier" in r.stdout and "2/2" in r.stdout


def test_explain_command():
    r = CliRunner().invoke(app, ["explain", "weight_decay", "--task", "llm"])
    assert r.exit_code == 0, r.output
    assert "1 / (lr · λ)" in r.stdout
    r = CliRunner().invoke(app, ["explain", "momentum"])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
