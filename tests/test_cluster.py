"""Several workers on one study, started by Ray: a real local Ray cluster, a real SQLite file."""

import contextlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
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

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
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


def test_a_lost_workers_share_runs_in_a_new_worker(cluster, storage, tmp_path):
    """A worker killed outright (as by the out-of-memory killer) in its first trial: its trial ends
    as cut short at once (its process ran on this machine and is gone), and the budget is made up
    in the same run by a new worker, which reruns the lost trial's point first."""
    import math
    import signal

    marker = tmp_path / "killed"

    def objective(config, trial):
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        value = (math.log10(config.lr) + 3) ** 2
        trial.report(1, value)
        return value

    notes = []
    r = tune_on_ray(objective, workers=1, budget=4, storage=storage, study="lost", notice=notes.append)
    assert any(n.startswith("a worker was lost") for n in notes), notes
    assert "making up for the lost worker: 4 trials of the budget left, 1 worker started" in notes, notes
    (gone,) = [t for t in r.trials if t.state == TrialState.FAILED]
    assert gone.interrupted and "no longer runs" in gone.error
    done = [t for t in r.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 4 and r.count(TrialState.RUNNING) == 0
    (rerun,) = [t for t in done if t.retry_of is not None]
    assert rerun.retry_of == gone.number and rerun.params == gone.params


def test_a_run_whose_make_up_rounds_run_out_ends_its_lost_trials_and_says_the_budget_is_not_filled(
        cluster, storage, tmp_path):
    """A worker is lost (SIGKILL, as the out-of-memory killer does) in the first round and in both
    make-up rounds, the other workers of a round finish. Each make-up round gets as many workers
    as the run has (the budget left allowing); the last lost note does not promise new workers;
    the last round's lost trial is ended too (not left running, for the command to call "in
    training elsewhere"); and the run raises, counting the workers lost over every round, with
    the finished trials kept."""
    import math
    import signal

    token = tmp_path / "kill"  # one trial of each round takes it and kills its worker

    def objective(config, trial):
        try:
            os.rename(token, tmp_path / f"used-{os.getpid()}")  # atomic: one taker only
        except FileNotFoundError:
            pass
        else:
            os.kill(os.getpid(), signal.SIGKILL)
        value = (math.log10(config.lr) + 3) ** 2
        trial.report(1, value)
        return value

    notes = []

    def notice(message):
        notes.append(message)
        if message.startswith("making up"):  # said here before the round's workers start
            token.touch()

    token.touch()
    with pytest.raises(StudyError) as raised:
        tune_on_ray(objective, workers=2, budget=4, storage=storage, study="unfilled", notice=notice)
    assert str(raised.value) == ("the budget is not filled: 3 of 4 trials; 3 of the 5 workers this run started were "
                                 "lost (in 3 rounds); the finished trials are kept: run the same command again to "
                                 "make up for the rest")
    made_up = [n for n in notes if n.startswith("making up")]
    assert made_up == ["making up for the lost worker: 2 trials of the budget left, 2 workers started",
                       "making up for the lost worker: 1 trial of the budget left, 1 worker started"], notes
    lost = [n for n in notes if n.startswith("a worker was lost")]
    assert len(lost) == 3, notes
    assert all(n.endswith("what it leaves of the budget runs in new workers") for n in lost[:2]), lost
    assert "runs in new workers" not in lost[2]
    assert lost[2].endswith("run the same command again to make up for what it leaves of the budget"), lost[2]
    trials = adamtune.load("unfilled", storage).trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]  # the last round's lost trial is ended too
    gone = [t for t in trials if t.state == TrialState.FAILED]
    assert len(gone) == 3 and all(t.interrupted and "no longer runs" in t.error for t in gone)
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 3  # kept
    # "run the same command again": with no worker lost, it fills the budget
    r = tune_on_ray(objective, workers=2, budget=4, storage=storage, study="unfilled", notice=notice)
    assert r.count(TrialState.COMPLETE) == 4 and r.count(TrialState.RUNNING) == 0


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
    with pytest.raises(StudyError, match=re.escape("each worker asks for 64 CPUs, and the largest node of the Ray "
                                                   "cluster has 2; ask for fewer (--cpus-per-worker)")):
        tune_on_ray(tiny_ref, workers=1, cpus_per_worker=64, budget=2, storage=storage, notice=lambda m: None)
    assert not os.path.exists(storage[len("sqlite:///"):])  # nothing stored: not even the file


def test_a_run_refused_before_its_workers_start_leaves_no_study_to_block_the_next(cluster, storage, tiny_ref):
    """Only the study the refused run made goes: the storage's other studies, and one it continued, stay."""
    adamtune.tune(tiny_ref, budget=1, storage=storage, study="kept", pruner="none")
    for study in ("new", "kept"):
        with pytest.raises(StudyError, match="each worker asks for 64 CPUs"):
            tune_on_ray(tiny_ref, workers=1, cpus_per_worker=64, budget=2, storage=storage, study=study,
                        optimizer="adamw", notice=lambda m: None)
    with contextlib.closing(sqlite3.connect(storage[len("sqlite:///"):])) as con:
        assert con.execute("SELECT study_name FROM studies").fetchall() == [("kept",)]
    # the corrected run may choose another optimizer: no study of the refused run's holds it to adamw
    r = tune_on_ray(tiny_ref, workers=1, budget=1, storage=storage, study="new", optimizer="adam",
                    notice=lambda m: None)
    assert r.settings.optimizer == "adam"
    assert [len(adamtune.load(name, storage).trials) for name in ("new", "kept")] == [1, 1]


