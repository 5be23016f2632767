"""What a batched study asks of its database: SQL statements and commits, phase by phase.

    python benchmarks/study_writes.py                  # digits-mlp, 16 trials, K=16, 100 steps
    python benchmarks/study_writes.py --budget 32 --steps 400

Runs one batched study (fresh SQLite file, no pruning) and counts, with SQLAlchemy's events,
the statements and commits of asking Optuna for the trials (``study.ask``, the suggested
parameters, adamtune's attributes), of reporting the members' evaluations, of telling Optuna
how each trial ended, and of everything else (creating the study, training, reading it
back). The counts are the same on any machine; run it at two commits to compare them. The
seconds (wall time of each phase, one run; "everything else" includes training) are this
machine's at this moment only: compare them between interleaved runs.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import tempfile
import time
import warnings

import optuna
import sqlalchemy

import adamtune
import adamtune.engine.batched as batched
import adamtune.study as study_module
from adamtune.workloads import load_workload

warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.WARNING)

counts: collections.Counter = collections.Counter()
phase = ["everything else"]


@sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "before_cursor_execute")
def _statement(*_args) -> None:
    counts[phase[0], "statements"] += 1


@sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "commit")
def _commit(*_args) -> None:
    counts[phase[0], "commits"] += 1


seconds: collections.Counter = collections.Counter()


def _in_phase(fn, name):
    def counted(*args, **kwargs):
        outer, phase[0] = phase[0], name
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - t
            phase[0] = outer
    return counted


def _counted_generator(fn, name):
    def counted(*args, **kwargs):
        it = fn(*args, **kwargs)
        while True:
            outer, phase[0] = phase[0], name
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                seconds[name] += time.perf_counter() - t
                phase[0] = outer
            yield item
    return counted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="digits-mlp")
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    runner = study_module._Runner
    runner._ask = _in_phase(runner._ask, "asking for the trials")
    if hasattr(study_module, "ask_many"):  # the batch's trials are created outside _ask
        study_module.ask_many = _counted_generator(study_module.ask_many, "asking for the trials")
    tell = "_done_many" if hasattr(runner, "_done_many") else "_done"  # before 8c66d33: one trial at a time
    setattr(runner, tell, _in_phase(getattr(runner, tell), "telling the results"))
    batched.report_many = _in_phase(batched.report_many, "reporting the evaluations")
    w = dataclasses.replace(load_workload(args.workload), steps=args.steps)
    with tempfile.TemporaryDirectory() as d:
        start = time.perf_counter()
        r = adamtune.tune(w, budget=args.budget, batch=args.budget, pruner="none", storage=f"sqlite:///{d}/w.db",
                          space=["lr=1e-5:1e-2", "weight_decay=1e-5:0.3", "beta1=0.8:0.999"])
        total = time.perf_counter() - start
    assert len(r.trials) == args.budget
    seconds["everything else"] = total - sum(seconds.values())
    print(f"{args.workload}, {args.budget} trials, batch {args.budget}, {args.steps} steps "
          f"({len(w.evaluation_steps)} evaluations), no pruning, fresh SQLite file")
    print(f"{'':30s} {'statements':>10s} {'commits':>8s} {'seconds':>8s}")
    for name in ("asking for the trials", "reporting the evaluations", "telling the results", "everything else"):
        print(f"{name:30s} {counts[name, 'statements']:10d} {counts[name, 'commits']:8d} {seconds[name]:8.3f}")
    print(f"{'the whole study':30s} {sum(v for (_, kind), v in counts.items() if kind == 'statements'):10d} "
          f"{sum(v for (_, kind), v in counts.items() if kind == 'commits'):8d} {total:8.3f}")


if __name__ == "__main__":
    main()
