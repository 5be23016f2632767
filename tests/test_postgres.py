"""Studies shared through a real PostgreSQL server, started here for the tests."""

import glob
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

import adamtune
from adamtune import StorageError



def _pg_bin(name):
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or ([shutil.which(name)] if shutil.which(name) else [])
    return found[-1] if found else None


def _install_postgres():
    if _pg_bin("initdb") is None and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=False, capture_output=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    return _pg_bin("initdb")


@pytest.fixture(scope="module")
def postgres_url(free_port):
    initdb = _install_postgres()
    if initdb is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL could not be installed for the storage tests")
        pytest.skip("PostgreSQL is not installed")
    pg_ctl = os.path.join(os.path.dirname(initdb), "pg_ctl")
    # Not under pytest's tmp_path: that is private to root, and the server refuses to run as
    # root, so it runs as the postgres user in a directory of its own.
    home = tempfile.mkdtemp(prefix="adamtune-pg-")
    data = pathlib.Path(home) / "data"
    port = free_port()
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(home, "postgres")
    subprocess.run(as_user + [initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], check=True, capture_output=True)
    opts = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    subprocess.run(as_user + [pg_ctl, "-D", str(data), "-o", opts, "-l", str(data / "log"), "-w", "start"],
                   check=True, capture_output=True)
    yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    subprocess.run(as_user + [pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)
    shutil.rmtree(home, ignore_errors=True)


def test_study_in_postgres(postgres_url, tiny_ref):
    r = adamtune.tune(tiny_ref, budget=4, storage=postgres_url, study="pg-tiny", pruner="none")
    assert len(r.trials) == 4 and r.best is not None
    again = adamtune.load("pg-tiny", postgres_url)
    assert [t.params for t in again.trials] == [t.params for t in r.trials]


def test_two_workers_share_one_study(postgres_url, tiny_ref, tmp_path, adamtune_command):
    """Two workers on one study: `adamtune tune` in a process of its own and the API in this one.

    The second worker is this test's process, not another subprocess: each new process pays for
    importing torch again (tens of seconds on a busy 2-core machine), and what is tested is the
    sharing through the server, which two processes show as well as three.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = [adamtune_command, "tune", "--workload", tiny_ref, "--storage", postgres_url, "--study", "shared",
            "--budget", "10", "--batch", "2", "--pruner", "none", "--no-report"]
    worker = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        adamtune.tune(tiny_ref, storage=postgres_url, study="shared", budget=10, batch=2, pruner="none")
    except BaseException:
        worker.kill()  # this worker's error is the one to see, not a wait for the other
        worker.communicate()
        raise
    out, err = worker.communicate(timeout=600)
    assert worker.returncode == 0, err
    trials = adamtune.load("shared", postgres_url).trials
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    # both workers drew on one budget: a trial one of them asked for past it (the two asked at
    # once) ended unrun, cut short, not counted
    counted = [t for t in trials if not t.interrupted]
    assert len(counted) == 10
    assert all(t.state == adamtune.TrialState.COMPLETE for t in counted)
    assert all(t.error.startswith("not run: the study's budget of 10") for t in trials if t.interrupted)
    # the Sobol sequence is shared: no point was tried twice
    assert len({t.params["lr"] for t in counted}) == len(counted)


def test_the_bare_postgresql_scheme_works_with_the_driver_installed(postgres_url, tiny_ref):
    """``postgresql://user@host/db``, as the README and --help write it (SQLAlchemy 2.1 maps the bare
    scheme to psycopg 3; the ``postgres`` extra installs psycopg2); the URL shown is the one given."""
    from typer.testing import CliRunner

    from adamtune.analysis import analyze
    from adamtune.cli import app

    bare = "postgresql://" + postgres_url.split("://", 1)[1]
    r = adamtune.tune(tiny_ref, budget=2, storage=bare, study="bare", pruner="none")
    assert len(r.trials) == 2
    assert f"--storage {bare} " in analyze(r, storage=bare).next_space.command
    runner = CliRunner()
    for command in (["show", "--study", "bare"], ["best", "--study", "bare"], ["studies"]):
        shown = runner.invoke(app, [*command, "--storage", bare])
        assert shown.exit_code == 0, shown.output


def test_unreachable_server_is_one_clear_error(free_port):
    port = free_port()
    with pytest.raises(StorageError, match=r"cannot open storage postgresql\+psycopg2://postgres@127.0.0.1"):
        adamtune.tune("digits-mlp", budget=1, storage=f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres")


def test_password_is_not_printed(free_port):
    port = free_port()
    with pytest.raises(StorageError) as e:
        adamtune.load("x", f"postgresql+psycopg2://me:secret@127.0.0.1:{port}/db")
    assert "secret" not in str(e.value) and "me:***@" in str(e.value)


def test_a_user_who_may_not_read_the_tables_is_told_so(postgres_url):
    """The server's reason, not the text of Optuna's wrapper ("An exception is raised during the commit")."""
    import sqlalchemy
    from typer.testing import CliRunner

    from adamtune.cli import app
    from adamtune.storage import open_storage

    open_storage(postgres_url).engine.dispose()  # Optuna's tables, made by their owner
    engine = sqlalchemy.create_engine(postgres_url)
    with engine.begin() as con:
        con.execute(sqlalchemy.text("drop role if exists nosee"))
        con.execute(sqlalchemy.text("create role nosee login"))
    engine.dispose()
    url = postgres_url.replace("://postgres@", "://nosee@")
    for command in (["show"], ["studies"], ["tune", "--budget", "1", "--no-report"]):
        r = CliRunner().invoke(app, [*command, "--storage", url])
        assert r.exit_code == 2, r.output
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"adamtune: error: cannot open storage {url}: "), r.stderr
        assert "permission denied for table" in lines[0], lines


def test_reading_a_database_without_studies_refuses_and_writes_nothing(postgres_url):
    """show, studies, best and report of a database holding no study table (a typo, the default
    ``postgres``): one line, as for an empty SQLite file, and Optuna's tables are not made there."""
    import sqlalchemy
    from typer.testing import CliRunner

    from adamtune.cli import app

    engine = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as con:
        con.execute(sqlalchemy.text("drop database if exists nostudies"))
        con.execute(sqlalchemy.text("create database nostudies"))
    engine.dispose()
    url = postgres_url.rsplit("/", 1)[0] + "/nostudies"
    for command in ("show", "studies", "best", "report"):
        r = CliRunner().invoke(app, [command, "--storage", url])
        assert r.exit_code == 2 and r.stdout == "", r.output
        assert r.stderr.strip().splitlines() == [
            f"adamtune: error: no study database at {url}: the database holds none of Optuna's tables; run "
            "`adamtune tune` first, or name the database that holds the studies"], command
    engine = sqlalchemy.create_engine(url)
    assert sqlalchemy.inspect(engine).get_table_names() == []
    engine.dispose()


