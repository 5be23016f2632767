"""One study tuned by several workers at once on a Ray cluster (a local one by default).

Workers share a study through its storage, as several ``adamtune tune`` processes on one study
do (README, "Where results live"): each asks the study for trials, trains them (batched or one
at a time) and stores them, and the budget holds across them. Ray only starts the workers
where there is room for them (a CPU each, or a GPU each with ``device="cuda"``), on this
machine or on every machine of a cluster. This process opens the study first, so bad input is
refused before any worker starts, then follows the study in its storage and reports each trial
as it is stored, whichever worker trained it. A run refused before its workers start (a worker
no node can hold) removes the study it made, so it stores nothing.

A SQLite file is on one machine only: it serves the workers of a cluster of one node (the local
cluster started here, or one ``ray start --head`` made on this machine); a cluster of several
nodes needs a storage every node reaches (PostgreSQL). A workload file or module must be
found by every worker: built-in workloads always are; on a cluster of several machines, give a
module installed on every node or a path on a file system they share.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import numbers
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any, Union

import optuna

from adamtune.errors import AdamtuneError, StorageError, StudyError, first_line, integral
from adamtune.results import StudySettings, TuneResult, result_of
from adamtune.storage import check_url, settle, sqlite_path, storage_url
from adamtune.study import (
    Objective, OpenedStudy, check_callbacks, counted_trials, open_study, refuse_all_failed, resolve_batch,
    sigterm_as_interrupt, tune, unmake, warn,
)
from adamtune.heartbeat import GRACE_S, end_lost
from adamtune.trials import TrialRecord, this_worker, trials_text
from adamtune.workloads import Workload

MAX_WORKERS = 1024
POLL_S = 1.0  # how often the study is read for trials the workers stored
CANCEL_WAIT_S = 60.0  # how long the workers get to end their trials as cut short after Ctrl-C
LOST_SETTLE_S = 10.0  # how long a lost worker's process gets to end before its trials are looked at
CANCELLED_SETTLE_S = 30.0  # how long cancelled workers get to end their trials as cut short
MAKE_UP_ROUNDS = 2  # rounds of workers started for the share of workers lost (a lost one may be lost again)

RAY_MISSING = "Ray is not installed: pip install -c constraints.txt -e '.[ray]' (or pip install ray)"


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise StudyError(RAY_MISSING) from None
    return ray


def check_workers(workers: Any) -> int:
    """``workers`` as an int (numpy's integers too), or StudyError."""
    n = integral(workers)
    if n is None or not 1 <= n <= MAX_WORKERS:
        raise StudyError(f"workers must be a whole number in 1..{MAX_WORKERS}, got {workers!r}")
    return n


def _check_share(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 < value < math.inf):
        raise StudyError(f"{name} must be a number > 0, got {value!r}")
    try:
        return float(value)
    except OverflowError:  # an int too large for a float
        raise StudyError(f"{name} must be a number > 0 that a float holds, got an integer of "
                         f"{len(str(int(value)))} digits") from None


def _absolute(url: str) -> str:
    """``url`` with a SQLite file named by its absolute path: the workers' directory may differ."""
    path = sqlite_path(url)
    return url if path is None else "sqlite:///" + os.path.abspath(path)


# HTTP/2's client preface and an empty SETTINGS frame: any gRPC server (Ray's GCS, Ray Client) answers
# with a SETTINGS frame of its own (frame type 4, the fourth byte of the 9-byte frame header)
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Refuse, at once, an address where no Ray cluster answers: Ray itself retries it for minutes.

    Something must listen there and speak gRPC as Ray's GCS and Ray Client do (a web page such as
    the dashboard's port 8265, or a database, does not). ``auto`` is the address Ray finds
    (RAY_ADDRESS, or the cluster the last `ray start` on this machine recorded; none is left to Ray,
    which says so at once); None is a local cluster of this run's own.
    """
    if address is None:
        return
    if address == "auto":
        found = _auto_address()
        if found and (wrong := _no_answer(found, timeout_s)):
            raise StudyError(f"the Ray cluster --ray-address auto finds ({found}: RAY_ADDRESS or the last `ray start` "
                             f"on this machine) {wrong}; start it again (`ray start --head`) or leave --ray-address "
                             f"out for a local cluster of this run's own")
        return
    if wrong := _no_answer(address, timeout_s):
        raise StudyError(f"the Ray cluster at {address!r} {wrong}")


def _auto_address() -> str | None:
    """The HOST:PORT ``ray.init(address="auto")`` would connect to, or None when Ray finds none."""
    try:
        from ray._private.services import canonicalize_bootstrap_address  # no public way to ask

        return canonicalize_bootstrap_address("auto")
    except Exception:  # noqa: BLE001 - none recorded, or another Ray: Ray itself decides
        return None


def _no_answer(address: str, timeout_s: float) -> str | None:
    """What is wrong with ``address`` as a Ray cluster's (None: a gRPC server answers there)."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StudyError(f"a Ray address must be auto, HOST:PORT or ray://HOST:PORT, got {address!r}")
    try:
        conn = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s)
    except OSError as e:
        return f"cannot be reached: {e.strerror or e}"
    if os.environ.get("RAY_USE_TLS", "0").lower() not in ("0", "false", ""):
        conn.close()  # a TLS cluster answers a plain greeting with nothing gRPC: reaching it is all we check
        return None
    answer: bytes | None = b""
    with conn:
        try:
            conn.sendall(_HTTP2_HELLO)
            while len(answer) < 9 and (chunk := conn.recv(9 - len(answer))):
                answer += chunk
        except TimeoutError:
            answer = None
        except OSError:  # reset or closed on our greeting
            pass
    if answer is not None and len(answer) == 9 and answer[3] == 4:
        return None
    said = f"said nothing in {timeout_s:g} s" if answer is None else "does not speak gRPC"
    return (f"does not answer: something listens there but {said}; give the head node's GCS address "
            f"(HOST:6379 by default, as `ray start --head` prints) or ray://HOST:10001 (not the dashboard's port)")


