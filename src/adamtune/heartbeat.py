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
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Sequence
from typing import Any

import optuna

from adamtune.storage import fail_if_running, one_transaction, sql_backend
from adamtune.trials import ATTR_INTERRUPTED, ATTR_TRACEBACK

INTERVAL_S = 30.0
SETTLE_S = 0.05
GRACE_S = 600.0  # 20 missed stamps: a worker alive but stalled (the database locked) is not ended
UNSTAMPED_S = 14 * 3600.0  # the farthest a local time lies from UTC (UTC+14; UTC-12 is nearer)
LOST = (f"lost: its worker sent no heartbeat for over {GRACE_S / 60:g} minutes (killed with SIGKILL, out of memory, "
        "or its machine stopped)")


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
    """The trial ids of ``study``'s running trials last stamped over ``grace_s`` seconds ago, and
    of those never stamped that started over ``grace_s`` plus ``UNSTAMPED_S`` seconds ago."""
    return [tid for tid, _ in _lost(study, grace_s)]


def lost_numbers(study: optuna.Study) -> list[int]:
    """The numbers of ``study``'s lost trials (as ``adamtune show`` names them); reads only."""
    return sorted(number for _, number in _lost(study, None))


def _lost(study: optuna.Study, grace_s: float | None) -> list[tuple[int, int]]:
    """``(trial id, number)`` of ``study``'s lost trials, by trial id."""
    from optuna.storages._rdb import models

    backend = sql_backend(study)
    if backend is None:
        return []
    limit = datetime.timedelta(seconds=GRACE_S if grace_s is None else grace_s)
    unstamped = limit + datetime.timedelta(seconds=UNSTAMPED_S)
    trials = models.TrialModel.__table__  # datetime_start as stored, under every Optuna's ORM name for it
    with one_transaction(backend) as session:
        now = _now(session)
        rows = session.query(trials.c.trial_id, trials.c.number, models.TrialHeartbeatModel.heartbeat,
                             trials.c.datetime_start).outerjoin(
            models.TrialHeartbeatModel, models.TrialHeartbeatModel.trial_id == trials.c.trial_id).filter(
            trials.c.study_id == study._study_id, trials.c.state == optuna.trial.TrialState.RUNNING).all()

    def lost(stamp: datetime.datetime | None, start: datetime.datetime | None) -> bool:
        if stamp is not None:
            return now - _utc(stamp) > limit
        return start is not None and now - _utc(start) > unstamped

    return sorted((tid, number) for tid, number, stamp, start in rows if lost(stamp, start))


def end_lost(study: optuna.Study, grace_s: float | None = None) -> int:
    """End ``study``'s lost trials as failed and cut short (they no longer use up the budget).
    Returns how many this call ended; one another worker ends first, or that finishes after
    all, is left as it is."""
    lost = lost_trials(study, grace_s)
    if not lost:
        return 0
    # In one transaction: a stalled worker finishing one of them meanwhile keeps its result,
    # not marked cut short (which would leave it out of the budget).
    return len(fail_if_running(sql_backend(study), lost, {ATTR_TRACEBACK: LOST, ATTR_INTERRUPTED: True}))


class Heartbeat:
    """A thread stamping the watched trials while they run (a no-op for other storages).

    Use as a context manager around training; ``watch(trials)`` as trials are made. The first
    stamp follows at once (within ``SETTLE_S``, so that trials watched one by one as a batch is
    made share a transaction), then one every ``interval_s``; a trial stops being stamped once
    it is no longer running. A stamp that fails (the database busy) is simply followed by the next.
    """

    def __init__(self, study: optuna.Study, interval_s: float | None = None) -> None:
        self._backend = sql_backend(study)
        self._interval = INTERVAL_S if interval_s is None else interval_s
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
            except Exception:  # noqa: BLE001 - a missed stamp; the next one follows
                continue
            with self._lock:
                self._ids -= set(ids) - running
