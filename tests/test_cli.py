import contextlib
import json
import os
import re
import subprocess

import pytest
from typer.testing import CliRunner

from adamtune.cli import app, parse_size

runner = CliRunner()


@pytest.fixture
def not_a_db(tmp_path):
    p = tmp_path / "notes.db"
    p.write_text("these are my notes, not a database\n")
    return f"sqlite:///{p}"


@pytest.fixture
def finished(storage, tiny_ref):
    r = runner.invoke(app, ["tune", "--workload", tiny_ref, "--budget", "3", "--storage", storage, "--pruner", "none", "--no-report"])
    assert r.exit_code == 0, r.output
    return storage


BAD_INPUT = [
    (["tune", "--workload", "nope"], "unknown workload 'nope': use a built-in (digits-mlp, digits-cnn, charlm)"),
    (["tune", "--set", "lr=1e-2:1e-5"], "`low < high` must hold for lr, got low=0.01, high=1e-05"),
    (["tune", "--set", "beta1=1.5"], "beta1 must be in [0, 1), got 1.5"),
    (["tune", "--set", "rho=0.9"], "rho is not a hyperparameter of adamw"),
    (["tune", "--budget", "-3"], "budget must be a whole number of trials in 1..1000000, got -3"),
    (["tune", "--budget", "0"], "budget must be a whole number of trials in 1..1000000, got 0"),
    (["tune", "--budget", "99999999999999999999999"], "budget must be a whole number of trials in 1..1000000"),
    *((["tune", "--budget", text], f"--budget must be a whole number, got '{text}'")
      for text in ("1e999", "0x10", "\u0661", "1_000", "many")),
    (["tune", "--seed", "1.5"], "--seed must be a whole number, got '1.5'"),
    (["dashboard", "--port", "abc"], "--port must be a whole number, got 'abc'"),
    (["tune", "--max-memory", "1KB"], "--max-memory of 1 KB is less than one trial of digits-mlp takes (about 845 KB)"),
    (["tune", "--study", "a\nb"], "study name must be printable (no newline, tab or other control character)"),
    (["tune", "--optimizer", "sgd"], "optimizer must be one of adamw, adam, adadelta, got 'sgd'"),
    (["tune", "--task", "rnn"], "task must be one of generic, cnn, transformer, llm, got 'rnn'"),
    (["tune", "--sampler", "grid"], "sampler must be one of quasi-random, tpe, gp, random, got 'grid'"),
    (["tune", "--pruner", "hyperband"], "pruner must be one of asha, median, none, got 'hyperband'"),
    (["tune", "--seed", "-1"], "seed must be an integer in [0, 2**32), got -1"),
    (["tune", "--seed", str(2**32)], f"seed must be an integer in [0, 2**32), got {2**32}"),
    (["tune", "--budget", "3", "--set", "lr=nan"], "--set: lr must be finite, got nan"),
    (["tune", "--budget", "3", "--set", "lr=0"], "--set: lr must be > 0, got 0.0"),
    *((["tune", "--optimizer", optimizer, "--set", "eps=0"], "--set: eps must be > 0, got 0.0: with eps=0 a coordinate "
       "whose gradient has been exactly 0 gets 0/0 = NaN (torch.optim accepts it, but cannot train with it)")
      for optimizer in ("adamw", "adadelta")),
    (["tune", "--set", "lr=1e-4:1e-2", "--set", "lr=3e-3"], "--set lr is given twice"),
    (["tune", "--workload", "json:loads"], "'json:loads' must be a Workload or a function that takes no argument"),
    (["tune", "--study", ""], "study name must be a non-empty string, got ''"),
    (["tune", "--study", "  "], "study name must be a non-empty string, got '  '"),
    (["tune", "--sampler", ""], "sampler must be one of quasi-random, tpe, gp, random, got ''"),
    (["tune", "--pruner", ""], "pruner must be one of asha, median, none, got ''"),
    (["tune", "--storage", ""], "storage must be a URL like sqlite:///adamtune.db"),
    (["tune", "--storage", "sqlite:///:memory:"], "is in memory and would lose every trial when the command ends"),
    (["tune", "--storage", "sqlite:///"], "is in memory and would lose every trial when the command ends"),
    (["show", "--storage", "sqlite:///:memory:"], "is in memory and would lose every trial when the command ends"),
    (["studies", "--storage", ""], "storage must be a URL like sqlite:///adamtune.db"),
    (["dashboard", "--port", "99999"], "--port must be a TCP port in 1..65535, got 99999"),
    (["dashboard", "--port", "-1"], "--port must be a TCP port in 1..65535, got -1"),
    # "$HOST" unset: not every interface, which an empty host binds
    (["dashboard", "--host", ""], "--host must name an address, e.g. 127.0.0.1 (this machine only), or 0.0.0.0 to "
     "serve every interface, got ''"),
    (["tune", "--storage", "adamtune.db"], "storage must be a URL like sqlite:///adamtune.db or postgresql://user@host/db, "
     "got 'adamtune.db'; for a SQLite file at that path write sqlite:////"),  # the absolute path: tested in test_storage
    (["tune", "--storage", "postgres://u:hunter2@h/db"], "storage must be a URL like sqlite:///adamtune.db or "
     "postgresql://user@host/db, got 'postgres://u:***@h/db' (PostgreSQL's scheme is spelt postgresql://)"),
    (["show", "--storage", "mssql://me:p@ss:w0rd@h/db?password=x"], "got 'mssql://me:***@h/db?password=***'"),
    *(([command, "--storage", url], f"got '{said}'") for command in ("tune", "show") for url, said in (
        ("me:s3cret@h/db", "me:***@h/db"), ("postgresql:/me:s3cret@h/db", "postgresql:/me:***@h/db"),
        ("postgresql//me:s3cret@h/db", "postgresql//me:***@h/db"), ("//me:s3cret@h/db", "//me:***@h/db"),
        ("me:s3c/ret@h/db", "me:***@h/db"))),
    *(([command, "--storage", url], "the password in storage URL 'postgresql://tuner:***@127.0.0.1:1/tuning' holds an @, "
       "which ends it there: write it percent-encoded (@ as %40, : as %3A, / as %2F), e.g. postgresql://me:p%40ss@host/db")
      for command in ("tune", "show") for url in ("postgresql://tuner:s3cret@x:w/rd@127.0.0.1:1/tuning",
                                                 "postgresql://tuner:s3cret@x@127.0.0.1:1/tuning")),
    *(([command, "--storage", "postgresql+asyncpg://me:s3cret@h/db"], "storage postgresql+asyncpg names an asyncio "
       "driver (asyncpg), which Optuna's storage cannot use; write postgresql:// instead") for command in ("tune", "show")),
    (["show", "--storage", "postgresql+psycopg2://me@corp:s3cret@127.0.0.1:1/db"],
     "cannot open storage postgresql+psycopg2://me@corp:***@127.0.0.1:1/db: "),  # a user name holding an @
    (["tune", "--storage", "sqlite://x.db"], "a SQLite storage URL needs three slashes"),
    *(([command, "--storage", "sqlite:///x.db?timeout=5"], "a SQLite storage URL names the file alone, with no query "
       "string (adamtune sets the connection's options itself): sqlite:///x.db, got 'sqlite:///x.db?timeout=5'")
      for command in ("tune", "show", "report")),
    (["tune", "--storage", "sqlite:////no/such/dir/x.db"], "cannot create '/no/such/dir/x.db': directory '/no/such/dir' does not exist"),
    (["tune", "--workload", "missing.py:tiny"], "workload file 'missing.py' does not exist"),
    (["tune", "--workload", "no_such_module_xyz:tiny"], "cannot import workload module 'no_such_module_xyz'"),
    (["show", "--storage", "sqlite:///definitely-missing.db"], "no study database at 'definitely-missing.db'"),
    (["tune", "--device", "tpu"], "device must be cpu, cuda or cuda:N, got 'tpu'"),
    *((["tune", "--batch", text], f"batch must be a whole number >= 1 or 'auto', got '{text}'")
      for text in ("0", "1_0", "\uff13", "\u0661", "2.0", "many")),  # ３ (full-width), ١ (Arabic-Indic): as --budget
    (["tune", "--max-memory", "lots"], "--max-memory must be a size like 2GB or 512MB, got 'lots'"),
    *((["tune", "--max-memory", size], f"--max-memory must be a size like 2GB or 512MB, got '{size}'")
      for size in ("nan", "inf", "-5G", "1iB", "1_000", "5Gi", "2PB")),
    *((["tune", "--max-memory", size], f"--max-memory must be a finite size of at least 1 byte, like 2GB or 512MB, got '{size}'")
      for size in ("1e400", "0.5B", "0")),
]