def test_numpy_integers_are_taken_for_workers():
    import numpy as np

    from adamtune.cluster import check_workers

    assert check_workers(np.int64(2)) == 2 and type(check_workers(np.int64(2))) is int


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
    with pytest.raises(StudyError, match=f"the Ray cluster at '127.0.0.1:{port}' cannot be reached: Connection refused"):
        tune_on_ray(tiny_ref, workers=2, address=f"127.0.0.1:{port}", storage=storage)
    assert time.monotonic() - began < 30  # Ray itself would retry for minutes
    assert not os.path.exists(storage[len("sqlite:///"):])  # nothing stored



def test_an_address_where_something_else_answers_is_refused_at_once(storage, tiny_ref):
    """A web server (the dashboard's port is the usual mistake) is not a Ray cluster: refused in one
    line instead of Ray's minutes of retries."""
    import http.server
    import threading

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"127.0.0.1:{server.server_port}"
        began = time.monotonic()
        with pytest.raises(StudyError, match=f"the Ray cluster at '{address}' does not answer: something listens there but "
                                             "does not speak gRPC; give the head node's GCS address"):
            tune_on_ray(tiny_ref, workers=2, address=address, storage=storage)
        assert time.monotonic() - began < 10
    finally:
        server.shutdown()
        server.server_close()
    assert not os.path.exists(storage[len("sqlite:///"):])  # nothing stored


def test_a_listener_that_says_nothing_is_refused_after_the_timeout():
    import socket

    from adamtune.cluster import check_reachable

    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never answers
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(StudyError, match=f"at '{address}' does not answer: something listens there but said nothing in 0.5 s"):
            check_reachable(address, timeout_s=0.5)


def test_auto_finding_a_cluster_that_is_gone_is_refused_at_once(monkeypatch, free_port):
    """--ray-address auto after the recorded cluster stopped (or RAY_ADDRESS naming a dead one):
    Ray would wait two minutes for its GCS."""
    from adamtune.cluster import check_reachable

    port = free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(StudyError, match=rf"the Ray cluster --ray-address auto finds \([^:]+:{port}: RAY_ADDRESS or "
                                         r"the last `ray start` on this machine\) cannot be reached: Connection refused"):
        check_reachable("auto")


def test_a_real_clusters_address_passes_the_check(cluster):
    from adamtune.cluster import check_reachable

    check_reachable(ray.get_runtime_context().gcs_address)  # the GCS of the running local cluster

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


def test_a_cluster_with_token_authentication_is_joined_with_its_token_and_refused_in_one_line_without(
        tmp_path, tiny_file, adamtune_command, free_port):
    """`ray start` (Ray >= 2.59 turns token authentication on by default) and --ray-address HOST:PORT:
    without the token, one line saying what to set (not Ray's twenty lines of C++ warnings); with it,
    the workers run. Last in this file: it starts a cluster of its own with `ray start`."""
    import secrets

    port = free_port()
    token = secrets.token_hex(32)
    ray_command = os.path.join(os.path.dirname(adamtune_command), "ray")
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short (socket paths); records no `auto` cluster in /tmp/ray
    head = subprocess.Popen([ray_command, "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
                             "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp],
                            env=dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, OMP_NUM_THREADS="1",
                                     RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0"),  # stop at once
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from adamtune.cluster import check_reachable

        deadline = time.monotonic() + 120
        while True:
            try:
                check_reachable(f"127.0.0.1:{port}", timeout_s=1)
                break
            except StudyError:
                assert head.poll() is None and time.monotonic() < deadline, "ray start did not come up"
                time.sleep(0.5)
        args = [adamtune_command, "tune", "--workload", f"{tiny_file}:tiny", "--workers", "2", "--budget", "2",
                "--pruner", "none", "--ray-address", f"127.0.0.1:{port}", "--no-report"]
        without = dict(os.environ, RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1")
        without.pop("RAY_AUTH_TOKEN", None)
        refused = subprocess.run(args + ["--storage", "sqlite:///a.db"], cwd=tmp_path, capture_output=True, text=True,
                                 env=without, timeout=300)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr == (f"adamtune: error: the Ray cluster at '127.0.0.1:{port}' wants an authentication "
                                  "token: set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN or "
                                  "~/.ray/auth_token (`ray get-auth-token` on the head node prints it)\n")
        assert not (tmp_path / "a.db").exists()  # nothing stored

        joined = subprocess.run(args + ["--storage", "sqlite:///b.db"], cwd=tmp_path, capture_output=True, text=True,
                                env=dict(without, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token), timeout=300)
        assert joined.returncode == 0, joined.stderr
        assert "2 trials: 2 complete" in joined.stdout
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        shutil.rmtree(temp, ignore_errors=True)
