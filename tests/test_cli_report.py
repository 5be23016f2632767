"""The report and dashboard commands, and what `tune` prints and writes at the end of a study."""

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from typer.testing import CliRunner

from adamtune.cli import app

runner = CliRunner()
SHORT_DIGITS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "report", "digits_short.py") + ":short_digits"


@pytest.fixture(scope="module", autouse=True)
def dashboard(tmp_path_factory, adamtune_command, free_port):
    """`adamtune dashboard` on a free loopback port, started first so it starts beside the other tests."""
    import optuna

    storage = f"sqlite:///{tmp_path_factory.mktemp('dashboard') / 'd.db'}"
    optuna.create_study(study_name="s", storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    port = free_port()
    proc = subprocess.Popen([adamtune_command, "dashboard", "--storage", storage, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc, port
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_tune_tells_that_the_lr_window_is_too_low_and_writes_the_report(tmp_path):
    storage = f"sqlite:///{tmp_path / 'cli.db'}"
    r = runner.invoke(app, ["tune", "--workload", SHORT_DIGITS, "--set", "lr=1e-6:1e-4", "--budget", "8",
                            "--storage", storage, "--study", "low"])
    assert r.exit_code == 0, r.output
    report = tmp_path / "cli-report-low.html"
    assert "lr: the best trials sit at the upper edge of its window 1e-06..0.0001" in r.stdout
    assert "→ widen: --set lr=1e-06:0.001" in r.stdout
    assert f"Report: {report}" in r.stdout
    page = report.read_text(encoding="utf-8")
    assert "lr: the best trials sit at the upper edge of its window 1e-06..0.0001" in page
    assert "--set lr=1e-06:0.001" in page

    # the study is complete: running it again prints the findings; --no-report writes nothing
    report.unlink()
    r = runner.invoke(app, ["tune", "--storage", storage, "--study", "low", "--no-report"])
    assert r.exit_code == 0, r.output
    assert "upper edge" in r.stdout and "Report:" not in r.stdout and not report.exists()

    out = tmp_path / "mine.html"
    r = runner.invoke(app, ["report", "--storage", storage, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert f"Report: {out}" in r.stdout and "upper edge" in r.stdout and out.read_text().startswith("<!DOCTYPE html>")

    # bad input: one line on stderr, status 2
    for args, message in [
        (["report", "--storage", f"sqlite:///{tmp_path / 'missing.db'}"], "no study database at"),
        (["report", "--storage", storage, "--study", "nope"], "no study 'nope' in this storage; it holds: low"),
        (["report", "--storage", storage, "--out", str(tmp_path / "no" / "r.html")], "cannot write the report to"),
        (["report", "--storage", storage, "--out", str(tmp_path)], "is a directory"),
        (["report", "--storage", storage, "--out", ""], "the report must go to a file, e.g. report.html, got ''"),
        (["report", "--storage", storage, "--out", str(tmp_path / "cli.db")],
         f"the report must not overwrite the study's storage '{tmp_path / 'cli.db'}'"),
    ]:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("adamtune: error: ") and message in lines[0], r.stderr
    assert runner.invoke(app, ["show", "--storage", storage]).exit_code == 0  # the study is still there


def test_a_report_that_cannot_be_written_does_not_fail_a_finished_study(tmp_path, tiny_ref, monkeypatch):
    import adamtune.report.html as html

    def refuse(*args, **kwargs):
        raise html.ReportError("cannot write the report to 'x.html': Permission denied")

    monkeypatch.setattr(html, "write_report", refuse)
    storage = f"sqlite:///{tmp_path / 't.db'}"
    r = runner.invoke(app, ["tune", "--workload", tiny_ref, "--budget", "2", "--storage", storage, "--pruner", "none"])
    assert r.exit_code == 0, r.output
    assert "adamtune: warning: cannot write the report to 'x.html'" in r.stderr
    assert "Findings" in r.stdout


def test_a_long_study_name_gets_a_report_and_a_file_name_too_long_is_one_line(tmp_path, tiny_ref):
    import hashlib

    long = "a" * 300
    storage = f"sqlite:///{tmp_path / 't.db'}"
    r = runner.invoke(app, ["tune", "--workload", tiny_ref, "--budget", "2", "--storage", storage, "--pruner", "none",
                            "--study", long])
    assert r.exit_code == 0 and r.stderr == "", r.output
    # cut short to a name the file system takes, and told apart from other long names by its hash
    report = tmp_path / f"t-report-{'a' * 177}-{hashlib.sha1(long.encode()).hexdigest()[:8]}.html"
    assert report.is_file() and "Findings" in r.stdout
    report.unlink()
    r = runner.invoke(app, ["report", "--storage", storage])
    assert r.exit_code == 0 and report.is_file(), r.output
    r = runner.invoke(app, ["report", "--storage", storage, "--out", str(tmp_path / f"{long}.html")])
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [
        f"adamtune: error: cannot write the report to '{tmp_path / f'{long}.html'}': File name too long"]
    assert runner.invoke(app, ["show", "--json", "--storage", storage]).stdout.count('"state": "complete"') == 2


def test_studies_whose_names_clean_alike_get_reports_of_their_own(tmp_path, tiny_ref):
    storage = f"sqlite:///{tmp_path / 't.db'}"
    for name in ("日本", "中文"):
        r = runner.invoke(app, ["tune", "--workload", tiny_ref, "--budget", "1", "--storage", storage, "--study", name])
        assert r.exit_code == 0, r.output
    reports = sorted(tmp_path.glob("t-report-*.html"))
    assert len(reports) == 2
    assert {name for name in ("日本", "中文") for p in reports if name in p.read_text()} == {"日本", "中文"}


def test_dashboard_bad_input_and_missing_package(tmp_path, monkeypatch):
    r = runner.invoke(app, ["dashboard", "--storage", f"sqlite:///{tmp_path / 'missing.db'}"])
    assert r.exit_code == 2 and "no study database at" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # as if it were not installed
    r = runner.invoke(app, ["dashboard"])
    assert r.exit_code == 2
    assert r.stderr.strip() == ("adamtune: error: the dashboard needs optuna-dashboard: "
                                "pip install -c constraints.txt optuna-dashboard")


def test_dashboard_on_an_address_it_cannot_bind_is_one_line(tmp_path, free_port):
    import optuna
    import socket

    storage = f"sqlite:///{tmp_path / 'd.db'}"
    optuna.create_study(study_name="s", storage=storage)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = runner.invoke(app, ["dashboard", "--storage", storage, "--port", str(port)])
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [
        f"adamtune: error: cannot serve on 127.0.0.1:{port}: Address already in use"]
    r = runner.invoke(app, ["dashboard", "--storage", storage, "--host", "no-such-host.invalid"])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("adamtune: error: cannot serve on no-such-host.invalid:8080: ")


def test_ctrl_c_stops_the_dashboard_with_status_130(tmp_path, adamtune_command, free_port):
    import signal
    import socket

    import optuna

    storage = f"sqlite:///{tmp_path / 'd.db'}"
    optuna.create_study(study_name="s", storage=storage)
    port = free_port()
    # PYTHONFAULTHANDLER: should it ever not stop, SIGABRT makes it print where every thread is.
    # preexec_fn: SIGINT as at a terminal. Where the tests run as a background job (`make test &`),
    # the shell starts them with SIGINT ignored, every child inherits that, and Python honours it.
    proc = subprocess.Popen([adamtune_command, "dashboard", "--storage", storage, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:  # Ctrl-C as a user would: once it serves
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except OSError:
                time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            with open(f"/proc/{proc.pid}/status") as f:  # SIGINT is signal 2: bit 1 of these masks
                masks = [line.strip() for line in f if line.startswith(("SigBlk", "SigIgn", "SigCgt"))]
            proc.send_signal(signal.SIGABRT)
            _, err = proc.communicate(timeout=60)
            pytest.fail(f"the dashboard did not stop on SIGINT within 120 s ({masks}); its threads:\n{err}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "adamtune: interrupted; the dashboard stopped"


def test_dashboard_serves_the_storage_on_loopback(dashboard):
    proc, port = dashboard
    # It was started with this module and starts in seconds on an idle machine; on a busy 2-core
    # one (both test workers training) it has been seen to need more than a minute to answer.
    deadline = time.monotonic() + 300
    status = body = None
    while time.monotonic() < deadline and status is None:
        if proc.poll() is not None:
            pytest.fail(f"the dashboard exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as resp:
                status, body = resp.status, resp.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
    if status is None:
        proc.terminate()
        pytest.fail(f"no answer from the dashboard on port {port} in 300 s; it printed: {proc.communicate()[0]!r}")
    assert status == 200 and b"<html" in body.lower()