@pytest.mark.parametrize("args, message", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_status_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("adamtune: error: ")
    assert message in lines[0]
    assert "s3cret" not in r.stderr and "hunter2" not in r.stderr  # passwords are masked, with a scheme or not
    assert "Traceback" not in r.output
    assert r.stdout == ""  # not even an empty line
    assert not os.path.exists(tmp_path / "adamtune.db")  # bad input leaves no empty database behind


@pytest.mark.parametrize("scheme, module, install", [
    ("postgresql+psycopg", "psycopg", "pip install 'psycopg[binary]'"), ("postgresql+pg8000", "pg8000", "pip install pg8000"),
    ("mysql+pymysql", "pymysql", "pip install PyMySQL"), ("mysql", "MySQLdb", "pip install mysqlclient")])
@pytest.mark.parametrize("command", ["tune", "show"])
def test_a_driver_not_installed_is_named_with_its_package(command, scheme, module, install, tmp_path, monkeypatch):
    """Not the postgres extra, which installs psycopg2, for a URL naming another driver."""
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, [command, "--storage", f"{scheme}://me:s3cret@127.0.0.1:1/db"])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr == f"adamtune: error: storage {scheme} needs the Python module {module}, which is not installed ({install})\n"


@pytest.mark.parametrize("command", ["tune", "show", "studies"])
def test_a_storage_given_as_a_path_gets_the_url_to_write(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, [command, "--storage", "runs.db"])
    assert r.exit_code == 2
    assert r.stderr == ("adamtune: error: storage must be a URL like sqlite:///adamtune.db or postgresql://user@host/db, "
                        f"got 'runs.db'; for a SQLite file at that path write sqlite:///{tmp_path / 'runs.db'}\n")
    assert os.listdir(tmp_path) == []
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # ~ in --storage=~/x.db is not expanded by the shell
    r = runner.invoke(app, [command, "--storage", "~/runs/x.db"])
    assert r.stderr.endswith(f"; for a SQLite file at that path write sqlite:///{tmp_path / 'home' / 'runs' / 'x.db'}\n")
    r = runner.invoke(app, [command, "--storage", "sqlite:/runs/x.db"])  # a mistyped URL, not a path
    assert r.exit_code == 2 and "for a SQLite file at that path" not in r.stderr


@pytest.mark.parametrize("command", ["tune", "show", "best", "studies"])
def test_corrupt_database_is_refused(command, not_a_db):
    r = runner.invoke(app, [command, "--storage", not_a_db])
    assert r.exit_code == 2
    assert "is not a SQLite database" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # the user's file is untouched
    assert open(not_a_db[len("sqlite:///"):]).read().startswith("these are my notes")


@pytest.mark.parametrize("command", ["tune", "show", "best", "studies", "report", "dashboard"])
def test_another_programs_sqlite_database_is_refused_untouched(command, tmp_path):
    import sqlite3

    path = tmp_path / "app.db"
    with sqlite3.connect(path) as con:
        con.execute("create table users (name text)")
    before = path.read_bytes()
    r = runner.invoke(app, [command, "--storage", f"sqlite:///{path}"])
    assert r.exit_code == 2 and r.stderr.strip() == (
        f"adamtune: error: '{path}' is a SQLite database of something else (tables users), not a study storage; "
        "name another file")
    r = runner.invoke(app, [command, "--storage", f"sqlite:///{path}?x=1"])  # a query string does not get past
    assert r.exit_code == 2 and r.stderr.strip().startswith("adamtune: error: a SQLite storage URL names the file alone")
    assert path.read_bytes() == before


CHANGED_OUTSIDE = [
    ("study_user_attributes", "adamtune", "{bad json", "study 'tiny' has malformed adamtune settings (not JSON: "
     "Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"),
    ("study_user_attributes", "adamtune", '{"workload": null}', "study 'tiny' has malformed adamtune settings "
     "(missing: workload_name, optimizer, task, space, budget, seed, sampler, pruner, metric, direction)"),
    ("trial_user_attributes", "steps", "abc", "study 'tiny', trial 1 has a malformed 'steps' attribute "
     "(a whole number >= 0 must be stored, got 'abc')"),
]


@pytest.mark.parametrize("table, key, value, message", CHANGED_OUTSIDE, ids=["not JSON", "fields missing", "steps"])
def test_a_study_changed_outside_adamtune_is_one_line_and_status_2(finished, tiny_ref, table, key, value, message):
    import sqlite3

    r = runner.invoke(app, ["tune", "--workload", tiny_ref, "--budget", "1", "--storage", finished, "--study", "other",
                            "--no-report"])
    assert r.exit_code == 0, r.output
    with sqlite3.connect(finished[len("sqlite:///"):]) as con:  # as another program would
        where = "trial_id = 2" if table.startswith("trial") else "study_id = 1"
        con.execute(f"update {table} set value_json = ? where key = ? and {where}", (json.dumps(value), key))
    def count_trials():
        with sqlite3.connect(finished[len("sqlite:///"):]) as con:
            return con.execute("select count(*) from trials").fetchone()[0]

    before = count_trials()
    for command in (["show", "--study", "tiny"], ["best", "--study", "tiny"], ["report", "--study", "tiny"],
                    ["tune", "--study", "tiny", "--no-report"], ["tune", "--study", "tiny", "--budget", "9"],
                    ["studies"]):
        r = runner.invoke(app, [*command, "--storage", finished])
        assert r.exit_code == 2 and "Traceback" not in r.output
        assert r.stderr.strip() == f"adamtune: error: {message}: the database was changed outside adamtune"
    assert count_trials() == before  # said before training, not after
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in r.stdout.splitlines() if line.startswith("│ ")]
    assert [(row[0], row[3]) for row in rows] == [("other", "1 complete"), ("tiny", "malformed")]  # others listed still


def test_workload_attribute_errors(tiny_file):
    r = runner.invoke(app, ["tune", "--workload", f"{tiny_file}:not_a_workload"])
    assert r.exit_code == 2 and "must be an adamtune.Workload or return one, got int" in r.stderr
    r = runner.invoke(app, ["tune", "--workload", f"{tiny_file}:nothing_here"])
    assert r.exit_code == 2 and "has no attribute 'nothing_here'" in r.stderr


