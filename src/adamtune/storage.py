"""Opening an Optuna storage from a URL, with one clear error for every way that can fail;
writing many of a study's records in one transaction, and asking the pruner about many trials
from one read of the study."""

from __future__ import annotations

import contextlib
import copy
import errno
import math
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import optuna

from adamtune.errors import StorageError, first_line

DEFAULT_STORAGE = "sqlite:///adamtune.db"
_URL = re.compile(r"^(sqlite|postgresql|postgresql\+\w+|mysql|mysql\+\w+)://")
SQLITE_MAGIC = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""


def sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:///`` URL (None for other URLs or in-memory SQLite)."""
    if not url.startswith("sqlite:///") or in_memory(url):
        return None
    return url[len("sqlite:///"):]


def in_memory(url: str) -> bool:
    """Whether ``url`` is in-memory SQLite (``sqlite:///:memory:``, ``sqlite:///``): gone with the process."""
    return url.startswith("sqlite:///") and url[len("sqlite:///"):].split("?")[0] in ("", ":memory:")


def open_storage(url: str, *, must_exist: bool = False) -> optuna.storages.BaseStorage:
    """Open ``url`` (``sqlite:///file.db``, ``postgresql://user@host/db``, ``mysql://...``).

    Args:
        must_exist: for read-only commands: a missing SQLite file is an error, not a new study.

    Raises:
        StorageError: malformed URL, missing or non-SQLite file, unreachable server, missing driver.
    """
    check_url(url, must_exist=must_exist)
    _read_schema_scripts_once()
    path = sqlite_path(url)
    if path is not None and os.path.exists(path) and not _writable(path):
        if must_exist:  # read-only media, or a file and directory the user may only read
            return _open_read_only(url, path)
        raise StorageError(f"cannot write to storage {redact(url)}: a study being tuned needs the file "
                           f"and its directory writable")
    engine_kwargs = {"connect_args": {"timeout": 60}} if path is not None else {"pool_pre_ping": True}
    for attempt in range(_ATTEMPTS):
        try:
            if must_exist and path is None:
                _check_study_tables(url, engine_kwargs)
            storage = optuna.storages.RDBStorage(with_installed_driver(url), engine_kwargs=engine_kwargs)
            if path is not None:
                _write_ahead_log(storage)
            return storage
        except StorageError:
            raise
        except ImportError as e:
            raise _missing_driver(url, e) from None
        except Exception as e:  # sqlalchemy's errors: bad URL, refused connection, corrupt file
            # Workers starting together on a fresh server race to create Optuna's tables; the
            # loser's next attempt finds them made.
            if _is_creation_race(e) and attempt + 1 < _ATTEMPTS:
                time.sleep(0.5 * (attempt + 1))
                continue
            reason = cause_line(e)
            if path is not None and ("unable to open database file" in reason or "readonly database" in reason):
                if must_exist:
                    return _open_read_only(url, path)
                reason += " (a study being written needs the file and its directory writable)"
            if damaged(reason):
                raise StorageError(f"cannot read the study storage {redact(url)}: {reason}{DAMAGED}") from None
            raise StorageError(f"cannot open storage {redact(url)}: {reason}") from None
    raise AssertionError("unreachable")


_ATTEMPTS = 4


def _check_study_tables(url: str, engine_kwargs: Mapping[str, Any]) -> None:
    """Refuse a server's database that holds no table of Optuna's, for a command that only reads.

    Opening an ``RDBStorage`` creates Optuna's tables where they are missing: a ``show`` of a
    mistyped or default database (``.../postgres``) would leave them there. SQLite files are
    checked before, in :func:`check_url`.
    """
    import sqlalchemy

    engine = sqlalchemy.create_engine(with_installed_driver(url), **engine_kwargs)
    try:
        made = sqlalchemy.inspect(engine).has_table("studies")
    finally:
        engine.dispose()
    if not made:
        raise StorageError(f"no study database at {redact(url)}: the database holds none of Optuna's tables; "
                           "run `adamtune tune` first, or name the database that holds the studies")


def with_installed_driver(url: str) -> str:
    """``url`` as SQLAlchemy is to get it: a bare ``postgresql://`` names a driver that is installed.

    SQLAlchemy maps a bare ``postgresql://`` to one driver (psycopg 3 from SQLAlchemy 2.1,
    psycopg2 before), whatever is installed; adamtune's ``postgres`` extra installs psycopg2.
    The URL the user wrote is what messages and reports show; only the engine gets this one.
    """
    import importlib.util

    if not url.startswith("postgresql://"):
        return url
    try:
        import sqlalchemy.engine

        default = sqlalchemy.engine.make_url(url).get_dialect().driver
    except Exception:  # noqa: BLE001 - a malformed URL: SQLAlchemy says what is wrong when it opens it
        return url
    for driver in (default, "psycopg", "psycopg2"):
        if driver in ("psycopg", "psycopg2") and importlib.util.find_spec(driver) is not None:
            return url if driver == default else f"postgresql+{driver}://{url[len('postgresql://'):]}"
    return url  # none installed: SQLAlchemy's error names the one it needs


def _read_schema_scripts_once() -> None:
    """Let Optuna read its schema's migration scripts once per process.

    Optuna loads its Alembic migration scripts (about 30 Python files) afresh each time it
    needs the schema's head revision: three times to create a SQLite study, once to open one
    (0.12-0.2 s and 0.05-0.08 s of every ``adamtune`` command on the development VM). They are
    files of the installed Optuna and do not change while the process runs, so the first
    ``ScriptDirectory`` made serves the later ones; where Optuna's internals are not as
    expected, nothing is changed.
    """
    from optuna.storages._rdb import storage as rdb

    manager = getattr(rdb, "_VersionManager", None)
    make = getattr(manager, "_create_alembic_script", None)
    if make is None or getattr(make, "_adamtune_once", False):
        return
    made: list[Any] = []

    def once(self: Any) -> Any:
        if not made:
            made.append(make(self))
        return made[0]

    once._adamtune_once = True  # type: ignore[attr-defined]
    manager._create_alembic_script = once


def _writable(path: str) -> bool:
    """Whether SQLite can write ``path``: the file, and its directory for the ``-wal`` and
    ``-shm`` files beside it (``os.access`` also sees a read-only mount)."""
    return os.access(path, os.W_OK) and os.access(os.path.dirname(os.path.abspath(path)), os.W_OK)


