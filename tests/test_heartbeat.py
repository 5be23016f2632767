import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest

import adamtune
from adamtune.heartbeat import LOST, Heartbeat, end_lost, lost_trials


def _stamps(path):
    with sqlite3.connect(path) as db:
        return dict(db.execute("select trial_id, heartbeat from trial_heartbeats"))


def _stamped_running(path, after):
    try:
        with sqlite3.connect(path, timeout=60) as db:
            return db.execute("select count(*) from trials join trial_heartbeats using (trial_id) "
                              "where state = 'RUNNING' and number >= ?", (after,)).fetchone()[0]
    except sqlite3.OperationalError:  # the tables are not made yet
        return 0


def test_the_thread_stamps_running_trials_until_they_finish(storage):
    path = storage[len("sqlite:///"):]
    study = optuna.create_study(storage=storage)
    a, b = study.ask(), study.ask()
    with Heartbeat(study, interval_s=0.2) as heartbeat:
        heartbeat.watch([a, b])
        deadline = time.monotonic() + 30
        while len(_stamps(path)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        first = _stamps(path)
        assert set(first) == {a._trial_id, b._trial_id}  # stamped at once, not after the interval
        study.tell(a, 1.0)
        time.sleep(2.5)  # SQLite's clock has whole seconds
        later = _stamps(path)
    assert later[b._trial_id] > first[b._trial_id]  # still running: stamped again
    assert later[a._trial_id] == first[a._trial_id]  # finished: no longer stamped
    assert lost_trials(study) == []  # stamped just now: not lost


def test_a_worker_killed_outright_leaves_trials_the_next_run_ends_and_makes_up(tmp_path, tiny_file, adamtune_command):
    db = tmp_path / "killed.db"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for _ in range(5):  # a kill that lands between two batches finds nothing running: again
        p = subprocess.Popen([adamtune_command, "tune", "--workload", f"{tiny_file}:tiny_long", "--budget", "400",
                              "--batch", "4", "--pruner", "none", "--storage", f"sqlite:///{db}", "--no-report"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and p.poll() is None:  # a batch after the first is training, stamped
            time.sleep(0.1)
            if os.path.exists(db) and _stamped_running(db, after=4):
                break
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
        r = adamtune.load("tiny-long", f"sqlite:///{db}")
        running = [t.number for t in r.trials if t.state == adamtune.TrialState.RUNNING]
        if running:
            break
    assert running  # SIGKILL ends nothing: these would use up the budget forever
    study = optuna.load_study(study_name="tiny-long", storage=f"sqlite:///{db}")
    # on another machine, only the heartbeat tells: stamped moments ago, its worker may be alive
    with sqlite3.connect(db) as con:
        con.execute("update trial_user_attributes set value_json = json_quote('another-boot 1:2 3 4') "
                    "where key = 'process'")
    assert lost_trials(study) == []
    assert end_lost(study) == []
    with sqlite3.connect(db) as con:  # 15 hours pass
        con.execute("update trial_heartbeats set heartbeat = datetime(heartbeat, '-15 hours')")
        # the kill may land between making a batch's trials and stamping them: those, never stamped,
        # are lost once their start is over 14 h 10 min old
        con.execute("update trials set datetime_start = datetime(datetime_start, '-15 hours') "
                    "where state = 'RUNNING'")
    from typer.testing import CliRunner

    from adamtune.cli import app

    shown = CliRunner().invoke(app, ["show", "--storage", f"sqlite:///{db}"]).stdout
    assert (f"({', '.join(map(str, running))}) running but lost: their worker sent no heartbeat for over 10 minutes "
            "(killed, or its machine stopped); the next `adamtune tune` on the study ends them as cut short and "
            "makes up for them") in " ".join(shown.split())
    kept = len(r.trials) - len(running)
    notes = []
    r = adamtune.tune(storage=f"sqlite:///{db}", study="tiny-long", budget=kept + 2, notice=notes.append)
    assert notes[0].startswith(f"{len(running)} trial") and "sent no heartbeat for over 10 minutes" in notes[0]
    lost = [t for t in r.trials if t.number in running]
    assert all(t.state == adamtune.TrialState.FAILED and t.interrupted and t.error == LOST for t in lost)
    assert r.count(adamtune.TrialState.RUNNING) == 0
    assert len(r.trials) == kept + len(running) + 2  # the lost trials did not use up the budget


def test_trials_without_a_stamp_are_left_alone_while_young(storage):
    study = optuna.create_study(storage=storage)
    study.ask()  # made by Optuna itself, as another tool would: no heartbeat
    assert lost_trials(study, grace_s=0) == [] and end_lost(study, grace_s=0) == []
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING


def _started_hours_ago(path, trial_id, hours):
    with sqlite3.connect(path) as db:
        db.execute("update trials set datetime_start = datetime(datetime_start, ?) where trial_id = ?",
                   (f"-{hours} hours", trial_id))


def test_a_trial_killed_before_its_first_stamp_is_ended_once_clearly_old_and_its_point_rerun(storage):
    """A worker killed between making a trial and stamping it (or whose database failed then)
    leaves a running trial with no heartbeat row. Its start may be any time zone's local time,
    so it is lost only once it started over 14 h 10 min ago; then it ends as any lost trial does."""
    from typer.testing import CliRunner

    from adamtune.cli import app
    from adamtune.storage import ask_many

    def objective(config, trial):
        return config.lr

    path = storage[len("sqlite:///"):]
    adamtune.tune(objective, budget=2, storage=storage, study="s", notice=lambda m: None)
    study = optuna.load_study(study_name="s", storage=storage)
    dead, half_a_day, fresh = ask_many(study, 3)  # as a worker makes them; none stamped
    _started_hours_ago(path, dead._trial_id, 15)
    _started_hours_ago(path, half_a_day._trial_id, 12)  # a live worker's local time 12 h behind UTC
    assert lost_trials(study) == [dead._trial_id]
    shown = CliRunner().invoke(app, ["show", "--storage", storage, "--study", "s"]).stdout
    assert f"1 trial ({dead.number}) running but lost: its worker sent no heartbeat for over 10 minutes" in shown
    notes = []
    r = adamtune.tune(objective, budget=5, storage=storage, study="s", notice=notes.append)
    assert notes[0].startswith(f"1 trial ({dead.number}) of study 's' lost: its worker sent no heartbeat for over 10 "
                               "minutes")
    ended = r.trials[dead.number]
    assert ended.state == adamtune.TrialState.FAILED and ended.interrupted and ended.error == LOST
    assert [t.state for t in r.trials if t.number in (half_a_day.number, fresh.number)] == [
        adamtune.TrialState.RUNNING] * 2  # left alone
    (rerun,) = [t for t in r.trials if t.number > fresh.number]
    assert rerun.retry_of == dead.number and rerun.state == adamtune.TrialState.COMPLETE
    alone = adamtune.tune(objective, budget=3, storage=storage, study="alone", notice=lambda m: None)
    assert rerun.params == alone.trials[dead.number].params  # the point the dead trial stood for


def test_each_trial_is_stamped_as_soon_as_it_is_made(storage, tiny_ref, monkeypatch):
    """Stamped before its parameters are written: a worker killed while making a batch leaves
    trials that are lost 10 minutes later."""
    import adamtune.study as study_module

    path = storage[len("sqlite:///"):]
    real = study_module.write_kept
    unstamped = []

    def write_kept(kept):
        made = {t._trial_id for t, _ in kept}
        deadline = time.monotonic() + 10
        while not made <= set(_stamps(path)) and time.monotonic() < deadline:
            time.sleep(0.05)
        unstamped.append(made - set(_stamps(path)))
        return real(kept)

    monkeypatch.setattr(study_module, "write_kept", write_kept)
    adamtune.tune(tiny_ref, budget=4, batch=4, pruner="none", storage=storage, notice=lambda m: None)
    assert unstamped and not any(unstamped)


@pytest.mark.parametrize("url", [None, "sqlite:///:memory:"], ids=["optuna in-memory", "sqlite in-memory"])
def test_in_memory_storage_has_no_heartbeat(url):
    study = optuna.create_study(storage=url)
    with Heartbeat(study, interval_s=0.01) as heartbeat:
        assert heartbeat._thread is None
        heartbeat.watch([study.ask()])
    assert lost_trials(study, grace_s=0) == []


def _end_as_lost(storage, study_name, number):
    """What another worker's `tune` does to a trial whose heartbeat stopped: failed, cut short."""
    other = optuna.load_study(study_name=study_name, storage=storage)
    trial_id = other.get_trials()[number]._trial_id
    other._storage.set_trial_user_attr(trial_id, "interrupted", True)
    other._storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)


@pytest.mark.parametrize("outcome", ["returns", "raises"])
def test_a_stalled_worker_whose_trial_was_ended_elsewhere_goes_on(storage, outcome):
    """A worker alive but stalled past the grace time: another worker ended its trial as lost.
    Its result is dropped with a notice, no traceback, and the study goes on."""
    def objective(config, trial):
        if trial.number == 1:
            _end_as_lost(storage, "own", 1)
            if outcome == "raises":
                raise RuntimeError("boom")
        return config.lr

    notes = []
    r = adamtune.tune(objective, budget=3, storage=storage, study="own", notice=notes.append)
    assert [(t.state, t.interrupted) for t in r.trials] == [
        (adamtune.TrialState.COMPLETE, False), (adamtune.TrialState.FAILED, True),
        (adamtune.TrialState.COMPLETE, False), (adamtune.TrialState.COMPLETE, False)]
    assert notes == ["1 trial (1) had been ended as lost by another run while this one trained it (no heartbeat seen "
                     "for over 10 minutes, or its process not seen running); its result is not stored: cut short, "
                     "run again by the study"]


def test_a_stalled_batch_whose_trials_were_ended_elsewhere_stores_the_others(storage, tiny_ref, monkeypatch):
    import adamtune.study as study_module

    real = study_module.train_members

    calls = []

    def stalled(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            _end_as_lost(storage, "tiny", 1)
            _end_as_lost(storage, "tiny", 2)
        return real(*args, **kwargs)

    monkeypatch.setattr(study_module, "train_members", stalled)
    notes = []
    r = adamtune.tune(tiny_ref, budget=4, batch=4, pruner="none", storage=storage, notice=notes.append)
    assert [t.state for t in r.trials[:4]] == [adamtune.TrialState.COMPLETE, adamtune.TrialState.FAILED,
                                              adamtune.TrialState.FAILED, adamtune.TrialState.COMPLETE]
    assert "2 trials (1, 2) had been ended as lost by another run while this one trained them" in notes[0]
    assert r.count(adamtune.TrialState.COMPLETE) == 4  # the study made up for them


def test_a_lost_trial_that_finishes_before_it_is_ended_keeps_its_result(storage, monkeypatch):
    import adamtune.heartbeat as heartbeat

    study = optuna.create_study(storage=storage)
    trial = study.ask()
    monkeypatch.setattr(heartbeat, "lost", lambda s, g=None: [heartbeat.Lost(trial._trial_id, trial.number)])  # seen lost...
    study.tell(trial, 1.0)  # ...then its stalled worker finished it
    assert end_lost(study) == []
    (t,) = optuna.load_study(study_name=study.study_name, storage=storage).get_trials()
    assert t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs == {}


def test_ctrl_c_after_trials_were_ended_elsewhere_names_them_in_one_line(storage, tiny_ref, monkeypatch):
    import adamtune.study as study_module

    def stalled_then_stopped(*args, **kwargs):
        _end_as_lost(storage, "tiny", 1)
        _end_as_lost(storage, "tiny", 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(study_module, "train_members", stalled_then_stopped)
    notes = []
    with pytest.raises(KeyboardInterrupt):
        adamtune.tune(tiny_ref, budget=4, batch=4, pruner="none", storage=storage, notice=notes.append)
    assert [n for n in notes if "ended as lost by another run" in n] == [
        "2 trials (1, 2) had been ended as lost by another run while this one trained them (no heartbeat seen for "
        "over 10 minutes, or its process not seen running); their results are not stored: cut short, run again by "
        "the study"]
    states = [t.state for t in optuna.load_study(study_name="tiny", storage=storage).get_trials()]
    assert states == [optuna.trial.TrialState.FAIL] * 4  # the other two cut short here


def _process_of(pid):
    """heartbeat.this_process()'s record for process ``pid`` of this machine."""
    from adamtune.heartbeat import _start_of, this_process

    boot, ns, _, _ = this_process().split()
    return f"{boot} {ns} {pid} {_start_of(pid)}"


def _set_process(path, trial_id, process):
    with sqlite3.connect(path) as db:
        db.execute("insert or replace into trial_user_attributes (trial_id, key, value_json) values (?, 'process', "
                   "json_quote(?))", (trial_id, process))


def test_a_trial_whose_worker_process_on_this_machine_ended_is_lost_at_once(storage):
    """No 10-minute wait on the machine that ran it: its process is gone (ended, a zombie, or its
    pid now another process's); a live one, or one of another machine, is left to the heartbeat."""
    from adamtune.heartbeat import GONE, beat, this_process
    from adamtune.storage import sql_backend

    path = storage[len("sqlite:///"):]
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    beat(sql_backend(study), [trial._trial_id])  # stamped just now: the heartbeat alone would wait
    worker = subprocess.Popen(["sleep", "60"])
    try:
        _set_process(path, trial._trial_id, _process_of(worker.pid))
        assert lost_trials(study) == []  # it runs
        _set_process(path, trial._trial_id, this_process())
        assert lost_trials(study) == []  # this very process
        boot, ns, pid, start = this_process().split()
        _set_process(path, trial._trial_id, f"{boot} {ns} {pid} {int(start) - 1}")
        assert lost_trials(study) == [trial._trial_id]  # this pid, but a process started later: the pid reused
        _set_process(path, trial._trial_id, f"another-boot {ns} {worker.pid + 10 ** 6} 1")
        assert lost_trials(study) == []  # another machine: only its heartbeat tells
        _set_process(path, trial._trial_id, _process_of(worker.pid))
        worker.kill()
        deadline = time.monotonic() + 30
        while not lost_trials(study) and time.monotonic() < deadline:  # a zombie until collected: gone too
            time.sleep(0.05)
        assert lost_trials(study) == [trial._trial_id]
    finally:
        worker.kill()
        worker.wait()
    assert lost_trials(study) == [trial._trial_id]
    (ended,) = end_lost(study)
    assert ended.pid == worker.pid
    (t,) = optuna.load_study(study_name=study.study_name, storage=storage).get_trials()
    assert t.state == optuna.trial.TrialState.FAIL and t.user_attrs["traceback"] == GONE.format(pid=worker.pid)


def test_a_run_started_again_on_the_same_machine_ends_the_killed_runs_trials_at_once(storage):
    from typer.testing import CliRunner

    from adamtune.cli import app
    from adamtune.heartbeat import GONE, Heartbeat
    from adamtune.storage import ask_many

    def objective(config, trial):
        return config.lr

    path = storage[len("sqlite:///"):]
    adamtune.tune(objective, budget=2, storage=storage, study="s", notice=lambda m: None)
    study = optuna.load_study(study_name="s", storage=storage)
    (dead,) = ask_many(study, 1)
    with Heartbeat(study, interval_s=0.1) as heartbeat:  # stamped, as its worker did before it was killed
        heartbeat.watch([dead])
        deadline = time.monotonic() + 30
        while not _stamps(path) and time.monotonic() < deadline:
            time.sleep(0.05)
    worker = subprocess.Popen(["sleep", "60"])
    _set_process(path, dead._trial_id, _process_of(worker.pid))
    worker.kill()
    worker.wait()
    shown = " ".join(CliRunner().invoke(app, ["show", "--storage", storage, "--study", "s"]).stdout.split())
    assert (f"1 trial ({dead.number}) running but lost: its worker process (pid {worker.pid}) on this machine no "
            "longer runs; the next `adamtune tune` on the study ends it as cut short and makes up for it") in shown
    notes = []
    r = adamtune.tune(objective, budget=3, storage=storage, study="s", notice=notes.append)
    assert notes[0] == (f"1 trial ({dead.number}) of study 's' lost: its worker process (pid {worker.pid}) on this "
                        "machine no longer runs; ended as cut short, this run makes up for it")
    ended = r.trials[dead.number]
    assert ended.state == adamtune.TrialState.FAILED and ended.interrupted
    assert ended.error == GONE.format(pid=worker.pid)
    assert r.count(adamtune.TrialState.COMPLETE) == 3 and r.count(adamtune.TrialState.RUNNING) == 0


def test_a_running_trial_an_older_adamtune_marked_cut_short_uses_the_budget_until_it_is_lost_then_is_rerun(storage):
    """An older adamtune marked a trial cut short, then stored its state, in separate commits: a
    worker killed between them left it running and marked. It counts as running (the budget is
    not filled with another point meanwhile) until it is lost; then it ends as cut short and its
    point is run again."""
    def objective(config, trial):
        return config.lr

    path = storage[len("sqlite:///"):]
    adamtune.tune(objective, budget=3, storage=storage, study="s", notice=lambda m: None)
    study = optuna.load_study(study_name="s", storage=storage)
    half_ended = study.ask()  # made by its worker, which then marked it and was killed
    study._storage.set_trial_user_attr(half_ended._trial_id, "interrupted", True)
    r = adamtune.tune(objective, budget=4, storage=storage, study="s", notice=lambda m: None)
    assert len(r.trials) == 4  # still running, maybe in training: it uses up the budget
    assert r.trials[3].state == adamtune.TrialState.RUNNING and not r.trials[3].interrupted
    _started_hours_ago(path, half_ended._trial_id, 15)  # its worker is gone
    r = adamtune.tune(objective, budget=4, storage=storage, study="s", notice=lambda m: None)
    assert r.trials[3].state == adamtune.TrialState.FAILED and r.trials[3].interrupted
    (rerun,) = r.trials[4:]
    assert rerun.retry_of == 3 and rerun.state == adamtune.TrialState.COMPLETE


def _run_isolated(unshare, code, *, nobody=False, hidepid=False):
    """``code`` run by this Python in new namespaces (``unshare`` options), with /proc remounted
    with ``hidepid=2`` and as user nobody where asked; its stdout. Skipped where this user may
    not make them (not root, a container without the privilege)."""
    import shutil

    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("setpriv") is None:
        pytest.skip("needs root, unshare and setpriv")
    script = '"$0" -c "$1"'
    if nobody:
        script = f"setpriv --reuid=65534 --regid=65534 --clear-groups {script}"
    script = f"exec {script}"
    if hidepid:
        script = f"mount -t proc -o hidepid=2 proc /proc && {script}"
    r = subprocess.run(["unshare", *unshare, "sh", "-c", script, sys.executable, code], capture_output=True,
                       text=True, timeout=120, cwd="/")
    if r.returncode != 0 and ("unshare" in r.stderr or "mount" in r.stderr):
        pytest.skip(f"namespaces not available here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_a_live_worker_hidden_by_hidepid_is_not_taken_for_gone():
    """With /proc mounted hidepid=2 (shared login nodes), another user's process has no /proc
    entry: it was taken as ended, and another user's tune ended a live run's trials."""
    alive = subprocess.Popen(["sleep", "120"])
    ended = subprocess.Popen(["sleep", "120"])
    try:
        records = [_process_of(alive.pid), _process_of(ended.pid)]
        ended.kill()
        ended.wait()
        code = ("import sys; from adamtune.heartbeat import gone_pid, this_process; here = this_process(); "
                f"print([gone_pid(p, here) for p in {records!r}], here is not None)")
        assert _run_isolated(["--mount", "--propagation", "private"], code, nobody=True, hidepid=True) == \
            f"[None, {ended.pid}] True"  # the live one cannot be seen, so it is not gone; the ended one is
    finally:
        alive.kill()
        alive.wait()


def test_a_proc_of_another_pid_namespace_tells_nothing_about_this_process():
    """In a pid namespace without its own /proc (unshare --pid without --mount-proc), this
    process's pid named another process of the host's /proc: a trial's liveness was tied to it."""
    assert _run_isolated(["--pid", "--fork"], "from adamtune.heartbeat import this_process; "
                                              "print(this_process())") == "None"


def test_heartbeats_that_keep_failing_are_said_once_before_other_runs_end_the_trials(tmp_path):
    """A stamp that failed was skipped without a word, however long it kept failing: other runs
    then ended the worker's live trials as lost and nothing said why."""

    path = tmp_path / "s.db"
    study = optuna.create_study(storage=f"sqlite:///{path}")
    said = []
    with Heartbeat(study, interval_s=0.05, notice=said.append, warn_after_s=0.3) as heartbeat:
        heartbeat.watch([study.ask()])
        deadline = time.monotonic() + 30
        while not _stamps(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        with sqlite3.connect(path) as db:  # the database loses the table: every stamp fails from now on
            db.execute("DROP TABLE trial_heartbeats")
        while not said and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # more failed stamps: said once
    assert len(said) == 1, said
    assert re.fullmatch(r"the heartbeat of this run's trials has failed for over \d+ seconds \(OperationalError: "
                        r"no such table: trial_heartbeats\); other runs of this study end them as lost once 10 "
                        r"minutes pass without one", said[0]), said[0]