def test_batch_writes_take_one_transaction_on_postgres(postgres_url, sql_log):
    """ask_many, writes_held, report_many and tell_many write PostgreSQL through their
    one-transaction path (a failure there would roll back and fall back to Optuna's slower writes)."""
    import optuna

    from adamtune.storage import ask_many, open_storage, report_many, tell_many, writes_held

    study = optuna.create_study(storage=open_storage(postgres_url), study_name="pg-writes")
    trials = []
    with sql_log(study) as asking:
        for t in ask_many(study, 3):
            with writes_held(t) as held:
                t.suggest_float("lr", 1e-4, 1e-1, log=True)
                t.suggest_categorical("act", ["relu", "gelu"])
                held.set_user_attrs({"engine": "batched (K=3)"})
            trials.append(t)
    assert sum(q.startswith("INSERT INTO trial_params") for q in asking) == 3  # one multi-row insert each
    with sql_log(study) as reporting:
        report_many([(t, 0.5 + i) for i, t in enumerate(trials)], step=1)
    statements = [q for q in reporting if q not in ("<commit>", "<rollback>")]
    assert len(statements) == 2, statements
    assert "<rollback>" not in asking + reporting
    stored = study.get_trials()
    assert [t.intermediate_values for t in stored] == [{1: 0.5}, {1: 1.5}, {1: 2.5}]
    assert [t.params for t in stored] == [t.params for t in trials] and all(set(t.params) == {"lr", "act"} for t in stored)
    assert all(t.user_attrs == {"engine": "batched (K=3)"} for t in stored)
    with sql_log(study) as telling:
        tell_many(study, [(trials[0], 0.25, None, {"engine": "told"}), (trials[1], None, optuna.trial.TrialState.PRUNED, {}),
                          (trials[2], float("inf"), None, {"state": "diverged"})])
    assert "<rollback>" not in telling and telling.count("<commit>") == 2, telling  # the read, then the writes
    assert any(q.startswith("SELECT") and "FOR UPDATE" in q for q in telling)  # the trials locked as Optuna locks them
    stored = study.get_trials()
    assert [(t.state, t.values) for t in stored] == [(optuna.trial.TrialState.COMPLETE, [0.25]),
                                                     (optuna.trial.TrialState.PRUNED, [1.5]),
                                                     (optuna.trial.TrialState.COMPLETE, [float("inf")])]
    assert [t.user_attrs for t in stored] == [{"engine": "told"}, {"engine": "batched (K=3)"},
                                              {"engine": "batched (K=3)", "state": "diverged"}]