def _open_read_only(url: str, path: str) -> optuna.storages.RDBStorage:
    """Open a study on read-only media (a read-only mount, a directory the user cannot write).

    A study adamtune wrote is in WAL mode, and SQLite reads a WAL database only where it can
    create the ``-shm`` and ``-wal`` files beside it, unless the file is opened as immutable,
    which ignores a ``-wal`` file. A finished study's file holds everything (the log is folded
    in when the last writer closes), and is read as immutable. Where a log sits beside it (a
    worker killed, or one still running), a private copy of the file and its log is read, so
    the trials still in the log are seen: only for reading, never writing.
    """
    try:
        copy, keep = _with_log_folded_in(path, url)
        ro = f"sqlite:///{copy}" if copy is not None else f"sqlite:///{_immutable(path)}"
        storage = optuna.storages.RDBStorage(ro, engine_kwargs={"connect_args": {"timeout": 60}})
    except StorageError:
        raise
    except Exception as e:
        reason = cause_line(e)
        raise StorageError(f"cannot open storage {redact(url)} (read-only): {reason}"
                           f"{DAMAGED if damaged(reason) else ''}") from None
    storage._adamtune_copy = keep  # the copy lives as long as the storage reading it
    return storage


def _immutable(path: str) -> str:
    """The URI that reads the SQLite file ``path`` as immutable: no ``-wal`` or ``-shm`` file
    made beside it, and a ``-wal`` file there ignored."""
    return f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro&immutable=1&uri=true"


def _has_log(path: str) -> bool:
    """Whether a non-empty ``-wal`` file sits beside the SQLite file ``path``."""
    try:
        return os.path.getsize(path + "-wal") > 0
    except OSError:
        return False


def _with_log_folded_in(path: str, url: str) -> tuple[str | None, Any]:
    """A private copy of ``path`` and of the non-empty ``-wal`` file beside it, taken while
    neither changed, as ``(the copy's path, what keeps it: it is removed when that is
    collected)``; ``(None, None)`` where there is no such log.

    Raises:
        StorageError: the copy could not be made, or a writer changed the files each time.
    """
    import shutil
    import tempfile

    log = path + "-wal"

    def state() -> tuple[tuple[int, int], ...]:
        return tuple((st.st_size, st.st_mtime_ns) for st in (os.stat(path), os.stat(log)))

    if not _has_log(path):
        return None, None
    failed = (f"cannot read storage {redact(url)} (read-only): the trials in its write-ahead log {log!r} could not "
              "be read")
    try:
        keep = tempfile.TemporaryDirectory(prefix="adamtune-read-")
    except OSError as e:
        raise StorageError(f"{failed}: no copy of it could be made in {tempfile.gettempdir()!r}: "
                           f"{e.strerror or e}") from None
    copy = os.path.join(keep.name, "study.db")
    try:
        for _ in range(_COPY_ATTEMPTS):
            before = state()
            shutil.copyfile(path, copy)
            shutil.copyfile(log, copy + "-wal")
            if state() == before:  # no writer between: the file and its log agree
                return copy, keep
            if not _has_log(path):  # the last writer folded it in and closed
                return None, None
            time.sleep(0.2)
    except FileNotFoundError:  # the log went meanwhile: folded in
        return None, None
    except OSError as e:  # no room to copy it, the log unreadable
        raise StorageError(f"{failed}: {e.strerror or e}") from None
    raise StorageError(f"{failed}: a worker kept writing it; try again")


_COPY_ATTEMPTS = 10


def _write_ahead_log(storage: optuna.storages.RDBStorage) -> None:
    """Put a SQLite study in write-ahead-log mode with ``synchronous=NORMAL``.

    Optuna commits every reported value on its own; in SQLite's default mode each commit
    waits for two fsyncs, which made storage as slow as training the batched members
    (16 trials x 16 reports: 7-10 s, against 2.7-3.1 s in WAL mode, on the development VM).
    In WAL mode a crash of the program loses nothing committed; a power cut or OS crash can
    lose the last commits but never corrupts the file. Workers on one machine share the file
    as before (readers no longer block the writer); for machines sharing a study over a
    network use PostgreSQL, as WAL needs shared memory on one host.
    """
    import sqlalchemy

    def pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # connections opened while Optuna made its tables reconnect with them


