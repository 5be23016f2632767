import contextlib
import os
import socket
import sys
import warnings

import optuna
import pytest

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

TESTS = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(TESTS, "tiny_workloads.py")


@pytest.fixture
def storage(tmp_path):
    """A real SQLite file per test."""
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.fixture
def tiny_ref():
    return f"{TINY}:tiny"


@pytest.fixture
def tiny_file():
    return TINY


@pytest.fixture
def user_line(request):
    """``user_line(text, path=the test's file)``: `` (file.py, line N)``, as adamtune names the line of
    the user's code an error came from: the one line of ``path`` holding ``text`` (those that name it,
    calling this or holding it as a string of its own, aside)."""
    def at(text: str, path=None) -> str:
        path = str(path or request.path)
        naming = ("user_line(", f'"{text}"', f"'{text}'")
        with open(path) as f:
            [n] = [i for i, line in enumerate(f, start=1) if text in line and not any(x in line for x in naming)]
        return f" ({os.path.basename(path)}, line {n})"
    return at


@pytest.fixture(scope="session")
def adamtune_command():
    """The installed ``adamtune`` entry point of this environment, for tests that run it as a user does."""
    return os.path.join(os.path.dirname(sys.executable), "adamtune")


@pytest.fixture(scope="session")
def free_port():
    """A function returning a TCP port on the loopback interface that nothing listens on."""
    def pick() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    return pick


@pytest.fixture
def sql_log():
    """``with sql_log(study) as log:`` every SQL statement the study's database runs in the
    block, in order, with ``"<commit>"`` and ``"<rollback>"`` where transactions end."""
    @contextlib.contextmanager
    def record(study):
        import sqlalchemy

        engine = study._storage._backend.engine
        log = []
        handlers = {
            "before_cursor_execute": lambda *a: log.append(a[2]),
            "commit": lambda *a: log.append("<commit>"),
            "rollback": lambda *a: log.append("<rollback>"),
        }
        for event, handler in handlers.items():
            sqlalchemy.event.listen(engine, event, handler)
        try:
            yield log
        finally:
            for event, handler in handlers.items():
                sqlalchemy.event.remove(engine, event, handler)
    return record


@pytest.fixture
def unprivileged_copy(tmp_path):
    """``copy(storage, mode) -> (the copy's path, the command prefix)``: the study's SQLite file
    copied with ``mode`` into a directory of its own, and how to run a command as a user the mode
    binds (root reads and writes any file: the command then runs as nobody, without capabilities)."""
    import shutil
    import tempfile

    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("setpriv is needed to run a command as nobody here")
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    home = tempfile.mkdtemp(prefix="adamtune-perm-")  # not under tmp_path: private to its owner
    os.chmod(home, 0o755)

    def copy(storage, mode):
        path = os.path.join(home, "study.db")
        shutil.copy(storage[len("sqlite:///"):], path)
        os.chmod(path, mode)
        return path, prefix

    yield copy
    shutil.rmtree(home, ignore_errors=True)
