"""Several workers on one study, started by Ray: a real local Ray cluster, a real SQLite file."""

import os
import re
import signal
import sqlite3
import subprocess
import time

import optuna
import pytest

import adamtune
from adamtune import StudyError, TrialState
from adamtune.cluster import tune_on_ray

import ray  # the test extra installs it: a missing Ray fails here, it is not skipped


@pytest.fixture(scope="module")
def cluster():
    """One local cluster of two CPUs for the API tests of this file (each run would start its own)."""
    import logging

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield
    ray.shutdown()


def _rendezvous(folder):
    """An objective whose trials each wait until trials of two different processes have begun:
    it ends only if two workers train at once."""
    import math

    def objective(config, trial):
        (folder / f"{os.getpid()}").touch()
        deadline = time.monotonic() + 120
        while len(list(folder.iterdir())) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("no second worker trained at the same time")
            time.sleep(0.05)
        value = (math.log10(config.lr) + 3) ** 2
        trial.report(1, value)
        return value

    return objective


def test_two_workers_train_at_once_and_keep_to_the_budget(cluster, storage, tmp_path):
    folder = tmp_path / "started"
    folder.mkdir()
    seen = []
    r = tune_on_ray(_rendezvous(folder), workers=2, budget=6, storage=storage, study="objective",
                    on_trial=lambda t, so_far: seen.append(t.number), notice=lambda m: None)
    assert len(r.trials) == 6 and all(t.state == TrialState.COMPLETE for t in r.trials)
    workers = {t.worker for t in r.trials}
    assert len(workers) == 2 and all(f"pid {os.getpid()}" not in w for w in workers)
    assert sorted(seen) == list(range(6))  # each stored trial shown once, here
    assert len({t.params["lr"] for t in r.trials}) == 6  # the workers drew apart


def test_the_workers_find_what_one_process_finds(cluster, storage, tiny_ref):
    """Quasi-random search: the same points, and on the CPU the same values, as one process."""
    r = tune_on_ray(tiny_ref, workers=2, budget=6, batch=3, pruner="none", storage=storage, study="ray",
                    notice=lambda m: None)
    alone = adamtune.tune(tiny_ref, budget=6, batch=3, pruner="none", storage=storage, study="alone")
    got = sorted((t.params["lr"], t.params["weight_decay"], t.value) for t in r.trials)
    want = sorted((t.params["lr"], t.params["weight_decay"], t.value) for t in alone.trials)
    assert [g[:2] for g in got] == [w[:2] for w in want]
    assert [g[2] for g in got] == pytest.approx([w[2] for w in want], rel=1e-5)
    assert {t.engine for t in r.trials} == {"batched (K=3)"}
    path = storage[len("sqlite:///"):]  # left as tune() leaves it: one file, its log folded in
    assert not os.path.exists(path + "-wal") and not os.path.exists(path + "-shm")


def test_a_worker_no_node_can_hold_is_refused_not_waited_for(cluster, storage, tiny_ref):
    with pytest.raises(StudyError, match="each worker asks for 64 CPUs, and the largest node of the Ray cluster has 2"):
        tune_on_ray(tiny_ref, workers=1, cpus_per_worker=64, budget=2, storage=storage, notice=lambda m: None)


def test_a_worker_that_stops_for_failures_is_said_here(cluster, storage):
    def objective(config, trial):
        raise ValueError("the user's loop broke")

    with pytest.raises(StudyError, match="3 trials in a row failed; stopping. Last error: ValueError: the user's loop broke"):
        tune_on_ray(objective, workers=2, budget=8, storage=storage, study="broken", notice=lambda m: None)
    trials = adamtune.load("broken", storage).trials
    assert trials and all(t.state == TrialState.FAILED and "the user's loop broke" in t.error for t in trials)


@pytest.mark.parametrize("kwargs, message", [
    ({"workers": 0}, r"workers must be a whole number in 1..1024, got 0"),
    ({"workers": 2, "cpus_per_worker": -1}, r"cpus_per_worker must be a number > 0, got -1"),
    ({"workers": 2, "address": "nonsense"}, r"a Ray address must be auto, HOST:PORT or ray://HOST:PORT, got 'nonsense'"),
    ({"workers": 2, "budget": 0}, r"budget must be a whole number of trials in 1..1000000, got 0"),
])
def test_bad_input_is_refused_before_any_worker_starts(storage, tiny_ref, kwargs, message):
    with pytest.raises(adamtune.AdamtuneError, match=message):
        tune_on_ray(tiny_ref, storage=storage, **kwargs)
    assert not os.path.exists(storage[len("sqlite:///"):])  # nothing stored