def sql_backend(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    """The SQL storage under ``study`` (Optuna wraps an RDBStorage in _CachedStorage), or None:
    another kind of storage, or an in-memory SQLite one (no other worker sees it, each thread
    would see a database of its own, and closing its connections would drop it)."""
    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    if not isinstance(backend, optuna.storages.RDBStorage) or not hasattr(backend, "scoped_session"):
        return None
    url = backend.engine.url
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return None
    return backend


def settle(storage: optuna.storages.BaseStorage) -> None:
    """Fold a SQLite study's write-ahead log into the file and close its idle connections.

    Afterwards the ``.db`` file alone holds every trial, ready to copy, archive or read from
    read-only media, even while this process lives on (a notebook); the next use reconnects.
    The checkpoint never waits: while another connection reads an older snapshot or writes (a
    worker still training, an open ``sqlite3`` shell), SQLite's busy handler would hold it for
    the storage's whole timeout, and block every writer meanwhile (a Ctrl-C of ``--workers``
    hung a minute, its other worker unable to end its trials). With no busy timeout it folds
    in what it can at once and leaves the rest to SQLite's next checkpoint.
    """
    if not isinstance(storage, optuna.storages.RDBStorage) or storage.engine.dialect.name != "sqlite":
        return
    import sqlalchemy

    try:
        with storage.engine.connect() as con:
            con.exec_driver_sql("PRAGMA busy_timeout=0")  # this connection only; it is closed below
            con.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlalchemy.exc.SQLAlchemyError:
        pass
    storage.engine.dispose()


def report_many(reports: Sequence[tuple[optuna.trial.Trial, float]], step: int) -> list[int]:
    """``trial.report(value, step)`` for every pair, in one transaction where the storage allows.

    A batch of K members reports K values at each evaluation; one commit each made those
    commits cost as much as the members' training on a laptop with SQLite (256 commits for a
    16-trial study of digits-mlp), and Optuna's own write costs two queries and an insert per
    value. On Optuna's RDBStorage the K values go in one transaction of two statements: one
    read of the trials' states (a finished trial is refused, as Optuna refuses it) and one
    multi-row insert. Elsewhere, and if that write fails for any reason, each trial reports on
    its own, so no value is lost to another trial's error (the first error is raised after
    the others are written). A step a trial already reported is ignored with Optuna's warning,
    as ``trial.report`` does.

    Returns the numbers of the trials not reported to because they were already finished:
    another worker ended them (as lost, when this worker's heartbeat had stopped for too long).
    """
    pairs = [(t, float(v)) for t, v in reports]
    if any(hasattr(t, "_cached_frozen_trial") and step in t._cached_frozen_trial.intermediate_values for t, _ in pairs):
        return _report_one_by_one(pairs, step)
    finished: set[int] = set()

    def write(backend: optuna.storages.RDBStorage, session: Any) -> None:
        import sqlalchemy
        from optuna.storages._rdb import models

        value_model = models.TrialIntermediateValueModel
        ids = [t._trial_id for t, _ in pairs]
        finished.clear()
        _updatable_studies(backend, session, ids, finished)
        rows = []
        for trial_id, (_, value) in zip(ids, pairs, strict=True):
            if trial_id in finished:
                continue
            stored, kind = value_model.intermediate_value_to_stored_repr(value)
            rows.append({"trial_id": trial_id, "step": step, "intermediate_value": stored,
                         "intermediate_value_type": kind})
        if rows:
            session.execute(sqlalchemy.insert(value_model.__table__), rows)  # Core: one executemany

    if _write_together([t for t, _ in pairs], write):
        for trial, value in pairs:
            if trial._trial_id not in finished:
                trial._cached_frozen_trial.intermediate_values[step] = value
        return [t.number for t, _ in pairs if t._trial_id in finished]
    return _report_one_by_one(pairs, step)


def _report_one_by_one(pairs: Sequence[tuple[optuna.trial.Trial, float]], step: int) -> list[int]:
    gone: list[int] = []

    def report(pair: tuple[optuna.trial.Trial, float]) -> None:
        try:
            pair[0].report(pair[1], step)
        except optuna.exceptions.UpdateFinishedTrialError:
            gone.append(pair[0].number)

    error = _first_error(pairs, report)
    if error is not None:
        raise error
    return gone


def _first_error(items: Iterable[Any], act: Callable[[Any], None]) -> Exception | None:
    """``act(item)`` for every item, whatever the others raised (one trial's error must not
    cost another trial its write); the first error, or None."""
    first = None
    for item in items:
        try:
            act(item)
        except Exception as e:  # noqa: BLE001 - kept, and raised by the caller after the rest
            first = first or e
    return first


def set_user_attrs(trial: optuna.trial.Trial, attrs: Mapping[str, Any]) -> None:
    """``trial.set_user_attr(key, value)`` for every item, in one transaction where the storage allows."""
    items = [(trial._trial_id, key, value) for key, value in attrs.items()]
    if _write_attrs_together([trial], "TrialUserAttributeModel", items):
        trial._cached_frozen_trial.user_attrs.update(attrs)
        return
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


Told = tuple[optuna.trial.Trial, "float | None", "optuna.trial.TrialState | None", Mapping[str, Any]]
"""``(trial, value, state, user attributes)``: what :func:`tell_many` tells of one trial."""


def tell_many(study: optuna.Study, told: Sequence[Told]) -> list[int]:
    """For every ``(trial, value, state, attrs)``: ``set_user_attrs(trial, attrs)``, then
    ``study.tell(trial, value, state=state)``, with the same states, values and sampler calls.

    ``study.tell`` reads the trial back from storage twice (once to check it, once to return
    it), each read five queries for a running trial, and commits its state and values on
    their own after the attributes' commit: a batch of 16 members finishing together took 32
    reads and 32 commits, more time than asking for them. On Optuna's RDBStorage the trials
    are read once (the study's unfinished trials, as ``study.get_trials()`` reads them), the
    sampler's ``after_trial`` is called for each in turn, and every attribute, state and value
    is written in one transaction. Elsewhere each trial is told through Optuna's own path. If
    that transaction fails, each trial's writes go through the storage's public calls, so no
    trial is left running because another failed; the first error is raised after the others
    are written, as is an error of the sampler's ``after_trial`` (as with ``study.tell``, the
    trial is stored all the same). A multi-objective study is told through Optuna's own path.

    Returns the numbers of the trials not told because they were already finished: another
    worker ended them (as lost, when this worker's heartbeat had stopped for too long).
    """
    items = list(told)
    gone: list[int] = []
    if not items:
        return gone
    trials = [t for t, _, _, _ in items]
    filter_study = getattr(optuna.pruners, "_filter_study", None)
    if (filter_study is None or not hasattr(getattr(study, "_thread_local", None), "cached_all_trials")
            or len(study.directions) != 1 or any(t.study is not study for t in trials)
            or _shared_backend(trials) is None):
        def tell_one(item: Told) -> None:
            trial, value, state, attrs = item
            try:
                if study._storage.get_trial(trial._trial_id).state.is_finished():
                    raise optuna.exceptions.UpdateFinishedTrialError(f"trial {trial.number} is finished")
                if attrs:
                    set_user_attrs(trial, attrs)
                study.tell(trial, value, state=state)
            except optuna.exceptions.UpdateFinishedTrialError:  # finished by another worker meanwhile
                gone.append(trial.number)

        first = _first_error(items, tell_one)
        if first is not None:
            raise first
        return gone
    study._thread_local.cached_all_trials = None  # as study.tell: samplers see the study anew
    current = {t._trial_id: t for t in study.get_trials(deepcopy=False)}
    writes: list[tuple[int, optuna.trial.TrialState, list[float] | None, Mapping[str, Any]]] = []
    error: Exception | None = None
    for trial, value, state, attrs in items:
        frozen = copy.deepcopy(current.get(trial._trial_id))
        if frozen is not None and frozen.state.is_finished():
            gone.append(trial.number)
            continue
        try:
            if frozen is None or frozen.state != optuna.trial.TrialState.RUNNING:
                raise ValueError(f"Cannot tell a {frozen.state.name if frozen else 'missing'} trial.")
            frozen.user_attrs.update(attrs)  # written before the tell, as set_user_attrs would
            final_state, values = _state_and_values(study, frozen, value, state)
        except Exception as e:  # this trial cannot be told; the others are
            error = error or e
            continue
        try:
            study.sampler.after_trial(filter_study(study, frozen), frozen, final_state, values)
        except Exception as e:  # study.tell stores the trial all the same, then raises
            error = error or e
        writes.append((trial._trial_id, final_state, values, attrs))

    finished: set[int] = set()  # by another worker, between the read above and the write

    def write(backend: optuna.storages.RDBStorage, session: Any) -> None:
        finished.clear()
        _write_states(backend, session, writes, finished)

    def write_one(w: tuple[int, optuna.trial.TrialState, list[float] | None, Mapping[str, Any]]) -> None:
        trial_id, state, values, attrs = w
        try:
            for key, v in attrs.items():
                study._storage.set_trial_user_attr(trial_id, key, v)
            study._storage.set_trial_state_values(trial_id, state, values)
        except optuna.exceptions.UpdateFinishedTrialError:
            finished.add(trial_id)

    if writes and not _write_together(trials, write):
        finished.clear()
        error = error or _first_error(writes, write_one)
    by_id = {t._trial_id: t for t in trials}
    gone.extend(by_id[trial_id].number for trial_id in sorted(finished))
    for trial_id, _, _, attrs in writes:
        if trial_id not in finished:
            by_id[trial_id]._cached_frozen_trial.user_attrs.update(attrs)
    if error is not None:
        raise error
    return gone


def _state_and_values(study: optuna.Study, frozen: optuna.trial.FrozenTrial, value: float | None,
                      state: optuna.trial.TrialState | None) -> tuple[optuna.trial.TrialState, list[float] | None]:
    """The state and values ``study.tell(trial, value, state=state)`` stores (Optuna's rules):
    COMPLETE needs a number; PRUNED takes the last reported value; no state means COMPLETE,
    or FAIL with Optuna's warning when the value is not a number."""
    import warnings

    S = optuna.trial.TrialState

    def unusable(v: Any) -> str | None:
        try:
            f = float(v)
        except (TypeError, ValueError):
            return f"The value {v!r} could not be cast to float"
        return f"The value {f} is not acceptable" if math.isnan(f) else None

    if state == S.COMPLETE:
        if value is None:
            raise ValueError("No values were told. Values are required when state is TrialState.COMPLETE.")
        if (why := unusable(value)) is not None:
            raise ValueError(why)
        return state, [float(value)]
    if state in (S.PRUNED, S.FAIL):
        if value is not None:
            raise ValueError("Values were told. Values cannot be specified when state is "
                             "TrialState.PRUNED or TrialState.FAIL.")
        last = frozen.last_step
        if state == S.PRUNED and last is not None and unusable(frozen.intermediate_values[last]) is None:
            return state, [float(frozen.intermediate_values[last])]
        return state, None
    if state is not None:
        raise ValueError(f"Cannot tell with state {state}.")
    why = "The value None could not be cast to float." if value is None else unusable(value)
    if why is None:
        return S.COMPLETE, [float(value)]
    warnings.warn(why, UserWarning, stacklevel=4)
    return S.FAIL, None


def fail_if_running(backend: optuna.storages.RDBStorage, trial_ids: Sequence[int], attrs: Mapping[str, Any]) -> list[int]:
    """End as failed, with the user attributes ``attrs``, those of ``trial_ids`` still running,
    in one transaction: a trial another worker finishes meanwhile is left exactly as it is
    (never finished with these attributes). Returns the ids ended."""
    finished: set[int] = set()
    with one_transaction(backend) as session:
        _write_states(backend, session, [(tid, optuna.trial.TrialState.FAIL, None, attrs) for tid in trial_ids], finished)
    return [tid for tid in trial_ids if tid not in finished]


def _write_states(backend: optuna.storages.RDBStorage, session: Any,
                  writes: Sequence[tuple[int, optuna.trial.TrialState, list[float] | None, Mapping[str, Any]]],
                  finished: set[int]) -> None:
    """Optuna's ``set_trial_user_attr`` and ``set_trial_state_values`` for every trial, in
    ``session``: one read of the trials' states (a trial finished meanwhile goes into
    ``finished`` and is left as it is), the attributes (:func:`_upsert_attrs`), one
    replacement of the values and one update of the states."""
    import datetime

    import sqlalchemy
    from optuna.storages._rdb import models

    ids = [trial_id for trial_id, _, _, _ in writes]
    _updatable_studies(backend, session, ids, finished)
    writes = [w for w in writes if w[0] not in finished]
    if not writes:
        return
    _upsert_attrs(session, "TrialUserAttributeModel",
                  [(trial_id, key, v) for trial_id, _, _, attrs in writes for key, v in attrs.items()])
    value_model, trial_table = models.TrialValueModel, models.TrialModel.__table__
    valued = [(trial_id, values) for trial_id, _, values, _ in writes if values is not None]
    if valued:
        session.execute(sqlalchemy.delete(value_model.__table__).where(
            value_model.__table__.c.trial_id.in_([trial_id for trial_id, _ in valued])))
        rows = []
        for trial_id, values in valued:
            for objective, v in enumerate(values):
                stored, kind = value_model.value_to_stored_repr(v)
                rows.append({"trial_id": trial_id, "objective": objective, "value": stored, "value_type": kind})
        session.execute(sqlalchemy.insert(value_model.__table__), rows)
    now = datetime.datetime.now()
    session.execute(
        sqlalchemy.update(trial_table).where(trial_table.c.trial_id == sqlalchemy.bindparam("b_trial_id"))
        .values(state=sqlalchemy.bindparam("b_state"), datetime_complete=sqlalchemy.bindparam("b_complete")),
        [{"b_trial_id": trial_id, "b_state": state, "b_complete": now} for trial_id, state, _, _ in writes],
    )


def ask_many(study: optuna.Study, n: int) -> Iterator[optuna.trial.Trial]:
    """``n`` new trials, as ``n`` calls of ``study.ask()`` give them, each made when taken.

    ``study.ask()`` first looks for enqueued (waiting) trials, and that look re-reads every
    unfinished trial of the study from storage: asking for a batch of K trials one by one
    read the growing batch K times (for a fresh SQLite study, every trial each time). Here the
    study is looked at once: its waiting trials are taken through ``study.ask()`` as before,
    and the rest are created as ``study.ask()`` creates a trial when none waits, without
    reading back the row just written (:func:`_new_trial`).
    """
    waiting = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
    direct = hasattr(study, "_study_id") and hasattr(getattr(study, "_thread_local", None), "cached_all_trials")
    for i in range(n):
        if i < waiting or not direct:
            yield study.ask()
            continue
        study._thread_local.cached_all_trials = None  # what ask() does: samplers see the study anew
        yield _new_trial(study)


def _new_trial(study: optuna.Study) -> optuna.trial.Trial:
    """A new trial of ``study``, as ``study.ask()`` makes one when no trial waits.

    Optuna's Trial reads its new row back from the database (a query joining six tables, a
    third of the time of making the trial in SQLite), though the storage's cache already
    holds it as written. The Trial is made from that copy where the cache holds one as
    expected, and made by Optuna as usual otherwise.
    """
    storage = study._storage
    trial_id = storage.create_new_trial(study._study_id)
    frozen = _cached_new_trial(storage, trial_id)
    if frozen is None:
        return optuna.trial.Trial(study, trial_id)
    study._storage = _KnownTrial(storage, frozen)
    try:
        trial = optuna.trial.Trial(study, trial_id)  # Optuna's own set-up, the sampler's before_trial too
    finally:
        study._storage = storage
    trial.storage = storage
    return trial


def _cached_new_trial(storage: Any, trial_id: int) -> optuna.trial.FrozenTrial | None:
    """A copy of the trial ``create_new_trial`` just put into Optuna's storage cache, or
    None where that cache is not there or not as expected."""
    try:
        study_id, number = storage._trial_id_to_study_id_and_number[trial_id]
        frozen = storage._studies[study_id].trials[number]
    except (AttributeError, KeyError, IndexError, TypeError):
        return None
    fresh = (isinstance(frozen, optuna.trial.FrozenTrial) and frozen._trial_id == trial_id and frozen.number == number
             and frozen.state == optuna.trial.TrialState.RUNNING and not frozen.params and not frozen.system_attrs)
    return copy.deepcopy(frozen) if fresh else None


class _KnownTrial:
    """A storage that answers ``get_trial`` for one trial from a copy already in hand."""

    def __init__(self, storage: optuna.storages.BaseStorage, frozen: optuna.trial.FrozenTrial) -> None:
        self._storage, self._frozen = storage, frozen

    def get_trial(self, trial_id: int) -> optuna.trial.FrozenTrial:
        return self._frozen if trial_id == self._frozen._trial_id else self._storage.get_trial(trial_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


class HeldWrites:
    """A trial's storage, holding back its parameter writes; see :func:`writes_held`."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_id: int) -> None:
        self._storage, self._trial_id = storage, trial_id
        self.params: list[tuple[str, float, Any]] = []
        self.attrs: dict[str, Any] = {}

    def set_trial_param(self, trial_id: int, name: str, value: float, distribution: Any) -> None:
        if trial_id != self._trial_id:  # not the trial held back: written at once
            self._storage.set_trial_param(trial_id, name, value, distribution)
            return
        self.params.append((name, value, distribution))

    def set_user_attrs(self, attrs: Mapping[str, Any]) -> None:
        """User attributes to write with the parameters."""
        self.attrs.update(attrs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    def write_one_by_one(self, trial: optuna.trial.Trial) -> None:
        for i, (name, value, distribution) in enumerate(self.params):
            try:
                self._storage.set_trial_param(self._trial_id, name, value, distribution)
            except BaseException:
                # As when Optuna's own write fails: the trial does not hold what was not stored.
                for unstored, _, _ in self.params[i:]:
                    trial._cached_frozen_trial.params.pop(unstored, None)
                    trial._cached_frozen_trial.distributions.pop(unstored, None)
                raise
        for key, value in self.attrs.items():
            trial.set_user_attr(key, value)


@contextlib.contextmanager
def writes_held(trial: optuna.trial.Trial) -> Iterator[HeldWrites]:
    """The parameters suggested in the block, and the user attributes given to the yielded
    object, written in one transaction at its end.

    Optuna writes each suggested parameter in a commit of its own after three queries; a trial
    of three tuned hyperparameters and adamtune's two attributes took 4 commits and 16
    statements. On Optuna's RDBStorage they now take one commit: one read of the trial's
    state, one of the study's earlier distributions of these parameters (an incompatible one
    is refused as Optuna refuses it), one multi-row insert, and the attributes. Elsewhere, or
    if that write fails, each is written through Optuna's public path, which says what is
    wrong. If the block raises, the parameters suggested so far are written one by one (as
    they would have been) and the error goes on.
    """
    with writes_kept(trial) as held:
        yield held
    error = write_kept([(trial, held)])[0]
    if error is not None:
        raise error


@contextlib.contextmanager
def writes_kept(trial: optuna.trial.Trial) -> Iterator[HeldWrites]:
    """As :func:`writes_held`, but the writes are kept for :func:`write_kept` to make, with
    other trials' writes, after the block. If the block raises, the parameters suggested so
    far are written one by one (as they would have been) and the error goes on."""
    held = HeldWrites(trial.storage, trial._trial_id)
    trial.storage = held
    try:
        yield held
    except BaseException:
        trial.storage = held._storage
        with contextlib.suppress(Exception):
            held.attrs = {}
            held.write_one_by_one(trial)
        raise
    trial.storage = held._storage


def write_kept(kept: Sequence[tuple[optuna.trial.Trial, HeldWrites]]) -> list[Exception | None]:
    """Write what :func:`writes_kept` kept for each trial: all trials in one transaction where
    the storage allows (a batch of 16 trials: one commit instead of 16), otherwise trial by
    trial through Optuna's public path. Returns each trial's error, None where its writes are
    stored; one trial's error does not keep the others' writes out."""
    todo = [(trial, held) for trial, held in kept if held.params or held.attrs]
    items = [(trial._trial_id, key, value) for trial, held in todo for key, value in held.attrs.items()]

    def write(backend: optuna.storages.RDBStorage, session: Any) -> None:
        for trial, held in todo:
            _write_params(backend, session, trial._trial_id, held.params)
        _upsert_attrs(session, "TrialUserAttributeModel", items)  # the trials checked (and locked) just above

    if not todo or _write_together([trial for trial, _ in todo], write):
        for trial, held in todo:
            trial._cached_frozen_trial.user_attrs.update(held.attrs)
        return [None] * len(kept)
    errors: list[Exception | None] = []
    for trial, held in kept:
        try:
            held.write_one_by_one(trial)
        except Exception as e:  # noqa: BLE001 - the caller ends this trial; the others are written
            errors.append(e)
        else:
            errors.append(None)
    return errors


def _updatable_studies(backend: optuna.storages.RDBStorage, session: Any, trial_ids: Sequence[int],
                       finished: set[int] | None = None) -> dict[int, int]:
    """The study of each trial, from one read; raises as Optuna does for a trial that is
    missing or already finished (a finished one goes into ``finished`` instead, if given).
    The rows are locked until the transaction ends (``FOR UPDATE``, as Optuna reads a trial
    it finishes; SQLite locks the whole file anyway), so no other process finishes a trial
    between this check and the writes after it."""
    import sqlalchemy
    from optuna.storages._rdb import models

    t = models.TrialModel
    found = {row.trial_id: row for row in session.execute(
        sqlalchemy.select(t.trial_id, t.state, t.study_id).where(t.trial_id.in_(list(trial_ids))).with_for_update()
    )}
    for trial_id in trial_ids:
        if trial_id not in found:
            raise KeyError(f"trial {trial_id} not found")
        if finished is not None and found[trial_id].state.is_finished():
            finished.add(trial_id)
            continue
        backend.check_trial_is_updatable(trial_id, found[trial_id].state)
    return {trial_id: row.study_id for trial_id, row in found.items()}


def _write_params(backend: optuna.storages.RDBStorage, session: Any, trial_id: int,
                  params: Sequence[tuple[str, float, Any]]) -> None:
    """Optuna's ``set_trial_param`` for every ``(name, internal value, distribution)``, in
    ``session``, with one read of the trial, one of the study's earlier distributions and one
    insert."""
    import sqlalchemy
    from optuna import distributions
    from optuna.storages._rdb import models

    trial_model, param_model = models.TrialModel, models.TrialParamModel
    study_id = _updatable_studies(backend, session, [trial_id])[trial_id]
    if not params:
        return
    first_of_each = (
        sqlalchemy.select(sqlalchemy.func.min(param_model.param_id))
        .join(trial_model, trial_model.trial_id == param_model.trial_id)
        .where(trial_model.study_id == study_id, param_model.param_name.in_([n for n, _, _ in params]))
        .group_by(param_model.param_name)
    )
    earlier = dict(session.execute(
        sqlalchemy.select(param_model.param_name, param_model.distribution_json)
        .where(param_model.param_id.in_(first_of_each))
    ).all())
    rows = []
    for name, value, distribution in params:
        if name in earlier:
            distributions.check_distribution_compatibility(distributions.json_to_distribution(earlier[name]),
                                                           distribution)
        rows.append({"trial_id": trial_id, "param_name": name, "param_value": value,
                     "distribution_json": distributions.distribution_to_json(distribution)})
    session.execute(sqlalchemy.insert(param_model.__table__), rows)


# Pruners whose prune() reads the study only through get_trials() and direction, and writes
# only trial system attributes through study._storage.set_trial_system_attr (Optuna 4-5's
# sources); exact types, since a subclass may read or write more.
_SNAPSHOT_PRUNERS = (
    optuna.pruners.SuccessiveHalvingPruner, optuna.pruners.MedianPruner,
    optuna.pruners.PercentilePruner, optuna.pruners.NopPruner,
)


def should_prune_many(trials: Sequence[optuna.trial.Trial]) -> list[bool]:
    """``[t.should_prune() for t in trials]``: the same answers, from one read of the study.

    Asking the pruner about K members one by one reads the study K times and writes each
    rung record in a commit of its own (digits-mlp, 32 trials, ASHA, SQLite: 300 commits and
    1,700 statements, more time than the members' training). For ASHA, median and percentile
    pruning the study is read once; each answer sees the rung records of the answers before
    it, exactly as consecutive ``should_prune`` calls would; the records are then written in
    one transaction (one commit each if that fails, so none is lost). Any other pruner is
    asked trial by trial.
    """
    if not trials:
        return []
    study = trials[0].study
    if (type(study.pruner) not in _SNAPSHOT_PRUNERS or len(study.directions) > 1
            or any(t.study is not study or not hasattr(t, "_trial_id") for t in trials)):
        return [t.should_prune() for t in trials]
    snapshot = _PrunerView(study)
    verdicts = [bool(study.pruner.prune(snapshot, snapshot.trial(t._trial_id))) for t in trials]
    snapshot.write(trials)
    return verdicts


class _PrunerView:
    """A study as the pruners in ``_SNAPSHOT_PRUNERS`` see it, read once; their writes are
    applied to the copy at once and kept to be written together."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study
        self.direction = study.direction
        self.directions = study.directions
        self._storage = self  # the pruner writes through study._storage
        self._trials = []
        for t in study.get_trials(deepcopy=False):
            t = copy.copy(t)
            t.system_attrs = dict(t.system_attrs)  # own dict: the writes below change it
            self._trials.append(t)
        self._by_id = {t._trial_id: t for t in self._trials}
        self._writes: list[tuple[int, str, Any]] = []

    def trial(self, trial_id: int) -> optuna.trial.FrozenTrial:
        return self._by_id[trial_id]

    def get_trials(self, deepcopy: bool = True, states: Sequence[Any] | None = None) -> list[optuna.trial.FrozenTrial]:
        trials = [t for t in self._trials if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._by_id[trial_id].system_attrs[key] = value
        self._writes.append((trial_id, key, value))

    def write(self, trials: Sequence[optuna.trial.Trial]) -> None:
        """Store the pruner's records: one transaction where the storage allows, else one by one."""
        # A trial another worker finished meanwhile keeps its records as they are.
        if not self._writes or _write_attrs_together(trials, "TrialSystemAttributeModel", self._writes, set()):
            return
        for trial_id, key, value in self._writes:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                self._study._storage.set_trial_system_attr(trial_id, key, value)


def _write_attrs_together(trials: Sequence[optuna.trial.Trial], model: str,
                          items: Sequence[tuple[int, str, Any]], finished: set[int] | None = None) -> bool:
    """Set ``(trial_id, key, value)`` attributes of Optuna's ``model`` (its user or system
    attribute table) in one transaction, as :func:`_write_together` (False: nothing written).
    With ``finished``, a finished trial's items are left out (its id added) instead of refused."""
    return _write_together(trials, lambda backend, session: _write_attrs(backend, session, model, items, finished))


def _write_attrs(backend: optuna.storages.RDBStorage, session: Any, model: str,
                 items: Sequence[tuple[int, str, Any]], finished: set[int] | None = None) -> None:
    """Optuna's ``_set_trial_attr_without_commit`` for every ``(trial_id, key, value)``, in
    ``session``: one read of the trials' states (a finished trial is refused, as Optuna
    refuses it, or, with ``finished``, left out), then :func:`_upsert_attrs`."""
    if items:
        _updatable_studies(backend, session, sorted({trial_id for trial_id, _, _ in items}), finished)
        _upsert_attrs(session, model, [i for i in items if not finished or i[0] not in finished])


def _upsert_attrs(session: Any, model: str, items: Sequence[tuple[int, str, Any]]) -> None:
    """Set the attributes in Optuna's ``model`` table (user or system attributes), the trials'
    states already checked: one read of those already there, one update of them and one
    multi-row insert of the rest (Optuna: a read of the trial and an upsert for each)."""
    import json

    import sqlalchemy
    from optuna.storages._rdb import models

    latest = {(trial_id, key): value for trial_id, key, value in items}  # a key set twice: the last wins
    if not latest:
        return
    table = getattr(models, model).__table__
    (pk,) = table.primary_key.columns
    there = {(row.trial_id, row.key): row[2] for row in session.execute(
        sqlalchemy.select(table.c.trial_id, table.c.key, pk).where(
            table.c.trial_id.in_(sorted({t for t, _ in latest})), table.c.key.in_(sorted({k for _, k in latest}))))}
    updates = [{"b_id": there[k], "b_value": json.dumps(v)} for k, v in latest.items() if k in there]
    inserts = [{"trial_id": t, "key": key, "value_json": json.dumps(v)}
               for (t, key), v in latest.items() if (t, key) not in there]
    if updates:
        session.execute(sqlalchemy.update(table).where(pk == sqlalchemy.bindparam("b_id"))
                        .values(value_json=sqlalchemy.bindparam("b_value")), updates)
    if inserts:
        session.execute(sqlalchemy.insert(table), inserts)


def _write_together(trials: Sequence[optuna.trial.Trial], write: Callable[[Any, Any], None]) -> bool:
    """Run ``write(backend, session)`` as one transaction on the RDBStorage all ``trials`` use.

    False, with nothing written (rolled back), where there is no such storage, Optuna's
    internals used here are not as expected, or the write fails: the caller then writes
    through Optuna's public API, which says what is wrong.
    """
    backend = _shared_backend(trials)
    if backend is None:
        return False
    try:
        with one_transaction(backend) as session:
            write(backend, session)
    except Exception:  # noqa: BLE001 - rolled back; the public path says what is wrong
        return False
    return True


def _shared_backend(trials: Sequence[optuna.trial.Trial]) -> optuna.storages.RDBStorage | None:
    """The RDBStorage all ``trials`` use, if it and they have the internals written to here."""
    backend = _backend_of(trials[0]) if trials else None
    needed = ("check_trial_is_updatable", "scoped_session")
    if not isinstance(backend, optuna.storages.RDBStorage) or not all(hasattr(backend, n) for n in needed):
        return None
    if any(_backend_of(t) is not backend or not (hasattr(t, "_trial_id") and hasattr(t, "_cached_frozen_trial"))
           for t in trials):
        return None
    return backend


def _backend_of(trial: optuna.trial.Trial) -> Any:
    storage = getattr(trial, "storage", None)
    return getattr(storage, "_backend", storage)  # Optuna wraps an RDBStorage in _CachedStorage


@contextlib.contextmanager
def one_transaction(storage: optuna.storages.RDBStorage) -> Iterator[Any]:
    session = storage.scoped_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _is_creation_race(e: Exception) -> bool:
    import sqlalchemy.exc

    return isinstance(e, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)) or "already exists" in str(e)


DAMAGED = " (the database file is damaged)"


def cause_line(e: BaseException) -> str:
    """The first line of what made ``e``: the database's own error where Optuna wrapped it
    (its ``StorageInternalError`` says only "An exception is raised during the commit ...")."""
    if isinstance(e, optuna.exceptions.StorageInternalError) and e.__cause__ is not None:
        e = e.__cause__
    return first_line(e)


def damaged(reason: str) -> bool:
    """Whether SQLite's ``reason`` for failing says the file itself is damaged."""
    return "malformed" in reason or "not a database" in reason


def storage_url(storage: Any) -> str:
    """The URL of what a caller passed as a storage: a URL, a path to a SQLite file (any
    ``os.PathLike``, e.g. a ``pathlib.Path``), or None for the default.

    Raises:
        StorageError: anything else, in one line.
    """
    if storage is None:
        return DEFAULT_STORAGE
    if isinstance(storage, os.PathLike):
        return "sqlite:///" + os.fsdecode(storage)
    if not isinstance(storage, str):
        raise StorageError(f"storage must be a URL like sqlite:///adamtune.db or postgresql://user@host/db, or the "
                           f"path of a SQLite file, got {type(storage).__name__} {storage!r}")
    return storage


def check_url(url: str, *, must_exist: bool = False) -> None:
    """Everything about ``url`` that can be checked without touching it. Raises StorageError.

    A bare path (``adamtune.db``, ``/tmp/x.db``) is refused, the message giving the URL to write
    (``sqlite:////tmp/x.db``), not taken as one: a mistyped URL would become a new database file.
    """
    if not isinstance(url, str) or not _URL.match(url):
        shown = redact(url) if isinstance(url, str) else url
        hint = " (PostgreSQL's scheme is spelt postgresql://)" if shown.startswith("postgres://") else ""
        if (isinstance(url, str) and url.strip() and "://" not in url and "@" not in url
                and not re.match(r"[A-Za-z][\w+.-]*:", url)):  # a path, not a URL (sqlite:/x.db is a mistyped one)
            hint = f"; for a SQLite file at that path write sqlite:///{os.path.abspath(os.path.expanduser(url))}"
        raise StorageError(
            f"storage must be a URL like sqlite:///adamtune.db or postgresql://user@host/db, got {shown!r}{hint}"
        )
    if not url.startswith("sqlite:"):
        _check_server_url(url)
    path = sqlite_path(url)
    if url.startswith("sqlite:") and not url.startswith("sqlite:///"):
        raise StorageError(f"a SQLite storage URL needs three slashes, sqlite:///path.db, got {redact(url)!r}")
    if path is not None and "?" in path:
        raise StorageError(f"a SQLite storage URL names the file alone, with no query string (adamtune sets the "
                           f"connection's options itself): sqlite:///{path.split('?')[0]}, got {redact(url)!r}")
    if path is not None:
        try:
            os.stat(path)
        except PermissionError as e:  # a directory on the way may not be entered: reads as missing otherwise
            raise StorageError(f"cannot reach {path!r}: {e.strerror} (a directory on its path may not be "
                               "entered by this user)") from None
        except OSError:  # missing (said below), or a file with a / after it
            pass
        if os.path.isdir(path):
            raise StorageError(f"storage {path!r} is a directory, not a database file")
        if path.endswith(("/", os.sep)):  # SQLite would open the file without it; a read would find none
            raise StorageError(f"storage {path!r} ends with '/', as a directory does; for the database file write "
                               f"sqlite:///{path.rstrip('/' + os.sep)}")
        if os.path.exists(path):
            empty = _empty_sqlite_file(path)
            if empty and must_exist:  # reading must not write Optuna's tables into it
                raise StorageError(f"no study database at {path!r}: the file is empty; run `adamtune tune` first")
            tables = None if empty else _sqlite_tables(path, refuse_other=True)
            if tables is not None and tables and "studies" not in tables:
                raise StorageError(f"{path!r} is a SQLite database of something else (tables {', '.join(sorted(tables)[:3])}"
                                   f"{', ...' if len(tables) > 3 else ''}), not a study storage; name another file")
            if tables is not None and not tables and must_exist:
                raise StorageError(f"no study database at {path!r}: the file holds no table; run `adamtune tune` first")
        elif must_exist:
            raise StorageError(f"no study database at {path!r}: run `adamtune tune` first, or give --storage the URL "
                               "of an existing one")
        else:
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise StorageError(f"cannot create {path!r}: directory {parent!r} does not exist")


def _check_server_url(url: str) -> None:
    """A database server's ``url`` as SQLAlchemy reads it: refused where it would misread a
    password holding an @ (as ending there: "invalid literal for int() with base 10" or another
    host), or where it names an asyncio driver (Optuna's storage calls its database in turn)."""
    import sqlalchemy.engine

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except ValueError:  # a port that is not a number: said when it is opened
        parsed = None
    rest = url.split("://", 1)[1]
    password = rest.rsplit("@", 1)[0].partition(":")[2] if "@" in rest else ""
    if "@" in password and (parsed is None or "@" in (parsed.host or "")):
        raise StorageError(f"the password in storage URL {redact(url)!r} holds an @, which ends it there: write it "
                           "percent-encoded (@ as %40, : as %3A, / as %2F), e.g. postgresql://me:p%40ss@host/db")
    try:
        dialect = parsed.get_dialect() if parsed is not None else None
    except Exception:  # noqa: BLE001 - an unknown driver: SQLAlchemy says so when it is opened
        return
    if dialect is not None and dialect.is_async:
        scheme = url.split("://")[0]
        raise StorageError(f"storage {scheme} names an asyncio driver ({dialect.driver}), which Optuna's storage "
                           f"cannot use; write {scheme.split('+')[0]}:// instead")


_DRIVER_PACKAGES = {
    "psycopg": "pip install 'psycopg[binary]'", "pg8000": "pip install pg8000",
    "psycopg2cffi": "pip install psycopg2cffi", "MySQLdb": "pip install mysqlclient",
    "pymysql": "pip install PyMySQL", "mysql": "pip install mysql-connector-python",
}
"""How to install the module each of SQLAlchemy's drivers imports, beside psycopg2 (the ``postgres`` extra)."""


def _missing_driver(url: str, e: ImportError) -> StorageError:
    """The error for ``url``'s database driver not being installed, naming its module and package."""
    scheme = url.split("://")[0]
    while e is not None and not isinstance(e, ModuleNotFoundError):  # Optuna's ImportError says neither
        e = e.__cause__
    module = e.name.split(".")[0] if e is not None and e.name else None
    if url.startswith("postgresql://") or module == "psycopg2":  # the bare scheme takes psycopg2 too
        install = "pip install -c constraints.txt -e '.[postgres]'"
    else:
        install = _DRIVER_PACKAGES.get(module or "", "install the package that provides it")
    what = f"the Python module {module}" if module else "a database driver"
    return StorageError(f"storage {scheme} needs {what}, which is not installed ({install})")


def _empty_sqlite_file(path: str) -> bool:
    """Whether ``path`` is an empty file; refused unless it is a regular file this user may read.

    Read without opening it: closing any descriptor of a file drops every POSIX lock this
    process holds on it, those of its SQLite connections too (SQLite coordinates only its own
    descriptors). With its shared lock gone, a worker closing its connection took itself for
    the last one and deleted the ``-wal`` and ``-shm`` files this process still used: a
    notebook holding a study open saw none of its workers' trials in ``tune_on_ray``'s result,
    and what it wrote next went into a deleted log.

    Raises:
        StorageError: a socket, device or FIFO, or no permission to read it.
    """
    import stat

    try:
        st = os.stat(path)
    except OSError as e:
        raise StorageError(f"cannot read {path!r}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a socket" if stat.S_ISSOCK(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a file")
        raise StorageError(f"cannot read {path!r}: it is {kind}, not a database file")
    if not os.access(path, os.R_OK):
        raise StorageError(f"cannot read {path!r}: {os.strerror(errno.EACCES)}")
    return st.st_size == 0


def _sqlite_tables(path: str, refuse_other: bool = False) -> set[str] | None:
    """The tables of the SQLite file ``path``, read without writing; None if it cannot be read
    here (left to Optuna to open, or to say why it cannot).

    Reading a study in WAL mode makes SQLite create the ``-wal`` and ``-shm`` files beside it;
    a read-only connection cannot remove them when it closes, and they stayed behind when the
    command then stopped on bad input. Where the file may be written, the connection is opened
    read-write (it only reads), and the last one to close removes them as every writer does.
    Where it may not, it is read as immutable, which makes no file beside it. That ignores a
    ``-wal`` file, but Optuna makes its tables before adamtune puts the file in WAL mode, so
    they are in the file itself; a file with no table there and a log beside it is left to
    :func:`_open_read_only`, which reads the log too.

    Raises:
        StorageError: with ``refuse_other``, when the file is not a SQLite database.
    """
    import sqlite3

    writable = _writable(path)
    source = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=rw" if writable else _immutable(path)
    try:
        con = sqlite3.connect(source, uri=True, timeout=60)
        try:
            tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.Error as e:
        if refuse_other and getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_NOTADB:
            raise StorageError(f"{path!r} is not a SQLite database (corrupt, or another kind of file)") from None
        return None
    if not tables and not writable and _has_log(path):
        return None
    return tables


def is_new_file(url: str) -> bool:
    """Whether ``url`` names a SQLite file that does not exist yet (so it holds no study)."""
    path = sqlite_path(url)
    return path is not None and not os.path.exists(path)


def redact(url: str) -> str:
    """``url`` with its password masked (``postgresql://me:***@host/db``): for every message or
    report that repeats a storage URL."""
    url = re.sub(r"://([^:/?#]*):.*@", r"://\1:***@", url)  # to the last @: a user name or password may hold one
    if "://" not in url and "@" in url:  # no scheme, or a malformed one (postgresql//me:pw@h, postgresql:/me:pw@h)
        head, _, tail = url.rpartition("@")
        colon = head.find(":", head.rfind("/") + 1)  # the user's part starts after the last / before the @
        colon = colon if colon != -1 else head.find(":")
        if colon != -1:
            url = f"{head[:colon]}:***@{tail}"
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]