@contextlib.contextmanager
def _stderr_into(said: io.StringIO) -> Iterator[None]:
    """What Ray's C++ core writes to this process's stderr (file descriptor 2) goes into ``said``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as kept:
        os.dup2(kept.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            kept.seek(0)
            said.write(kept.read().decode(errors="replace"))


@contextlib.contextmanager
def _connected(address: str | None) -> Iterator[Any]:
    """Ray, connected to ``address`` (None: a local cluster started here, for this run only).

    A connection the caller had already made is used and left open.
    """
    ray = _ray()
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
    said = io.StringIO()
    try:
        # "local": a cluster of this run's own, even where `ray start` made one (None would join it)
        with _stderr_into(said) if address not in (None, "auto") else contextlib.nullcontext():
            ray.init(address=address or "local", **kwargs)
    except Exception as e:  # noqa: BLE001 - unreachable address, no cluster at "auto", a bad address
        if address == "auto" and isinstance(e, ConnectionError):
            raise StudyError("no Ray cluster runs on this machine for --ray-address auto (start one with "
                             "`ray start --head`, or leave --ray-address out for a local one for this run)") from None
        if "InvalidAuthToken" in said.getvalue():
            # Ray >= 2.59's `ray start` turns token authentication on; "auto" finds the token, an address does not
            raise StudyError(f"the Ray cluster at {address!r} wants an authentication token: set RAY_AUTH_MODE=token "
                             "and the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token (`ray get-auth-token` "
                             "on the head node prints it)") from None
        where = f"the Ray cluster at {address!r}" if address else "a local Ray cluster"
        raise StudyError(f"cannot connect to {where}: {first_line(e) or type(e).__name__}") from None
    finally:
        sys.stderr.write(said.getvalue() if "InvalidAuthToken" not in said.getvalue() else "")
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_room(nodes: list[dict[str, Any]], cpus: float, gpus: float) -> None:
    """Refuse a worker no node of the cluster can ever hold: Ray would wait for it forever."""
    for name, wanted in (("CPU", cpus), ("GPU", gpus)):
        most = max((n.get("Resources", {}).get(name, 0.0) for n in nodes), default=0.0)
        if wanted > most:
            fewer = "--cpus-per-worker" if name == "CPU" else "--device cpu, or a cluster with GPUs"
            raise StudyError(f"each worker asks for {wanted:g} {name}{'s' if wanted != 1 else ''}, and the largest node "
                             f"of the Ray cluster has {most:g}; ask for fewer ({fewer})")


def _worker(workload: Union[str, Workload, Objective, None], options: dict[str, Any], threads: int | None,
            cwd: str | None = None) -> dict[str, Any]:
    """Run in a Ray task: :func:`adamtune.tune` on the shared study; returns its notices."""
    import torch

    if cwd is not None and os.path.isdir(cwd):
        # The driver's directory, where the machine has it: a relative workload path or module
        # is found as the driver found it (a cluster made by `ray start` runs tasks elsewhere).
        os.chdir(cwd)
    if threads:
        torch.set_num_threads(threads)
    notices: list[str] = []
    tune(workload, notice=notices.append, **options)
    return {"worker": this_worker(), "notices": notices}


def tune_on_ray(
    workload_or_objective: Union[str, Workload, Objective, None] = None,
    *,
    workers: int = 2,
    address: str | None = None,
    cpus_per_worker: float | None = None,
    gpus_per_worker: float | None = None,
    on_trial: Callable[[TrialRecord, TuneResult], None] | None = None,
    on_start: Callable[[StudySettings, int], None] | None = None,
    notice: Callable[[str], None] | None = None,
    max_consecutive_failures: int | None = 3,
    **options: Any,
) -> TuneResult:
    """:func:`adamtune.tune` with ``workers`` workers sharing the study, started by Ray.

    ``options`` are :func:`adamtune.tune`'s (optimizer, task, budget, space, sampler, pruner,
    storage, study, seed, direction, device, batch, max_memory). They and the arguments
    :func:`adamtune.tune` takes mean what they mean there (each worker stops
    after ``max_consecutive_failures`` failures in a row of its own trials). The trials left are
    split evenly between the workers; each runs its share, in batches as ``batch`` says (with
    "auto" and quasi-random search, its whole share as one batch).

    Args:
        workers: how many workers train at once (1..1024).
        address: the Ray cluster: None starts a local one for this run (stopped at the end);
            ``"auto"`` is the cluster ``ray start`` made on this machine; ``"ray://HOST:10001"``
            a remote one through Ray Client. A connection already made (``ray.init()``) is used.
        cpus_per_worker: CPUs Ray reserves for each worker, and the threads its torch uses
            (default 1).
        gpus_per_worker: GPUs Ray reserves for each worker (default: 1 with a CUDA ``device``,
            else 0).
        on_trial: called in this process with each trial a worker stored, in the order they
            were stored, and the study so far; trials ended unrun (cut short) are not shown.

    Ctrl-C (or SIGTERM) here stops every worker: the trials they were training end as cut short,
    as with :func:`adamtune.tune`, and a later run of the study makes up for them.

    Raises:
        AdamtuneError: bad input (said before any worker starts), Ray missing or the cluster
            unreachable, a SQLite storage with a cluster of several nodes, or a worker's own
            error (the first, as the worker raised it). A study this run made is removed again
            when it is refused before any worker starts.
        StudyError: workers were lost (killed, out of memory) and the rounds of new workers
            started for them (up to ``MAKE_UP_ROUNDS``) could not fill the budget: the message
            says how many trials finished of the budget; they stay stored, and the same call run
            again makes up for the rest.
    """
    workers = check_workers(workers)
    check_callbacks(on_trial=on_trial, on_start=on_start, notice=notice)
    cpus = _check_share("cpus_per_worker", cpus_per_worker)
    gpus = _check_share("gpus_per_worker", gpus_per_worker)
    _ray()  # before the study is made: nothing is stored for a run that cannot start
    check_reachable(address)
    url = storage_url(options.get("storage"))
    check_url(url)
    url = _absolute(url)
    say = notice or warn
    with contextlib.ExitStack() as stack:
        # A named cluster is reached before the study is stored (it may not be there, or not be
        # Ray); the local one is started after the input is checked (that takes seconds).
        ray = stack.enter_context(_connected(address)) if address is not None else None
        opened = open_study(workload_or_objective, **{**options, "storage": url}, notice=say)
        if gpus is None:
            gpus = 1.0 if opened.device.startswith("cuda") else 0.0
        unmade = False
        # as tune() leaves it: a SQLite file with its log folded in (unless the file is gone)
        stack.callback(lambda: unmade or settle(opened.store))
        try:
            if ray is None and opened.remaining:
                ray = stack.enter_context(_connected(address))
            stack.enter_context(sigterm_as_interrupt(over=True))  # after ray.init, which sets a SIGTERM handler of its own
            k = _prepare(ray, opened, url, workers, cpus, gpus, options, on_start, say, max_consecutive_failures)
        except BaseException:
            # A run stopped before any worker started (the cluster cannot hold a worker, Ctrl-C while
            # it starts) stores nothing: the study it made is not left to fix a later run's
            # optimizer, seed and space.
            unmade = unmake(opened)
            raise
        if k is None:
            return result_of(opened.study, opened.settings)
        return _run(ray, opened, workload_or_objective, url, workers, cpus, gpus, k, options, on_trial, say,
                    max_consecutive_failures)
    raise AssertionError("unreachable")  # for type checkers: the with block returns or raises


def _prepare(ray: Any, opened: OpenedStudy, url: str, workers: int, cpus: float | None, gpus: float,
             options: dict[str, Any], on_start: Callable | None, say: Callable[[str], None],
             max_consecutive_failures: int | None) -> int | None:
    """What is said before any worker starts: whether the cluster can hold the workers, the
    study's header (``on_start``), the batch size. Returns the batch size, or None when the
    study has no trial left to run."""
    settings = opened.settings
    if opened.remaining:  # what the cluster cannot do is said before the run starts
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if sqlite_path(url) is not None and len(nodes) > 1:
            raise StorageError(f"the Ray cluster has {len(nodes)} nodes and a SQLite file is on this machine only; "
                               "give a storage every node reaches, e.g. --storage postgresql://user@host/db")
        _check_room(nodes, cpus or 1, gpus)
    if on_start is not None:
        on_start(settings, opened.remaining)
    if opened.remaining == 0:
        if max_consecutive_failures is not None:
            refuse_all_failed(opened)
        return None
    return resolve_batch(opened.wanted_batch, opened.workload, settings.sampler, _shares(opened, workers)[0],
                         opened.device, options.get("max_memory"), say)


def _shares(opened: OpenedStudy, workers: int) -> list[int]:
    """Each worker runs its share of the trials left: shares fixed here cannot ask past the
    budget together (workers that each counted the trials left could)."""
    shares = [opened.remaining // workers + (i < opened.remaining % workers) for i in range(workers)]
    return [n for n in shares if n]


def _run(ray: Any, opened: OpenedStudy, workload_or_objective: Any, url: str, workers: int,
         cpus: float | None, gpus: float, k: int, options: dict[str, Any], on_trial: Callable | None,
         say: Callable[[str], None], max_consecutive_failures: int | None) -> TuneResult:
    """Start the workers on the opened study, ``k`` trials at once each, and follow it until they are done."""
    device, max_memory = options.get("device"), options.get("max_memory")
    settings, the_study = opened.settings, opened.study
    shares = _shares(opened, workers)
    threads = max(1, int(cpus or 1))
    # Every worker continues the study as stored now: the workload is read from the study unless
    # it is a Python object (a Workload or an objective), which Ray sends along.
    sent = workload_or_objective if not isinstance(workload_or_objective, str) else None
    shared = {"storage": url, "study": the_study.study_name, "budget": settings.budget, "batch": k,
              "device": device, "max_memory": max_memory, "max_consecutive_failures": max_consecutive_failures}
    # No retries: a worker killed (out of memory, say) would be started again on a fresh share
    # while its trials still count; adamtune's own note says what became of them.
    task_fn = ray.remote(num_cpus=cpus or 1, num_gpus=gpus, max_retries=0)(_worker)
    follow = _Follower(the_study, settings, on_trial)
    started = lost_in_all = 0
    for round_ in range(MAKE_UP_ROUNDS + 1):
        last = round_ == MAKE_UP_ROUNDS
        refs = [task_fn.remote(sent, {**shared, "max_trials": n}, threads, os.getcwd()) for n in shares]
        started += len(refs)
        try:
            errors, lost = _wait(ray, refs, follow, say, last)
        except KeyboardInterrupt:
            # Each worker gets a KeyboardInterrupt and ends its trials as cut short.
            for ref in refs:
                ray.cancel(ref)
            with contextlib.suppress(Exception):
                ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_S)
            # A cancelled task's result is ready at once, while its worker may still be ending its
            # trials (slowly on a loaded machine); Ray's shutdown would then kill it mid-write and
            # leave them running. Wait for them to end, and end those of a worker already gone.
            with contextlib.suppress(Exception):
                _end_lost_workers_trials(the_study, within=CANCELLED_SETTLE_S)
            with contextlib.suppress(Exception):
                follow.poll()
            raise
        follow.poll()
        lost_in_all += lost
        if lost:
            # A lost worker's trials on this machine end at once (their process is gone), in the
            # last round too: none is left running for the end of the run to call in training.
            _end_lost_workers_trials(the_study)
        if errors:
            raise errors[0]
        if not lost:
            break
        left = max(0, settings.budget - counted_trials(the_study))
        if not left or last:
            break
        # What the budget has left runs in another round of workers, as many as the run has
        # (one lost of eight is made up by eight, not by one while seven slots wait).
        n = min(workers, left)
        shares = [left // n + (i < left % n) for i in range(n)]
        say(f"making up for the lost worker{'s' if lost > 1 else ''}: {trials_text(left)} of the budget left, "
            f"{n} worker{'s' if n > 1 else ''} started")
    if lost_in_all:
        _refuse_unfilled(the_study, settings.budget, lost_in_all, started, round_ + 1)
    return result_of(the_study, settings)


def _refuse_unfilled(study: optuna.Study, budget: int, lost: int, started: int, rounds: int) -> None:
    """StudyError when workers were lost and the study has fewer finished trials than its
    budget: a run short of its budget does not end as a success. Its finished trials stay stored."""
    running = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
    done = counted_trials(study) - running  # a running trial counts, but is not done
    if done >= budget:
        return
    in_rounds = f"in {rounds} round{'s' if rounds > 1 else ''}"
    who = (f"every worker this run started was lost ({lost}, {in_rounds})" if lost == started
           else f"{lost} of the {started} workers this run started were lost ({in_rounds})")
    still = ""
    if running:  # another machine's lost worker's, which cannot be seen from here until its heartbeat is stale
        still = (f"; {trials_text(running)} still {'count' if running > 1 else 'counts'} as running: one whose "
                 f"worker was lost ends as cut short once its heartbeat is stale ({GRACE_S / 60:g} minutes)")
    kept = "the finished trials are kept: " if done else ""
    raise StudyError(f"the budget is not filled: {done} of {budget} trials; {who}{still}; {kept}run the same command "
                     "again to make up for the rest")


def _end_lost_workers_trials(study: optuna.Study, within: float = LOST_SETTLE_S) -> None:
    """End the lost trials of workers whose process ran on this machine. Ray reports a worker
    lost as its connection closes, which can be moments before its process has ended (then it
    still looks alive): while trials are running, look again for up to ``within`` seconds
    (another process's trials keep it looking that long)."""
    deadline = time.monotonic() + within
    while True:
        end_lost(study)
        if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            return
        if time.monotonic() > deadline:
            return
        time.sleep(0.2)


def _wait(ray: Any, refs: list, follow: "_Follower", say: Callable[[str], None],
          last: bool) -> tuple[list[AdamtuneError], int]:
    """Follow the study until every worker is done; returns the workers' errors (adamtune's own)
    and how many workers were lost. ``last``: no round of workers follows this one."""
    errors: list[AdamtuneError] = []
    lost = 0
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
        follow.poll()
        for ref in done:
            try:
                out = ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                cause = e.cause
                if isinstance(cause, AdamtuneError):
                    errors.append(cause)
                else:
                    text = f"a worker failed: {type(cause).__name__}: {first_line(cause)}"
                    if "No module named" in text:  # a Python object sent from here refers to a module
                        text += ("; workers import the modules your Workload or objective comes from: make them "
                                 "importable there (installed, or on PYTHONPATH), or pass a workload file path")
                    errors.append(StudyError(text))
                continue
            except ray.exceptions.RayError as e:  # the worker's process or machine was lost
                lost += 1
                then = (f"no new worker is started for it (this run's {MAKE_UP_ROUNDS} rounds making up for lost "
                        "workers are used up): run the same command again to make up for what it leaves of the budget"
                        if last else "once the other workers are done, what it leaves of the budget runs in new workers")
                say(f"a worker was lost ({type(e).__name__}: {first_line(e)}); the trials it was training end as cut "
                    "short once they are found lost (at once where its process ran on this machine, else when "
                    f"their heartbeat is stale), and {then}")
                continue
            for message in out["notices"]:
                say(f"{out['worker']}: {message}")
    return errors, lost


class _Follower:
    """Reads the study and hands ``on_trial`` the trials stored since the last read."""

    def __init__(self, study: Any, settings: StudySettings, on_trial: Callable | None) -> None:
        self.study, self.settings, self.on_trial = study, settings, on_trial
        # the trials finished before the workers start are not this run's to show
        self.seen = {t.number for t in result_of(study, settings).trials if t.finished} if on_trial else set()

    def poll(self) -> None:
        if self.on_trial is None:
            return
        now = result_of(self.study, self.settings)
        new = [t for t in now.trials if t.finished and t.number not in self.seen]
        for t in new:
            self.seen.add(t.number)
            if not t.interrupted:
                self.on_trial(t, now)
