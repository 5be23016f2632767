"""Heartbeats of the trials a worker trains, and the end of trials whose worker is gone.

Ctrl-C and SIGTERM end the trials in training as cut short. A worker killed outright (``kill
-9``, the out-of-memory killer, a machine that stops) ends nothing: its trials would stay
``running`` forever and use up the study's budget. So while ``tune`` trains, a thread of the
worker stamps each of its running trials in Optuna's ``trial_heartbeats`` table every
``INTERVAL_S`` seconds, in one transaction for them all, and ``tune`` begins by ending the
study's running trials whose stamp is older than ``GRACE_S``: failed and cut short, like a
Ctrl-C, so the run makes up for them. Times are the database's own clock in UTC, whatever the
time zone of each worker's session, so workers on other machines and in other zones agree.

A running trial with no stamp at all is lost once its recorded start is over ``GRACE_S`` plus
``UNSTAMPED_S`` (14 hours) old: its worker was killed, or its database failed, between making it
and stamping it (a worker stamps each trial as it makes it, within moments). Its start is the
creating client's clock, which older Optuna records as local time (east of UTC such a trial
waits that much longer), so only a margin no time zone reaches tells a dead trial from a live
one. The same holds for a trial made by Optuna directly or by an older adamtune, which never
stamps. (Stamps an older adamtune wrote in a session's local time are read as UTC, off by that
zone's offset.) Only SQL storages in files or servers (SQLite, PostgreSQL, MySQL) have heartbeats.

On the machine that trained it, a trial need not wait for its stamp to age: each trial records
its worker process (``ATTR_PROCESS``: the machine's boot, its process namespace, the process id
and start time, from Linux's /proc), and a running trial whose process ran on this machine since
its last boot and in this process namespace, and no longer runs, is lost at once (the common
case: a run killed outright, or by the out-of-memory killer, then started again). Its start time
tells a process id the system has given to another process since. Elsewhere (another machine or
container, or no /proc) only the heartbeat tells.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna

from adamtune.errors import first_line
from adamtune.storage import fail_if_running, one_transaction, sql_backend
from adamtune.trials import ATTR_INTERRUPTED, ATTR_PROCESS, ATTR_TRACEBACK

INTERVAL_S = 30.0
SETTLE_S = 0.05
GRACE_S = 600.0  # 20 missed stamps: a worker alive but stalled (the database locked) is not ended
UNSTAMPED_S = 14 * 3600.0  # the farthest a local time lies from UTC (UTC+14; UTC-12 is nearer)
LOST = (f"lost: its worker sent no heartbeat for over {GRACE_S / 60:g} minutes (killed with SIGKILL, out of memory, "
        "or its machine stopped)")
GONE = "lost: its worker process (pid {pid} on this machine) no longer runs (killed with SIGKILL, or out of memory)"


@dataclasses.dataclass(frozen=True)
class Lost:
    """A running trial whose worker is gone.

    Attributes:
        trial_id, number: the trial.
        pid: its worker's process id on this machine, which no longer runs; None when it is lost
            because its heartbeat is stale (or it never had one and is old).
    """

    trial_id: int
    number: int
    pid: int | None = None


def this_process() -> str | None:
    """This process, told apart from any other that ran on this machine since it booted:
    ``BOOT_ID NAMESPACE PID START`` (the pid namespace's device:inode, the start in clock ticks
    after boot); None where /proc does not say (not Linux)."""
    return _process(os.getpid())


@functools.lru_cache(maxsize=4)
def _process(pid: int) -> str | None:  # by pid: a forked worker is another process
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        ns = os.stat("/proc/self/ns/pid")
        # /proc mounted for another pid namespace (a sandbox's `unshare --pid` without its own
        # /proc) shows other processes under this one's pids: it tells nothing about them.
        ours = os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return None
    start = _start_of(pid)
    if not boot or not ours or start is None or start == _ENDED:
        return None
    return f"{boot} {ns.st_dev}:{ns.st_ino} {pid} {start}"


_ENDED = -1  # _start_of: the process does not run


def _start_of(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot); ``_ENDED`` if it does not run (no
    such process, or a zombie: it ended and its parent has not collected it); None where nothing
    tells: its /proc entry hidden from this user (/proc mounted with ``hidepid``, systemd's
    ``ProtectProc``) while the process runs, or unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)  # sends nothing: asks whether the process exists
        except ProcessLookupError:
            return _ENDED
        except OSError:  # PermissionError: it runs, as another user
            return None
        return None  # it runs; /proc does not show it
    try:
        fields = text[text.rindex(")") + 2:].split()  # after the command's name, which may hold spaces
        return _ENDED if fields[0] in ("Z", "X") else int(fields[19])  # the state, and field 22: starttime
    except (ValueError, IndexError):
        return None


def gone_pid(process: str | None, here: str | None) -> int | None:
    """The pid of ``process`` (a worker's ``this_process()``) when it ran on the machine and in the
    process namespace of ``here`` (this process's), since its last boot, and no longer runs;
    else None (it runs, it ran elsewhere, or nothing can tell: its heartbeat will)."""
    if not process or not here:
        return None
    try:
        boot, ns, pid, start = process.split()
        if here.split()[:2] != [boot, ns]:
            return None
        now = _start_of(int(pid))
        if now is None or now == int(start):  # hidden from this user, or the same process
            return None
        return int(pid)  # ended, or the pid is another process's now
    except ValueError:
        return None


def _utc(moment: datetime.datetime) -> datetime.datetime:
    """``moment`` as naive UTC, as the heartbeat column holds it: an aware time converted, a naive
    one taken as UTC already."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)


def _now(session: Any) -> datetime.datetime:
    """The database's clock, naive UTC. PostgreSQL's now() is in the session's time zone (PGTZ,
    the role's setting), with its offset; MySQL's NOW() is its local time, without one; SQLite's
    CURRENT_TIMESTAMP is UTC."""
    import sqlalchemy

    if session.get_bind().dialect.name in ("mysql", "mariadb"):
        clock = sqlalchemy.func.utc_timestamp(type_=sqlalchemy.DateTime)
    else:
        clock = sqlalchemy.func.now()
    return _utc(session.execute(clock).scalar())


def beat(backend: optuna.storages.RDBStorage, trial_ids: Sequence[int]) -> set[int]:
    """Stamp those of ``trial_ids`` still running, in one transaction; returns their ids."""
    from optuna.storages._rdb import models

    with one_transaction(backend) as session:
        now = _now(session)
        running = {tid for (tid,) in session.query(models.TrialModel.trial_id).filter(
            models.TrialModel.trial_id.in_(trial_ids), models.TrialModel.state == optuna.trial.TrialState.RUNNING)}
        stamped = {hb.trial_id: hb for hb in session.query(models.TrialHeartbeatModel).filter(
            models.TrialHeartbeatModel.trial_id.in_(running))}
        for tid in running:
            if tid in stamped:
                stamped[tid].heartbeat = now
            else:
                session.add(models.TrialHeartbeatModel(trial_id=tid, heartbeat=now))
    return running


def lost_trials(study: optuna.Study, grace_s: float | None = None) -> list[int]:
    """The trial ids of ``study``'s lost trials (:func:`lost`)."""
    return [t.trial_id for t in lost(study, grace_s)]


def lost(study: optuna.Study, grace_s: float | None = None) -> list[Lost]:
    """``study``'s running trials whose worker process ran on this machine and no longer runs, those
    last stamped over ``grace_s`` seconds ago (default ``GRACE_S``), and those never stamped that
    started over ``grace_s`` plus ``UNSTAMPED_S`` seconds ago; by trial id. Reads only."""
    from optuna.storages._rdb import models

    backend = sql_backend(study)
    if backend is None:
        return []
    limit = datetime.timedelta(seconds=GRACE_S if grace_s is None else grace_s)
    unstamped = limit + datetime.timedelta(seconds=UNSTAMPED_S)
    trials = models.TrialModel.__table__  # datetime_start as stored, under every Optuna's ORM name for it
    attrs = models.TrialUserAttributeModel
    with one_transaction(backend) as session:
        now = _now(session)
        rows = session.query(trials.c.trial_id, trials.c.number, models.TrialHeartbeatModel.heartbeat,
                             trials.c.datetime_start, attrs.value_json).outerjoin(
            models.TrialHeartbeatModel, models.TrialHeartbeatModel.trial_id == trials.c.trial_id).outerjoin(
            attrs, (attrs.trial_id == trials.c.trial_id) & (attrs.key == ATTR_PROCESS)).filter(
            trials.c.study_id == study._study_id, trials.c.state == optuna.trial.TrialState.RUNNING).all()
    here = this_process()

    def process_of(value: str | None) -> str | None:
        try:
            process = json.loads(value) if value else None
        except ValueError:
            return None
        return process if isinstance(process, str) else None

    def stale(stamp: datetime.datetime | None, start: datetime.datetime | None) -> bool:
        if stamp is not None:
            return now - _utc(stamp) > limit
        return start is not None and now - _utc(start) > unstamped

    out = []
    for tid, number, stamp, start, process in rows:
        pid = gone_pid(process_of(process), here)
        if pid is not None or stale(stamp, start):
            out.append(Lost(tid, number, pid))
    return sorted(out, key=lambda t: t.trial_id)


def lost_text(trials: Sequence[Lost]) -> str:
    """Why ``trials`` are lost, in a few words: ``"its worker process (pid 12) on this machine no
    longer runs"``, ``"its worker sent no heartbeat for over 10 minutes (...)"``, or both."""
    pids = sorted({t.pid for t in trials if t.pid is not None})
    parts = []
    if pids:
        parts.append(f"{'their' if len(trials) > 1 else 'its'} worker process{'es' if len(pids) > 1 else ''} "
                     f"(pid {', '.join(map(str, pids))}) on this machine no longer run{'' if len(pids) > 1 else 's'}")
    stale = sum(1 for t in trials if t.pid is None)
    if stale:
        parts.append(f"{'their' if stale > 1 else 'its'} worker sent no heartbeat for over {GRACE_S / 60:g} minutes "
                     "(killed, or its machine stopped)")
    return "; ".join(parts)


def end_lost(study: optuna.Study, grace_s: float | None = None) -> list[Lost]:
    """End ``study``'s lost trials as failed and cut short (they no longer use up the budget).
    Returns those this call ended; one another worker ends first, or that finishes after all,
    is left as it is."""
    found = lost(study, grace_s)
    if not found:
        return []
    # In one transaction for each kind: a stalled worker finishing one of them meanwhile keeps
    # its result, not marked cut short (which would leave it out of the budget).
    ended: set[int] = set()
    for pid in sorted({t.pid for t in found if t.pid is not None}):
        ids = [t.trial_id for t in found if t.pid == pid]
        ended.update(fail_if_running(sql_backend(study), ids, {ATTR_TRACEBACK: GONE.format(pid=pid),
                                                               ATTR_INTERRUPTED: True}))
    stale = [t.trial_id for t in found if t.pid is None]
    if stale:
        ended.update(fail_if_running(sql_backend(study), stale, {ATTR_TRACEBACK: LOST, ATTR_INTERRUPTED: True}))
    return [t for t in found if t.trial_id in ended]


class Heartbeat:
    """A thread stamping the watched trials while they run (a no-op for other storages).

    Use as a context manager around training; ``watch(trials)`` as trials are made. The first
    stamp follows at once (within ``SETTLE_S``, so that trials watched one by one as a batch is
    made share a transaction), then one every ``interval_s``; a trial stops being stamped once
    it is no longer running. A stamp that fails (the database busy) is followed by the next; once
    none has come for ``warn_after_s`` (half of ``GRACE_S``), ``notice`` says so, with why, once
    until a stamp comes again: other runs are about to end these trials as lost.
    """

    def __init__(self, study: optuna.Study, interval_s: float | None = None,
                 notice: Callable[[str], None] | None = None, warn_after_s: float = GRACE_S / 2) -> None:
        self._backend = sql_backend(study)
        self._interval = INTERVAL_S if interval_s is None else interval_s
        self._notice = notice
        self._warn_after = warn_after_s
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if self._backend is not None:
            self._thread = threading.Thread(target=self._run, name="adamtune-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout=10)

    def watch(self, trials: Sequence[optuna.trial.Trial]) -> None:
        if self._thread is None or not trials:
            return
        with self._lock:
            self._ids.update(t._trial_id for t in trials)
        self._wake.set()

    def _run(self) -> None:
        last_stamp, told = time.monotonic(), False
        while True:
            self._wake.wait(self._interval)
            self._stop.wait(SETTLE_S)  # a batch being made, one trial after another, shares a stamp
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._lock:
                ids = sorted(self._ids)
            if not ids:
                continue
            try:
                running = beat(self._backend, ids)
            except Exception as e:  # noqa: BLE001 - a missed stamp; the next one follows
                if not told and self._notice is not None and time.monotonic() - last_stamp >= self._warn_after:
                    told = True
                    e = getattr(e, "orig", None) or e  # the database's own words under SQLAlchemy's
                    self._notice(f"the heartbeat of this run's trials has failed for over "
                                 f"{_duration(time.monotonic() - last_stamp)} ({type(e).__name__}: {first_line(e)}); "
                                 f"other runs of this study end them as lost once {GRACE_S / 60:g} minutes pass "
                                 "without one")
                continue
            last_stamp, told = time.monotonic(), False
            with self._lock:
                self._ids -= set(ids) - running


def _duration(seconds: float) -> str:
    """``"5 minutes"``, ``"40 seconds"``: how long the stamps have failed."""
    return f"{seconds / 60:.0f} minutes" if seconds >= 120 else f"{seconds:.0f} seconds"