def test_heartbeats_on_postgres_end_a_lost_trial_only(postgres_url):
    """The server's clock carries a time zone; a trial stamped now is kept, one stamped an hour ago is lost."""
    import time

    import optuna
    import sqlalchemy

    from adamtune.heartbeat import Heartbeat, end_lost, lost_trials

    study = optuna.create_study(study_name="pg-heartbeat", storage=postgres_url)
    alive, gone = study.ask(), study.ask()
    with Heartbeat(study, interval_s=0.1) as heartbeat:
        heartbeat.watch([alive, gone])
        time.sleep(1.0)
    assert lost_trials(study) == []
    engine = sqlalchemy.create_engine(postgres_url)
    with engine.begin() as con:
        con.execute(sqlalchemy.text("update trial_heartbeats set heartbeat = heartbeat - interval '1 hour' "
                                    "where trial_id = :id"), {"id": gone._trial_id})
    engine.dispose()
    assert lost_trials(study) == [gone._trial_id]
    assert len(end_lost(study)) == 1 and end_lost(study) == []
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {alive.number: optuna.trial.TrialState.RUNNING, gone.number: optuna.trial.TrialState.FAIL}
    assert study.get_trials()[gone.number].user_attrs["interrupted"] is True


def test_heartbeats_on_postgres_are_utc_whatever_the_session_time_zone(postgres_url):
    """A worker whose session is in Los Angeles stamps its trials; one in Tokyo does not see them
    as lost (the stamps were local times 17 h apart), and both see an hour-old stamp as lost. A
    trial never stamped is lost once it started over 14 h 10 min ago."""
    import time

    import optuna
    import sqlalchemy

    from adamtune.heartbeat import Heartbeat, end_lost, lost_trials

    def in_zone(zone):  # the session's time zone, as PGTZ or ALTER ROLE ... SET timezone would set it
        return f"{postgres_url}?options=-c%20timezone%3D{zone}"

    la = optuna.create_study(study_name="pg-zones", storage=in_zone("America/Los_Angeles"))
    tokyo = optuna.load_study(study_name="pg-zones", storage=in_zone("Asia/Tokyo"))
    alive, gone, never = la.ask(), la.ask(), la.ask()
    engine = sqlalchemy.create_engine(postgres_url)

    def stamps():  # their age by the server's UTC clock, in seconds
        with engine.begin() as con:
            return dict(con.execute(sqlalchemy.text(
                "select trial_id, extract(epoch from (now() at time zone 'UTC') - heartbeat) from trial_heartbeats "
                "where trial_id in (:a, :b)"), {"a": alive._trial_id, "b": gone._trial_id}).all())

    with Heartbeat(la, interval_s=0.1) as heartbeat:
        heartbeat.watch([alive, gone])
        deadline = time.monotonic() + 30
        while len(stamps()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert all(abs(age) < 60 for age in stamps().values())  # stored in UTC
    assert lost_trials(tokyo) == [] and lost_trials(la) == [] and end_lost(tokyo) == []
    with engine.begin() as con:
        con.execute(sqlalchemy.text("update trial_heartbeats set heartbeat = heartbeat - interval '1 hour' "
                                    "where trial_id = :id"), {"id": gone._trial_id})
        con.execute(sqlalchemy.text("update trials set datetime_start = datetime_start - interval '15 hours' "
                                    "where trial_id = :id"), {"id": never._trial_id})
    engine.dispose()
    assert lost_trials(tokyo) == lost_trials(la) == sorted([gone._trial_id, never._trial_id])
    assert len(end_lost(tokyo)) == 2
    assert [t.state for t in la.get_trials()] == [optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL,
                                                  optuna.trial.TrialState.FAIL]


def test_two_workers_continue_a_stopped_study_each_point_once(postgres_url, tiny_ref, tmp_path, adamtune_command,
                                                              monkeypatch):
    """A study stopped by a Ctrl-C (a batch cut short), continued by two workers at once: the
    cut-short trials are rerun, and no point of the Sobol sequence runs twice."""
    import adamtune.study as study_module
    from adamtune.storage import tell_many

    calls = []

    def told(study, finished):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the second batch (trials 2-3) is cut short
        return tell_many(study, finished)

    monkeypatch.setattr(study_module, "tell_many", told)
    with pytest.raises(KeyboardInterrupt):
        adamtune.tune(tiny_ref, storage=postgres_url, study="stopped", budget=8, batch=2, pruner="none")
    monkeypatch.undo()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = [adamtune_command, "tune", "--workload", tiny_ref, "--storage", postgres_url, "--study", "stopped",
            "--budget", "8", "--batch", "2", "--no-report"]
    worker = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        adamtune.tune(storage=postgres_url, study="stopped", notice=lambda m: None)
    except BaseException:
        worker.kill()
        worker.communicate()
        raise
    out, err = worker.communicate(timeout=600)
    assert worker.returncode == 0, err
    trials = adamtune.load("stopped", postgres_url).trials
    done = [t for t in trials if t.state == adamtune.TrialState.COMPLETE]
    assert [t.number for t in trials if t.interrupted][:2] == [2, 3]
    assert {t.retry_of for t in trials if t.retry_of is not None} == {2, 3}
    assert len(done) == 8  # both workers drew on one budget
    assert len({t.params["lr"] for t in done}) == len(done)  # no point ran twice


def test_ray_workers_share_a_study_on_the_server(postgres_url, tiny_ref):
    """What a cluster of several machines needs: every worker reaches the study through the server.
    Each worker runs its share of the budget (2 of 4), so both train, on a real local Ray cluster."""
    from adamtune.cluster import tune_on_ray

    r = tune_on_ray(tiny_ref, workers=2, budget=4, batch=2, pruner="none", storage=postgres_url, study="ray",
                    notice=lambda m: None)
    assert [t.state for t in r.trials] == [adamtune.TrialState.COMPLETE] * 4
    workers = {t.worker for t in r.trials}
    assert len(workers) == 2 and all(w.count(" pid ") == 1 for w in workers)
    assert len({t.params["lr"] for t in r.trials}) == 4
    assert [t.number for t in adamtune.load("ray", postgres_url).trials] == [0, 1, 2, 3]
