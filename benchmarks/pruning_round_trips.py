"""Asking the pruner about a batch's members: one by one vs from one read of the study, side by side.

    python benchmarks/pruning_round_trips.py               # digits-mlp, budget 32, ASHA, K=16
    python benchmarks/pruning_round_trips.py --budget 64 --batch 32 --pruner median

Runs the same batched study (fresh SQLite file, same seed) twice: once with the batched
engine asking each member's ``trial.should_prune()`` in turn, as it did before
``storage.should_prune_many``, and once with ``should_prune_many``. Prints, for the pruning
alone, the SQL statements, the commits and the wall time, and the study's whole wall time;
both runs must prune the same trials (checked).
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
import warnings

import optuna
import sqlalchemy

import adamtune
import adamtune.engine.batched as batched

warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.WARNING)

counts: collections.Counter = collections.Counter()
in_pruning = [False]


@sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "before_cursor_execute")
def _statement(*_args) -> None:
    if in_pruning[0]:
        counts["statements"] += 1


@sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "commit")
def _commit(*_args) -> None:
    if in_pruning[0]:
        counts["commits"] += 1


def one_by_one(trials):
    return [t.should_prune() for t in trials]


def run(ask, args) -> tuple[dict, list[str]]:
    counts.clear()

    def timed(trials):
        in_pruning[0] = True
        t = time.perf_counter()
        try:
            return ask(trials)
        finally:
            counts["seconds"] += time.perf_counter() - t
            in_pruning[0] = False

    batched.should_prune_many = timed
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        r = adamtune.tune(args.workload, budget=args.budget, batch=args.batch, pruner=args.pruner,
                          storage=f"sqlite:///{d}/p.db")
        counts["study seconds"] = time.perf_counter() - t
    return dict(counts), [t.state.value for t in r.trials]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="digits-mlp")
    ap.add_argument("--budget", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pruner", default="asha", choices=["asha", "median"])
    args = ap.parse_args()
    many = batched.should_prune_many
    run(many, argparse.Namespace(**{**vars(args), "budget": 2, "batch": 2}))  # imports, first calls
    rows = [("one by one (trial.should_prune)", *run(one_by_one, args)),
            ("should_prune_many", *run(many, args))]
    assert rows[0][2] == rows[1][2], "the two ways pruned different trials"
    pruned = rows[0][2].count("pruned")
    print(f"{args.workload}, budget {args.budget}, batch {args.batch}, {args.pruner}: {pruned} trials pruned either way")
    print(f"{'pruning asked':34s} {'statements':>10s} {'commits':>8s} {'pruning s':>10s} {'study s':>8s}")
    for name, c, _ in rows:
        print(f"{name:34s} {c.get('statements', 0):10d} {c.get('commits', 0):8d} "
              f"{c.get('seconds', 0.0):10.2f} {c['study seconds']:8.1f}")


if __name__ == "__main__":
    main()