def test_unknown_study_and_empty_best(finished, storage, tiny_file):
    r = runner.invoke(app, ["show", "--storage", storage, "--study", "nope"])
    assert r.exit_code == 2 and "no study 'nope' in this storage; it holds: tiny" in r.stderr
    runner.invoke(app, ["tune", "--workload", f"{tiny_file}:tiny", "--study", "bad", "--set", "lr=50:100",
                        "--budget", "1", "--storage", storage, "--no-report"])
    r = runner.invoke(app, ["best", "--storage", storage, "--study", "bad"])
    assert r.exit_code == 2 and "has no completed trial yet" in r.stderr
    r = runner.invoke(app, ["show", "--storage", storage])
    assert r.exit_code == 2 and "name a study with --study; this storage holds 2: tiny, bad" in r.stderr


def test_a_storage_with_no_study_says_how_to_make_one(tmp_path):
    import optuna

    path = tmp_path / "fresh db.db"
    optuna.storages.RDBStorage(f"sqlite:///{path}")  # Optuna's tables, no study yet
    for command in (["show"], ["best"], ["report"], ["show", "--study", "x"]):
        r = runner.invoke(app, [*command, "--storage", f"sqlite:///{path}"])
        missing = "no study 'x' in this storage, which holds none yet" if "x" in command else "this storage holds no study yet"
        assert r.exit_code == 2 and r.stderr.strip() == (
            f"adamtune: error: {missing}; `adamtune tune --storage 'sqlite:///{path}'` makes one")


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "seed must be an integer in [0, 2**32), got -1"),
    (["--optimizer", "sgd"], "optimizer must be one of adamw, adam, adadelta, got 'sgd'"),
    (["--task", "rnn"], "task must be one of generic, cnn, transformer, llm, got 'rnn'"),
    (["--seed", "5"], "study 'tiny' was created with seed 0, not 5; use a new --study name to change it"),
])
def test_continuing_a_study_says_what_is_wrong_before_what_differs(finished, args, message):
    r = runner.invoke(app, ["tune", "--storage", finished, "--study", "tiny", *args])
    assert r.exit_code == 2 and r.stderr.strip() == f"adamtune: error: {message}"


def test_tune_prints_plan_progress_table_and_snippet(storage, tiny_ref):
    r = runner.invoke(app, ["tune", "--workload", tiny_ref, "--budget", "12", "--storage", storage,
                            "--set", "max_grad_norm=0.5:5"])
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "tuning lr, weight_decay, beta1, max_grad_norm — budget 12 (set by hand)" in out
    assert "12/12" in out and "Best trials" in out
    assert "optimizer = torch.optim.AdamW([" in out
    assert "torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=" in out


def test_tune_for_llm_trains_and_pastes_beta2_0_95(storage, tiny_ref):
    r = runner.invoke(app, ["tune", "--workload", tiny_ref, "--task", "llm", "--budget", "2", "--storage", storage,
                            "--pruner", "none", "--no-report"])
    assert r.exit_code == 0, r.output
    assert "fixed: beta2=0.95 (the llm preset's; PyTorch's default is 0.999)" in r.stdout
    assert "betas=(0.9, 0.95)" in r.stdout
    assert "fixed: beta2=0.95" in runner.invoke(app, ["show", "--storage", storage]).stdout
    assert "betas=(0.9, 0.95)" in runner.invoke(app, ["best", "--storage", storage]).stdout


def test_a_run_with_nothing_to_run_says_which_trials_train_elsewhere(storage, tiny_ref):
    import optuna

    assert runner.invoke(app, ["tune", "--workload", tiny_ref, "--budget", "2", "--storage", storage, "--pruner",
                               "none", "--no-report"]).exit_code == 0
    r = runner.invoke(app, ["tune", "--storage", storage, "--study", "tiny", "--budget", "2", "--no-report"])
    assert "still in training elsewhere" not in r.stdout  # nothing runs elsewhere
    # another worker's trial in training (asked, a heartbeat just now): this run has nothing to run
    study = optuna.load_study(study_name="tiny", storage=storage)
    study.ask()
    r = runner.invoke(app, ["tune", "--storage", storage, "--study", "tiny", "--budget", "3", "--no-report"])
    assert r.exit_code == 0, r.output
    assert "the study already has its 3 trials" in r.stdout
    assert ("1 of its trials is still in training elsewhere (another worker): what follows is the study so far; "
            "`adamtune show` follows them") in r.stdout


