"""One process against --workers N on this machine: the same study, timed side by side.

    python benchmarks/workers.py                 # digits-mlp, budget 16, 2 workers
    python benchmarks/workers.py --budget 64 --workers 4 --rounds 2

Three ways, each on a fresh SQLite file, interleaved over the rounds: ``adamtune.tune`` in this
process (batched, this process's threads), ``tune_on_ray`` starting its own local Ray cluster
(what `adamtune tune --workers N` pays: Ray's start, then each worker importing torch), and
``tune_on_ray`` on a cluster started just before it (without Ray's own start; its fresh worker
processes still start and import torch). Every way trains the same trials (the same seed); the
study's values are checked to agree.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import tempfile
import time

import torch

import adamtune
from adamtune.cluster import tune_on_ray

SPACE = ["lr=1e-5:1e-2", "weight_decay=1e-5:0.3", "beta1=0.8:0.999"]


def _run(way: str, budget: int, workers: int) -> tuple[float, list[float]]:
    with tempfile.TemporaryDirectory() as d:
        kwargs = dict(budget=budget, pruner="none", storage=f"sqlite:///{d}/w.db", space=SPACE, notice=lambda m: None)
        t = time.perf_counter()
        if way == "one process":
            r = adamtune.tune("digits-mlp", **kwargs)
        else:
            r = tune_on_ray("digits-mlp", workers=workers, **kwargs)
        elapsed = time.perf_counter() - t
    return elapsed, sorted(x.value for x in r.trials)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    import ray

    ways = ["one process", f"{args.workers} workers, Ray started by the run", f"{args.workers} workers, Ray up already"]
    times: dict[str, list[float]] = {w: [] for w in ways}
    values = {}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads here; digits-mlp, budget {args.budget}, {args.rounds} rounds")
    for _ in range(args.rounds):
        for way in ways:
            if way.endswith("already"):
                ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
            try:
                elapsed, vals = _run(way, args.budget, args.workers)
            finally:
                if ray.is_initialized():
                    ray.shutdown()
            times[way].append(elapsed)
            values[way] = vals
    print(f"{'way':<42} {'best s':>8} {'median s':>9}  vs one process")
    base = min(times[ways[0]])
    for way in ways:
        best = min(times[way])
        print(f"{way:<42} {best:8.2f} {statistics.median(times[way]):9.2f}  {base / best:5.2f}x")
    ref = values[ways[0]]
    worst = max(abs(a - b) / abs(b) for way in ways[1:] for a, b in zip(values[way], ref, strict=True))
    print(f"the same trials each way: largest relative difference of a value {worst:.1e}")


if __name__ == "__main__":
    main()
