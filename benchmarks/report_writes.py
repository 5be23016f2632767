"""Writing a batch's evaluations to a SQLite study: one commit per trial vs one transaction.

    python benchmarks/report_writes.py               # 16 trials x 16 evaluations, best of 5
    python benchmarks/report_writes.py --trials 64

What a 16-trial batch of digits-mlp writes over a run (16 evaluations of every member), two
ways in the same run, alternating: ``trial.report`` per trial (Optuna's public path, one
commit each) and ``adamtune.storage.report_many`` (all members of an evaluation in one
transaction). Each round uses a fresh SQLite file opened as adamtune opens it (WAL mode).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import optuna

from adamtune.storage import open_storage, report_many

warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def write_all(url: str, n_trials: int, n_evals: int, together: bool) -> float:
    study = optuna.create_study(storage=open_storage(url))
    trials = [study.ask() for _ in range(n_trials)]
    t = time.perf_counter()
    for e in range(n_evals):
        if together:
            report_many([(trial, 0.5) for trial in trials], step=25 * (e + 1))
        else:
            for trial in trials:
                trial.report(0.5, 25 * (e + 1))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--evals", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    best = {False: float("inf"), True: float("inf")}
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.rounds):
            for together in (False, True):
                url = f"sqlite:///{d}/r{r}-{together}.db"
                best[together] = min(best[together], write_all(url, args.trials, args.evals, together))
    n = args.trials * args.evals
    print(f"{n} reports ({args.trials} trials x {args.evals} evaluations), SQLite in WAL mode, best of {args.rounds}")
    print(f"trial.report, one commit each      {best[False]:7.3f} s")
    print(f"report_many, one transaction each  {best[True]:7.3f} s  ({best[False] / best[True]:.1f}x faster)")


if __name__ == "__main__":
    main()