def test_cli_end_to_end_in_real_processes(tmp_path, tiny_ref, adamtune_command):
    """The installed entry point, as a user runs it: a study, then a bad input (one line, status 2).

    Only these two run as processes of their own (a process that trains imports torch, which
    costs tens of seconds on a busy 2-core machine); the commands that read the study afterwards,
    and the bad inputs of `tune` (test_bad_input_is_one_line_and_status_2), run in this process.
    """
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="120")

    def run(*args):
        return subprocess.run([adamtune_command, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)

    r = run("tune", "--workload", tiny_ref, "--budget", "4", "--storage", db, "--pruner", "none")
    assert r.returncode == 0, r.stderr
    assert "tuning lr — budget 4" in r.stdout and "Traceback" not in r.stderr
    # a command that fails before it would import torch: the error path of the entry point, cheaply
    missing = tmp_path / "missing.db"
    r = run("dashboard", "--storage", f"sqlite:///{missing}")
    assert r.returncode == 2 and r.stderr.strip() == (
        f"adamtune: error: no study database at '{missing}': run `adamtune tune` first, or give --storage the URL of "
        "an existing one")

    r = runner.invoke(app, ["show", "--storage", db, "--json"])
    data = json.loads(r.stdout)
    assert data["study"] == "tiny" and len(data["trials"]) == 4
    assert all(t["state"] == "complete" for t in data["trials"])
    norms = data["trials"][0]["grad_norms"]  # the history too, not only its percentiles
    assert len(norms["samples"]) == len(norms["sample_steps"]) == min(200, norms["count"])
    assert norms["sample_steps"][0] == 1 and norms["sample_steps"][-1] == norms["count"] == data["trials"][0]["steps"]
    r = runner.invoke(app, ["best", "--storage", db])
    assert r.exit_code == 0 and r.stdout.count("torch.optim.AdamW(") == 1
    assert r.stdout.startswith(f"# study tiny: best trial {data['best']['number']}, ")
    ns = {}
    import torch
    ns.update(torch=torch, model=torch.nn.Linear(2, 2))
    exec(r.stdout, ns)  # the printed snippet is valid, runnable Python
    r = runner.invoke(app, ["studies", "--storage", db])
    assert "tiny" in r.stdout and "4 complete" in r.stdout
    r = runner.invoke(app, ["tune", "--storage", db, "--study", "tiny", "--budget", "5", "--no-report"])  # continue
    assert r.exit_code == 0 and "5/5" in r.stdout  # the bar is the study's progress to its budget: 4 were there
    r = runner.invoke(app, ["tune", "--set", "beta1=1.5", "--storage", db])
    assert r.exit_code == 2 and r.stderr.strip() == "adamtune: error: --set: beta1 must be in [0, 1), got 1.5"


def test_studies_names_the_optuna_studies_adamtune_did_not_make(storage, tiny_ref):
    import optuna

    for name in ("a", "b"):
        optuna.create_study(study_name=name, storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    r = runner.invoke(app, ["studies", "--storage", storage])
    assert r.exit_code == 0 and r.stderr == ""
    assert r.stdout.strip().splitlines()[-1] == (
        "2 studies not made by adamtune: a, b (adamtune show cannot read them; optuna-dashboard can)")
    r = runner.invoke(app, ["tune", "--workload", tiny_ref, "--budget", "1", "--storage", storage, "--no-report"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["studies", "--storage", storage])
    assert r.exit_code == 0 and "tiny" in r.stdout and "1 complete" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == (
        "2 studies not made by adamtune: a, b (adamtune show cannot read them; optuna-dashboard can)")


def test_sigterm_ends_the_trials_in_training_as_cut_short(tmp_path, tiny_ref, adamtune_command):
    """`kill`, `timeout` or a scheduler's time limit: like Ctrl-C, no trial is left running forever."""
    import signal
    import time

    import adamtune

    db = f"sqlite:///{tmp_path / 'term.db'}"
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="120")
    p = subprocess.Popen([adamtune_command, "tune", "--workload", tiny_ref, "--budget", "400", "--batch", "4", "--storage", db,
                          "--pruner", "none", "--no-report"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 300
    for line in p.stdout:  # the first finished trial: the study is training its next ones now
        if line.lstrip().startswith("trial ") or time.monotonic() > deadline:
            break
    p.send_signal(signal.SIGTERM)
    _, stderr = p.communicate(timeout=300)
    assert p.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "adamtune: terminated (SIGTERM); every finished trial is kept in the storage"
    assert "Traceback" not in stderr
    r = adamtune.load("tiny", db)
    assert 0 < len(r.trials) < 400
    assert not [t.number for t in r.trials if t.state == adamtune.TrialState.RUNNING]
    cut = [t for t in r.trials if t.interrupted]
    assert all(t.state == adamtune.TrialState.FAILED and t.error == "terminated by SIGTERM" for t in cut)
    shown = runner.invoke(app, ["show", "--storage", db]).stdout
    assert "failed: terminated" not in shown  # no error to read: the counts say how many were cut short
    assert (f"{len(cut)} cut short" in shown) == bool(cut)
    # the cut-short trials do not use up the budget: a rerun makes up for them
    kept = len(r.trials) - len(cut)
    again = subprocess.run([adamtune_command, "tune", "--storage", db, "--study", "tiny", "--budget", str(kept + 2),
                            "--no-report"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr
    r = adamtune.load("tiny", db)
    assert len(r.trials) == kept + len(cut) + 2 and r.count(adamtune.TrialState.RUNNING) == 0



@pytest.mark.parametrize("batch, merged", [("4", False), ("1", False), ("4", True)],
                         ids=["batched", "sequential", "batched-2>&1"])
def test_a_closed_output_stops_the_study_like_ctrl_c_and_fails_no_trial(tmp_path, tiny_ref, adamtune_command, batch,
                                                                        merged):
    """`adamtune tune | head`: the trials being trained end cut short (rerun later), never as the
    user's failures (rich's own broken-pipe exit was caught as the trial failing), and exit 141;
    also with `2>&1 | head`, where the notice has no reader (rich's stderr console exited 1)."""
    import time

    import adamtune

    db = f"sqlite:///{tmp_path / 'pipe.db'}"
    p = subprocess.Popen([adamtune_command, "tune", "--workload", tiny_ref, "--budget", "400", "--batch", batch,
                          "--storage", db, "--pruner", "none", "--no-report"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT if merged else subprocess.PIPE, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=tmp_path)
    deadline = time.monotonic() + 300
    for line in p.stdout:  # as `head` does: read up to the first trial, then close
        if line.lstrip().startswith("trial ") or time.monotonic() > deadline:
            break
    p.stdout.close()
    stderr = "" if merged else p.stderr.read()
    p.wait(timeout=300)
    assert p.returncode == 141, stderr
    if not merged:
        assert stderr == ("adamtune: the output was closed (broken pipe); stopped, every finished trial is kept in "
                          "the storage\n")
    r = adamtune.load("tiny", db)
    assert 0 < len(r.trials) < 400
    assert r.count(adamtune.TrialState.RUNNING) == 0
    # the trials shown were stored first; any in training when the output closed are cut short
    failed = [t for t in r.trials if t.state == adamtune.TrialState.FAILED]
    assert all(t.interrupted and t.error == "stopped: the output was closed (broken pipe)" for t in failed)
    assert r.count(adamtune.TrialState.COMPLETE) == len(r.trials) - len(failed)
    head = subprocess.run(f"'{adamtune_command}' show --storage '{db}' | head -1", shell=True, capture_output=True,
                          text=True)
    assert head.returncode == 0 and head.stderr == ""  # a reading command stops quietly


def test_the_note_on_trials_cut_short_comes_after_the_studys_header(tmp_path, tiny_file, adamtune_command):
    """A run stopped mid-trial, run again: its first lines are the study's header, then the note."""
    import signal
    import sqlite3
    import time

    (tmp_path / "slow.py").write_text(
        "import dataclasses, sys\n"
        f"sys.path.insert(0, {os.path.dirname(tiny_file)!r})\n"
        "import tiny_workloads\n"
        "def slow():\n"
        "    return dataclasses.replace(tiny_workloads.tiny(), name='slow', steps=10**6, eval_every=10**5)\n")
    args = [adamtune_command, "tune", "--workload", "slow.py:slow", "--batch", "1", "--budget", "3",
            "--storage", "sqlite:///slow.db", "--no-report"]
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def running():
        if not (tmp_path / "slow.db").exists():
            return 0
        with sqlite3.connect(tmp_path / "slow.db") as c:
            try:
                return c.execute("select count(*) from trials where state = 'RUNNING'").fetchone()[0]
            except sqlite3.OperationalError:  # the tables are being made
                return 0

    first = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 300
        while running() == 0:
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 143
    finally:
        first.kill()
    again = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        lines = []
        for line in again.stdout:
            lines.append(line)
            if line.startswith("note:"):
                break
    finally:
        again.kill()
        again.wait()
    assert lines[0].startswith("study slow ·"), lines
    assert lines[-1].startswith("note: 1 trial cut short earlier: run again first"), lines

@contextlib.contextmanager
def read_only_directory(tmp_path, fill):
    """A directory ``fill(directory)`` filled, then made read-only media: a read-only tmpfs as
    root (root writes through permission bits), else mode 0555 with its files 0444."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(ro)], capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs here to make read-only media")
        try:
            fill(ro)
            subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
            yield ro
        finally:
            subprocess.run(["umount", "--lazy", str(ro)], check=True)  # the test's own connections may linger
    else:
        fill(ro)
        for name in os.listdir(ro):
            os.chmod(ro / name, 0o444)
        os.chmod(ro, 0o555)
        yield ro
        os.chmod(ro, 0o755)


@contextlib.contextmanager
def read_only_study_file(tmp_path, fill):
    """A directory ``fill(directory)`` filled, whose ``study.db`` is then made read-only while the
    directory stays writable: a read-only bind mount of the file as root, else mode 0444."""
    path = tmp_path / "rw" / "study.db"
    path.parent.mkdir()
    fill(path.parent)
    if os.geteuid() == 0:
        if subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode != 0:
            pytest.skip("cannot bind-mount here to make a read-only file")
        try:
            subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
            yield path.parent
        finally:
            subprocess.run(["umount", "--lazy", str(path)], check=True)
    else:
        os.chmod(path, 0o444)
        yield path.parent


def copier(finished):
    """What fills a directory with the finished study's file."""
    import shutil

    return lambda directory: shutil.copy(finished[len("sqlite:///"):], directory / "study.db")


@pytest.fixture
def read_only_copy(finished, tmp_path):
    """The finished study's file on read-only media."""
    with read_only_directory(tmp_path, copier(finished)) as ro:
        yield f"sqlite:///{ro / 'study.db'}"


def test_study_file_is_in_wal_mode_and_whole_after_tune(finished):
    import sqlite3

    path = finished[len("sqlite:///"):]
    # tune() folded the log into the file although this process still lives: the file is whole.
    assert not os.path.exists(path + "-wal") or os.path.getsize(path + "-wal") == 0
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("args", [["--batch", "0"], ["--device", "cuda:99"]])  # refused before the study is opened
def test_bad_input_on_an_existing_study_leaves_its_file_as_it_was(finished, args):
    path = finished[len("sqlite:///"):]
    before = open(path, "rb").read()
    r = runner.invoke(app, ["tune", "--storage", finished, *args])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.output
    # no -wal or -shm file left beside it (checking the file made SQLite create them)
    assert sorted(os.listdir(os.path.dirname(path))) == ["study.db"]
    assert open(path, "rb").read() == before


def test_read_only_study_can_be_read_not_tuned(read_only_copy, storage):
    path = read_only_copy[len("sqlite:///"):]
    with pytest.raises(OSError):  # the media really is read-only
        open(os.path.join(os.path.dirname(path), "probe"), "w")
    expected = runner.invoke(app, ["show", "--storage", storage, "--json"])
    for command in (["show", "--json"], ["best"], ["studies"]):
        r = runner.invoke(app, [*command, "--storage", read_only_copy])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["show", "--json", "--storage", read_only_copy])
    assert json.loads(r.stdout) == json.loads(expected.stdout)
    r = runner.invoke(app, ["tune", "--budget", "1", "--storage", read_only_copy])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs the file and its directory writable" in lines[0], r.stderr


def log_keeper(finished):
    """What fills a directory with the finished study as a worker killed with kill -9 leaves it:
    the ``study.db`` file holding Optuna's tables but no row of them, every row in the
    ``study.db-wal`` log beside it."""
    import shutil
    import sqlite3

    def fill(directory):
        work = directory.parent / "making-the-log"
        work.mkdir()
        shutil.copy(finished[len("sqlite:///"):], work / "study.db")
        con = sqlite3.connect(work / "study.db", isolation_level=None)
        con.execute("PRAGMA wal_autocheckpoint=0")  # what is written below stays in the log
        tables = [name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                  if name not in ("alembic_version", "version_info")]
        con.execute("BEGIN")
        for name in tables:
            con.execute(f"CREATE TEMP TABLE kept_{name} AS SELECT * FROM main.{name}")
            con.execute(f"DELETE FROM main.{name}")
        con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the file: no study
        con.execute("BEGIN")
        for name in tables:
            con.execute(f"INSERT INTO main.{name} SELECT * FROM temp.kept_{name}")
        con.execute("COMMIT")  # the log: the whole study
        for name in ("study.db", "study.db-wal"):  # as they are while the connection is open
            shutil.copy(work / name, directory / name)
        con.close()
        assert os.path.getsize(directory / "study.db-wal") > 0
    return fill


@pytest.mark.parametrize("media", [read_only_directory, read_only_study_file], ids=["directory", "file"])
def test_a_study_still_in_its_log_is_read_from_read_only_media(finished, tmp_path, media):
    """Read as immutable, the file alone held no study ("holds none yet"); the log is read too."""
    expected = runner.invoke(app, ["show", "--storage", finished, "--json"])
    with media(tmp_path, log_keeper(finished)) as directory:
        url = f"sqlite:///{directory / 'study.db'}"
        before = {name: open(directory / name, "rb").read() for name in os.listdir(directory)}
        r = runner.invoke(app, ["show", "--json", "--storage", url])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout) == json.loads(expected.stdout)
        for command in (["best"], ["studies"]):
            r = runner.invoke(app, [*command, "--storage", url])
            assert r.exit_code == 0 and "tiny" in r.stdout, r.output
        # nothing written beside it or to it
        assert {name: open(directory / name, "rb").read() for name in os.listdir(directory)} == before


def test_a_log_that_cannot_be_copied_to_be_read_is_one_line(finished, tmp_path, monkeypatch):
    """Never 'holds none yet' for a study in its log: where no copy can be made, it says so."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))
    with read_only_directory(tmp_path, log_keeper(finished)) as directory:
        url = f"sqlite:///{directory / 'study.db'}"
        for command in ("show", "studies"):
            r = runner.invoke(app, [command, "--storage", url])
            assert r.exit_code == 2 and r.stdout == "", r.output
            assert r.stderr.strip().splitlines() == [
                f"adamtune: error: cannot read storage {url} (read-only): the trials in its write-ahead log "
                f"'{directory / 'study.db-wal'}' could not be read: no copy of it could be made in "
                f"'{tmp_path / 'gone'}': No such file or directory"]


@pytest.fixture
def read_only_file(finished, tmp_path):
    """The finished study's file made read-only in a directory that stays writable."""
    with read_only_study_file(tmp_path, copier(finished)) as directory:
        yield f"sqlite:///{directory / 'study.db'}"


def test_a_read_only_file_is_read_but_not_tuned(read_only_file):
    path = read_only_file[len("sqlite:///"):]
    before = open(path, "rb").read()
    r = runner.invoke(app, ["tune", "--budget", "5", "--storage", read_only_file, "--no-report"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.stderr.strip().splitlines() == [
        f"adamtune: error: cannot write to storage {read_only_file}: a study being tuned needs the file and its "
        "directory writable"]
    r = runner.invoke(app, ["show", "--json", "--storage", read_only_file])
    assert r.exit_code == 0 and len(json.loads(r.stdout)["trials"]) == 3
    assert open(path, "rb").read() == before
    # no -wal or -shm file left beside it, which a reader could not remove (nor, in a shared
    # directory, its owner write through)
    assert os.listdir(os.path.dirname(path)) == ["study.db"]


def test_a_damaged_study_file_is_one_line_that_says_reading_it_failed(finished):
    path = finished[len("sqlite:///"):]
    size = os.path.getsize(path)
    with open(path, "r+b") as f:  # the header and schema pages stay whole: the file opens, its trials do not read
        f.seek(size // 2)
        f.write(b"\xff" * 4096)
    for command in ("show", "studies", "best", "report"):
        r = runner.invoke(app, [command, "--storage", finished])
        assert r.exit_code == 2 and r.stdout == "", (command, r.output)
        # no promise that trials stored before are kept: a command that reads stores nothing
        assert r.stderr.strip().splitlines() == ["adamtune: error: cannot read the study storage: database disk "
                                                 "image is malformed (the database file is damaged)"], command
    r = runner.invoke(app, ["tune", "--storage", finished, "--budget", "4", "--no-report"])
    # damaged before this run: nothing it could keep
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [
        "adamtune: error: the study storage failed: (sqlite3.DatabaseError) database disk image is malformed "
        "(the database file is damaged)"]
    with open(path, "r+b") as f:  # cut short: not even its schema reads
        f.truncate(8192)
    for command in (["show"], ["studies"], ["tune", "--budget", "4", "--no-report"]):
        r = runner.invoke(app, [*command, "--storage", finished])
        assert r.exit_code == 2 and r.stderr.strip().splitlines() == [
            f"adamtune: error: cannot read the study storage {finished}: (sqlite3.DatabaseError) database disk image "
            "is malformed (the database file is damaged)"], (command, r.output)


@pytest.mark.parametrize("command", [["show"], ["studies"], ["best"], ["report"], ["tune", "--budget", "4", "--no-report"]])
def test_a_file_damaged_in_its_first_pages_says_so(finished, command):
    """Damage where Optuna reads first (its version table): the database's own words and the hint,
    not the text of Optuna's wrapper ("An exception is raised during the commit ... max length")."""
    path = finished[len("sqlite:///"):]
    with open(path, "r+b") as f:
        f.seek(3 * 4096)
        f.write(b"\xff" * 4 * 4096)
    r = runner.invoke(app, [*command, "--storage", finished])
    assert r.exit_code == 2 and r.stdout == "", r.output
    assert r.stderr.strip().splitlines() == [
        f"adamtune: error: cannot read the study storage {finished}: (sqlite3.DatabaseError) database disk image "
        "is malformed (the database file is damaged)"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small file system needs root")
def test_a_disk_that_fills_up_mid_study_is_one_line_and_keeps_the_trials(tmp_path, tiny_ref):
    disk = tmp_path / "small"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        db = f"sqlite:///{disk / 'study.db'}"
        r = runner.invoke(app, ["tune", "--workload", tiny_ref, "--budget", "200", "--batch", "4", "--pruner", "none",
                                "--storage", db, "--no-report"])
        assert r.exit_code == 2 and "Traceback" not in r.output
        assert r.stderr.strip().splitlines() == [
            "adamtune: error: the study storage failed: (sqlite3.OperationalError) database or disk is full; "
            "every trial stored before is kept"]
        told = r.stdout.count("  trial ")
        assert told > 0  # the disk filled up after some trials were stored, not while the study was made
        r = runner.invoke(app, ["show", "--json", "--storage", db])
        assert r.exit_code == 0
        assert sum(t["state"] == "complete" for t in json.loads(r.stdout)["trials"]) == told
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=True)


def test_reading_an_empty_file_leaves_it_empty(tmp_path):
    path = tmp_path / "empty.db"
    path.touch()
    for command in ("studies", "show", "best", "report"):
        r = runner.invoke(app, [command, "--storage", f"sqlite:///{path}"])
        assert r.exit_code == 2 and r.stderr.strip() == (
            f"adamtune: error: no study database at '{path}': the file is empty; run `adamtune tune` first")
    assert path.stat().st_size == 0


def test_a_file_that_cannot_be_read_is_one_line(tmp_path):
    import socket

    path = tmp_path / "s.db"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        for command in ("show", "studies", "tune"):
            r = runner.invoke(app, [command, "--storage", f"sqlite:///{path}"])
            assert r.exit_code == 2 and "Traceback" not in r.output
            assert r.stderr.strip() == f"adamtune: error: cannot read '{path}': it is a socket, not a database file"


def test_a_file_the_user_may_not_read_is_one_line(finished, adamtune_command, unprivileged_copy):
    """Mode 000; as root (who reads it anyway) the command runs as nobody, without capabilities."""
    path, prefix = unprivileged_copy(finished, 0)
    r = subprocess.run([*prefix, adamtune_command, "show", "--storage", f"sqlite:///{path}"], capture_output=True,
                       text=True, cwd=os.path.dirname(path), timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == f"adamtune: error: cannot read '{path}': Permission denied"


def test_a_storage_url_ending_in_a_slash_is_refused_alike_by_every_command(finished):
    """sqlite:///x.db/ is no study for the commands that read, so tune may not write into x.db."""
    path = finished[len("sqlite:///"):]
    before = open(path, "rb").read()
    for command in (["show"], ["studies"], ["best"], ["report"], ["tune", "--budget", "5", "--no-report"]):
        r = runner.invoke(app, [*command, "--storage", finished + "/"])
        assert r.exit_code == 2 and r.stdout == "", r.output
        assert r.stderr.strip() == (f"adamtune: error: storage '{path}/' ends with '/', as a directory does; for the "
                                    f"database file write {finished}")
    assert open(path, "rb").read() == before


def test_a_directory_the_user_may_not_enter_is_said_not_taken_for_a_missing_study(finished, adamtune_command):
    """Mode 600 on the study's directory; as root, the command runs without the capabilities that pass it by."""
    import shutil
    import tempfile

    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv is needed to run a command without root's file capabilities here")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    home = tempfile.mkdtemp(prefix="adamtune-perm-")
    locked = os.path.join(home, "locked")
    try:
        os.mkdir(locked)
        path = os.path.join(locked, "x.db")
        shutil.copy(finished[len("sqlite:///"):], path)
        os.chmod(locked, 0o600)  # readable, not searchable: the file in it cannot be reached
        for command in (["show"], ["tune", "--budget", "5", "--no-report"]):
            r = subprocess.run([*prefix, adamtune_command, *command, "--storage", f"sqlite:///{path}"],
                               capture_output=True, text=True, cwd=home, timeout=300)
            assert r.returncode == 2, r.stderr
            assert r.stderr.strip() == (f"adamtune: error: cannot reach '{path}': Permission denied (a directory on "
                                        "its path may not be entered by this user)")
    finally:
        os.chmod(locked, 0o700)
        shutil.rmtree(home, ignore_errors=True)


def test_show_json_is_strict_json_with_null_for_nan_and_inf(storage):
    """Diverged trials' evaluations are NaN: JavaScript's JSON.parse and Go's encoding/json refuse a bare NaN."""
    import adamtune

    def objective(config, trial):
        trial.report(1, 0.5)
        trial.report(2, float("nan") if config.lr > 1e-3 else float("inf"))
        return float("nan")

    adamtune.tune(objective, budget=4, space=["lr=1e-5:1e-1"], pruner="none", storage=storage, study="nan")
    r = runner.invoke(app, ["show", "--storage", storage, "--json"])
    assert r.exit_code == 0, r.output

    def refuse(token):
        raise AssertionError(f"{token} is not JSON")

    data = json.loads(r.stdout, parse_constant=refuse)
    assert {t["state"] for t in data["trials"]} == {"diverged"}
    assert all(t["value"] is None and t["curve"]["value"][-1] is None for t in data["trials"])
    assert {t["curve"]["value"][0] for t in data["trials"]} == {0.5}


@pytest.mark.parametrize("text, size", [("512MB", 512 << 20), ("5G", 5 << 30), ("5GB", 5 << 30), ("5gib", 5 << 30),
                                        ("1.5K", 1536), ("300KB", 300 << 10), ("2048", 2048), ("1B", 1),
                                        (" 2 gb ", 2 << 30), ("1e3MB", 1000 << 20), ("1KiB", 1024)])
def test_memory_sizes_read_as_bytes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("args, line", [
    (["tune", "--bugdet", "3"], "No such option: --bugdet (Possible options: --budget, --set) (see adamtune tune --help)"),
    (["nosuchcmd"], "No such command 'nosuchcmd'. (see adamtune --help)"),
    (["explain", "lr", "eps"], "Got unexpected extra argument(s) (eps) (see adamtune explain --help)"),
    (["show", "--storage"], "Option '--storage' requires an argument. (see adamtune show --help)"),
    (["tune", "--budget", "3", "--set"], "Option '--set' requires an argument. (see adamtune tune --help)"),
    (["--set"], "No such option: --set (see adamtune --help)"),
])
def test_the_entry_point_gives_usage_errors_in_one_line(args, line, adamtune_command, tmp_path):
    r = subprocess.run([adamtune_command, *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == f"adamtune: error: {line}"


def test_the_entry_point_prints_help_and_exits_as_typer_does(adamtune_command, tmp_path):
    r = subprocess.run([adamtune_command, "explain", "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and "Usage: adamtune explain" in r.stdout and r.stderr == ""
    r = subprocess.run([adamtune_command], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "Usage: adamtune" in r.stdout and "tune" in r.stdout and r.stderr == ""


def test_help_names_what_each_option_takes_and_flows_its_paragraphs(adamtune_command, tmp_path):
    env = {**os.environ, "COLUMNS": "100"}
    r = subprocess.run([adamtune_command, "tune", "--help"], capture_output=True, text=True, cwd=tmp_path,
                       timeout=120, env=env)
    assert r.returncode == 0
    rows = {line.split()[1]: line for line in r.stdout.splitlines() if line.startswith("│ --")}
    takes = {name: row.split()[2] for name, row in rows.items()}  # the column after the option's name
    assert takes["--storage"] == "URL" and takes["--batch"] == "auto|K" and takes["--max-memory"] == "SIZE"
    assert takes["--set"] == "NAME=WINDOW" and takes["--seed"] == "N"
    assert takes["--no-report"] == "Do"  # a flag takes no value: its help text follows its name
    assert "[default:" not in r.stdout.replace("\n", " ")  # the help texts say their defaults
    # The second paragraph is reflowed to the width, not broken where the docstring's lines end.
    text = " ".join(line.strip() for line in r.stdout.splitlines()[:12])
    assert "every finished trial is kept, and running it again first runs the trials cut short again" in text
    # Each option's help says what it takes: the names --set knows, each optimizer's budget rule, the
    # default report's name.
    flat = " ".join(r.stdout.replace("│", " ").split())
    for words in ("NAME: lr, eps, weight_decay, beta1 and beta2 (Adam, AdamW), rho (Adadelta), max_grad_norm",
                  "schedule (a value only: constant or cosine)", "Adadelta: lr; 10-24 +rho; 25+ +eps",
                  "cpu, cuda or cuda:N.", "runs/x.db -> runs/x-report-STUDY.html"):
        assert words in flat


def test_tables_never_cut_a_number_at_80_columns(storage, tiny_ref):
    # six tuned hyperparameters: the table is wider than 80 columns (a file, a pipe, a CI log)
    sets = ["beta2=0.9:0.999", "eps=1e-10:1e-6", "beta1=0.8:0.99", "weight_decay=1e-5:0.1", "max_grad_norm=0.5:5"]
    args = ["tune", "--workload", tiny_ref, "--budget", "3", "--storage", storage, "--study", "wide", "--no-report"]
    r = runner.invoke(app, [*args, *(x for s in sets for x in ("--set", s))], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    assert "…" not in r.stdout
    r = runner.invoke(app, ["show", "--storage", storage], env={"COLUMNS": "80"})
    assert r.exit_code == 0 and "…" not in r.stdout
    data = json.loads(runner.invoke(app, ["show", "--storage", storage, "--json"]).stdout)
    for t in data["trials"]:
        for value in t["params"].values():
            assert f"{value:.4g}" in r.stdout  # every number whole
    assert "weight_" in r.stdout and "decay" in r.stdout  # headers break at "_" instead


def test_the_next_study_is_named_so_its_command_runs_as_printed(storage, tiny_ref):
    import shlex

    import adamtune
    from adamtune.analysis import analyze

    base = ["--workload", tiny_ref, "--storage", storage, "--no-report"]
    # a study named s-next with another search space is in the storage already
    assert runner.invoke(app, ["tune", *base, "--study", "s-next", "--budget", "1", "--set", "lr=1:2"]).exit_code == 0
    # nothing learned at these lrs: the next search raises the window
    r = runner.invoke(app, ["tune", *base, "--study", "s", "--budget", "6", "--set", "lr=1e-9:1e-8"])
    line = next(x for x in r.stdout.splitlines() if x.startswith("Next search: "))
    command = shlex.split(line[len("Next search: "):])
    assert command[command.index("--study") + 1] == "s-next-2"
    r = runner.invoke(app, [*command[1:], "--no-report"])  # as printed, less the program's name
    assert r.exit_code == 0, r.output
    # the study it made has that very space: the proposal keeps naming it (run twice, it continues)
    assert analyze(adamtune.load("s", storage), storage).next_space.study == "s-next-2"


def test_a_change_a_finding_gives_runs_as_printed_in_a_new_study_of_the_same_windows(storage, tiny_ref):
    """The audit's loop: "→ test: --set weight_decay=..." under a Next line that continues the study, which
    refuses any --set; a study built from the --set alone got the preset's windows for the rest. Now the
    line is a command of a new study that keeps this study's windows, pruner and seed, the change last
    (lr's narrowed around the best trial's: the weight_decay window is computed at that lr)."""
    import shlex

    import adamtune

    base = ["--storage", storage, "--no-report"]
    # 5 trials, all complete: lr is settled enough for a window computed at the best trial's lr
    r = runner.invoke(app, ["tune", "--workload", tiny_ref, "--budget", "5", "--pruner", "none", "--seed", "3",
                            "--set", "lr=1e-3:1", "--study", "s", *base])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    prefix = "      → test in a new study: "
    (line,) = [x for x in lines if x.startswith(prefix)]  # 40 steps at lr ~0.1: decay needs weight_decay ~0.2
    command = shlex.split(line[len(prefix):])
    assert command[:2] == ["adamtune", "tune"] and command[-2] == "--set" and command[-1].startswith("weight_decay=")
    assert " --pruner none --seed 3 " in line and command[command.index("--study") + 1] == "s-weight_decay"
    assert lines[-1].startswith(f"Next: adamtune tune --storage {storage} --study s --budget 10  (the windows hold")
    r = runner.invoke(app, [*command[1:], "--no-report"])  # as printed, less the program's name
    assert r.exit_code == 0, r.output
    study, tried = adamtune.load("s", storage), adamtune.load("s-weight_decay", storage)
    assert (tried.settings.pruner, tried.settings.seed, tried.settings.budget) == ("none", 3, 5)
    lr, best_lr = tried.settings.space.dimension("lr"), study.best.config["lr"]
    assert 1e-3 <= lr.low < best_lr < lr.high <= 1 and lr.high / lr.low < 1e3 ** 0.5
    assert tried.settings.space.dimension("weight_decay").low > 0.1 and "weight_decay" not in dict(study.settings.space.fixed)
    # printed again, it names that study (run twice, it continues)
    r = runner.invoke(app, ["report", "--study", "s", "--storage", storage, "--out", str(storage[10:]) + ".html"])
    assert r.exit_code == 0 and line in r.stdout.splitlines()


def test_a_study_that_learned_nothing_offers_no_configuration_to_paste(storage, tiny_ref):
    base = ["--storage", storage, "--study", "flat"]
    r = runner.invoke(app, ["tune", "--workload", tiny_ref, "--budget", "6", "--set", "lr=1e-9:1e-8", "--no-report",
                            *base])
    assert r.exit_code == 0, r.output
    (best,) = [x for x in r.stdout.splitlines() if x.startswith("Best: ")]
    assert re.fullmatch(r"Best: trial \d, val_loss = [\d.]+, best by noise, not a recommendation \(nothing learned: no "
                        r"trial moved val_loss by 1% from its first evaluation\): no configuration to paste yet; the "
                        r"next search below says what to run instead", best), best
    assert "Paste:" not in r.stdout and "torch.optim.AdamW" not in r.stdout
    assert "! nothing learned: no trial moved val_loss by 1% from its first evaluation" in r.stdout
    r = runner.invoke(app, ["best", *base])  # asked for, the code still comes, said to be no recommendation
    assert r.exit_code == 0 and r.stdout.splitlines()[1] == (
        "# best by noise, not a recommendation (nothing learned: no trial moved val_loss by 1% from its first "
        "evaluation)")
    assert "torch.optim.AdamW" in r.stdout


def test_brackets_in_names_and_in_the_users_errors_are_printed_as_they_are(tmp_path, tiny_ref):
    """Rich reads ``[...]`` as markup: a study called ``x[/bold]`` crashed `tune`, `show` and
    `studies` (for every study of the storage), and ``[bold]red[/]`` was shown as ``red``."""
    storage = f"sqlite:///{tmp_path / 'b.db'}"
    for name in ("x[/bold]", "[bold]red[/]"):
        r = runner.invoke(app, ["tune", "--workload", tiny_ref, "--study", name, "--budget", "2", "--pruner", "none",
                                "--storage", storage, "--no-report"])
        assert r.exit_code == 0 and r.exception is None, r.output
        assert f"study {name} · workload" in r.output
        r = runner.invoke(app, ["show", "--study", name, "--storage", storage])
        assert r.exit_code == 0 and f"study {name} · workload" in r.output
    r = runner.invoke(app, ["studies", "--storage", storage])
    assert r.exit_code == 0 and "x[/bold]" in r.output and "[bold]red[/]" in r.output
    (tmp_path / "w.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {os.path.dirname(tiny_ref.split(':')[0])!r})\n"
        "import dataclasses, tiny_workloads\n"
        "def model():\n"
        "    raise FileNotFoundError('no vocabulary at [/data/vocab.txt]')\n"
        "def w():\n"
        "    return dataclasses.replace(tiny_workloads.tiny(), name='w', model=model)\n")
    r = runner.invoke(app, ["tune", "--workload", f"{tmp_path / 'w.py'}:w", "--budget", "3", "--storage", storage,
                            "--no-report"])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert "no vocabulary at [/data/vocab.txt]" in r.output


def test_the_help_shows_the_ray_extra_as_it_is_typed():
    r = runner.invoke(app, ["tune", "--help"])
    assert "'.[ray]'" in r.output  # rich took [ray] for markup and printed '.'


def test_studies_of_a_storage_without_a_study_says_so_instead_of_an_empty_table(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.storages.RDBStorage(url)  # Optuna's tables, no study
    r = runner.invoke(app, ["studies", "--storage", url])
    assert r.exit_code == 0
    assert r.stdout.strip() == f"this storage holds no study yet; `adamtune tune --storage {url}` makes one"


# tiny, whose model factory waits (up to 2 minutes) until models of two processes have been
# built: two `adamtune tune` on one study then surely both train.
_TOGETHER = '''\
import dataclasses, os, pathlib, sys, time

sys.path.insert(0, {tests!r})
import tiny_workloads

FOLDER = pathlib.Path({folder!r})


def model():
    (FOLDER / str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(FOLDER.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return tiny_workloads._mlp()


def together():
    return dataclasses.replace(tiny_workloads.tiny(), name="together", model=model)
'''


def test_two_commands_on_one_study_each_show_the_studys_progress(tmp_path, tiny_file, adamtune_command):
    """Each bar counts every finished trial of the study, the other worker's too: it used to count
    only its own and stop short (4/8), as if the study were not done. Trials the other still
    trains when one ends are said, and left out of its count."""
    folder = tmp_path / "started"
    folder.mkdir()
    (tmp_path / "together.py").write_text(_TOGETHER.format(tests=os.path.dirname(tiny_file), folder=str(folder)))
    args = [adamtune_command, "tune", "--workload", "together.py:together", "--batch", "1", "--budget", "8",
            "--pruner", "none", "--storage", "sqlite:///two.db", "--no-report"]
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="120")
    runs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outs
    lines = 0
    for out, _ in outs:
        trained = len(re.findall(r"^  trial +\d+ complete ", out, re.M))
        assert trained >= 1, out  # both trained
        lines += trained
        (bar,) = re.findall(r"^tuning .* (\d+)/(\d+) trials", out, re.M)
        elsewhere = re.search(r"^(\d+) of its trials (?:is|are) still in training elsewhere", out, re.M)
        assert int(bar[1]) == 8 and int(bar[0]) + (int(elsewhere[1]) if elsewhere else 0) == 8, out
    assert lines == 8


def _fails_above(limit):
    def objective(config, trial):
        if config.lr > limit:
            raise RuntimeError(f"loss exploded at lr {config.lr:.3g}")
        trial.report(10, config.lr)
        return config.lr
    return objective


def test_show_says_how_many_more_failed_than_it_lists_and_where_every_traceback_is(storage):
    import adamtune

    adamtune.tune(_fails_above(0.1), budget=12, space=["lr=1e-3:3"], pruner="none", storage=storage, study="fail",
                  max_consecutive_failures=None)
    r = runner.invoke(app, ["show", "--storage", storage, "--study", "fail"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert lines[-5].endswith("5 failed")
    assert [x.split(":")[0] for x in lines[-4:-1]] == ["trial 7 failed", "trial 8 failed", "trial 11 failed"]
    assert lines[-1] == f"... and 2 more failed; every traceback: adamtune show --json --storage {storage} --study fail"
    data = json.loads(runner.invoke(app, ["show", "--storage", storage, "--study", "fail", "--json"]).stdout)
    assert sum("loss exploded" in t.get("error", "") for t in data["trials"]) == 5  # as the line says
    # as many as it lists: no "more", the tracebacks' command all the same
    adamtune.tune(_fails_above(1.0), budget=12, space=["lr=1e-3:3"], pruner="none", storage=storage, study="few",
                  max_consecutive_failures=None)
    lines = runner.invoke(app, ["show", "--storage", storage, "--study", "few"]).stdout.strip().splitlines()
    assert lines[-1] == f"every traceback: adamtune show --json --storage {storage} --study few"
    assert "more failed" not in lines[-1] and lines[-2].startswith("trial ")


def test_the_header_and_help_say_the_transformer_task_is_for_fine_tuning(storage, tiny_ref):
    """A Transformer trained from scratch with --task transformer got fine-tuning lrs (up to 3e-4),
    a near-chance best and "train longer": only the README's table said what the task is for."""
    r = runner.invoke(app, ["tune", "--workload", tiny_ref, "--task", "transformer", "--budget", "1", "--storage",
                            storage, "--no-report"])
    assert r.exit_code == 0, r.output
    assert " · task transformer (fine-tuning) · " in r.stdout.splitlines()[0]
    help_text = " ".join(runner.invoke(app, ["tune", "--help"], env={"COLUMNS": "200"}).stdout.split())
    assert "transformer (fine-tuning a pretrained model: lr up to 3e-4; a Transformer trained from scratch" in help_text


def test_a_failure_of_the_users_code_is_named_by_its_line_when_tuning_stops_and_in_show(storage, tiny_file, user_line):
    """The stop line and show's failures say where the user's code raised, each still one line (80
    columns: a file, a pipe, a CI log)."""
    said = f"RuntimeError: the model broke in training{user_line('raise RuntimeError', tiny_file)}"
    r = runner.invoke(app, ["tune", "--workload", f"{tiny_file}:broken", "--budget", "3", "--storage", storage,
                            "--no-report"], env={"COLUMNS": "80"})
    assert r.exit_code == 2
    assert f"3 trials in a row failed; stopping. Last error: {said} (every traceback: " in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    failed = [line for line in r.stdout.splitlines() if line.startswith("  trial ") and " failed " in line]
    assert len(failed) == 3 and all(line.endswith(f"  {said}") for line in failed), r.stdout  # each trial's own line
    r = runner.invoke(app, ["show", "--storage", storage, "--study", "broken"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().splitlines()[-4:-1] == [f"trial {n} failed: {said}" for n in range(3)]