def test_an_address_nothing_answers_at_is_refused_at_once(storage, tiny_ref, free_port):
    port = free_port()
    began = time.monotonic()
    with pytest.raises(StudyError, match=f"cannot reach the Ray cluster at '127.0.0.1:{port}': Connection refused"):
        tune_on_ray(tiny_ref, workers=2, address=f"127.0.0.1:{port}", storage=storage)
    assert time.monotonic() - began < 30  # Ray itself would retry for minutes
    assert not os.path.exists(storage[len("sqlite:///"):])  # nothing stored


SLOW = '''
import dataclasses, sys
sys.path.insert(0, {tests!r})
import tiny_workloads


def slow():
    return dataclasses.replace(tiny_workloads.tiny(), name="slow", steps=10**6, eval_every=10**5)
'''


def _running(db):
    with sqlite3.connect(db) as c:
        return c.execute("select count(*) from trials where state = 'RUNNING'").fetchone()[0]


@pytest.mark.parametrize("sig, rc, said, why", [
    (signal.SIGINT, 130, "interrupted", "interrupted by the user (KeyboardInterrupt)"),
    (signal.SIGTERM, 143, "terminated (SIGTERM)", "terminated by SIGTERM"),
], ids=["ctrl-c", "sigterm"])
def test_the_command_runs_workers_and_a_signal_stops_them_all(tmp_path, tiny_file, adamtune_command, sig, rc, said,
                                                              why):
    """`adamtune tune --workers 2` from a directory with a relative SQLite path; then a study of
    endless trials stopped by Ctrl-C or SIGTERM (over the handler Ray sets): every worker's trials
    end cut short, none left running."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if sig == signal.SIGINT:  # one finished run is enough
        done = subprocess.run([adamtune_command, "tune", "--workload", f"{tiny_file}:tiny", "--workers", "2",
                               "--budget", "4", "--pruner", "none", "--storage", "sqlite:///rel.db", "--no-report"],
                              cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr
        assert len(re.findall(r"^  trial +\d+ complete ", done.stdout, re.M)) == 4
        assert "4 trials: 4 complete" in done.stdout
        assert done.stderr == ""
        assert (tmp_path / "rel.db").exists()

    (tmp_path / "slow.py").write_text(SLOW.format(tests=os.path.dirname(tiny_file)))
    proc = subprocess.Popen([adamtune_command, "tune", "--workload", "slow.py:slow", "--workers", "2", "--batch", "1",
                             "--budget", "4", "--storage", "sqlite:///slow.db", "--no-report"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 300
        while not ((tmp_path / "slow.db").exists() and _running(tmp_path / "slow.db") == 2):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.5)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == rc, err
    assert f"adamtune: {said}; every finished trial is kept in the storage" in err
    trials = optuna.load_study(study_name="slow", storage=f"sqlite:///{tmp_path / 'slow.db'}").trials
    assert len(trials) == 2
    assert all(t.state == optuna.trial.TrialState.FAIL and t.user_attrs["interrupted"] for t in trials)
    assert {t.user_attrs["traceback"] for t in trials} == {"interrupted by the user (KeyboardInterrupt)"}


@pytest.mark.parametrize("args, message", [
    (["--cpus-per-worker", "2"], "--cpus-per-worker is for the workers that --workers starts on Ray; give --workers N"),
    (["--workers", "two"], "--workers must be a whole number, got 'two'"),
    (["--workers", "2", "--cpus-per-worker", "0"], "--cpus-per-worker must be a whole number >= 1, got '0'"),
    (["--workers", "0"], "workers must be a whole number in 1..1024, got 0"),
])
def test_the_commands_worker_options_refuse_bad_input_in_one_line(tmp_path, args, message):
    from typer.testing import CliRunner

    from adamtune.cli import app

    r = CliRunner().invoke(app, ["tune", "--storage", f"sqlite:///{tmp_path / 'x.db'}", *args])
    assert r.exit_code == 2
    assert r.output.strip() == f"adamtune: error: {message}"
    assert not (tmp_path / "x.db").exists()


def test_a_workload_from_a_module_only_this_process_can_import_says_how_to_fix_it(cluster, storage, tmp_path,
                                                                                    monkeypatch, tiny_file):
    (tmp_path / "only_here.py").write_text(
        "import dataclasses, sys\n"
        f"sys.path.insert(0, {os.path.dirname(tiny_file)!r})\n"
        "import tiny_workloads\n"
        "def model():\n"
        "    return tiny_workloads._mlp()\n"
        "def workload():\n"
        "    return dataclasses.replace(tiny_workloads.tiny(), model=model)\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # as a notebook's sys.path.insert does: here, not in the workers
    import only_here

    with pytest.raises(StudyError, match=r"a worker failed: .*No module named 'only_here'.*; workers import the "
                                         r"modules your Workload or objective comes from"):
        tune_on_ray(only_here.workload(), workers=1, budget=1, storage=storage, notice=lambda m: None)
