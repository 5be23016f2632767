"""`adamtune confirm`: the candidates of each seed trained as one stacked model vs one at a time.

    python benchmarks/confirm_stacked.py [--top 3] [--seeds 5] [--repeats 3]

Runs the demo's study (digits-mlp, 16 trials, seed 0) into a temporary SQLite file, then retrains
its `--top` best trials with `--seeds` other seeds both ways, with the same engine code
`adamtune confirm` uses: `train_members` (one vmapped stack per seed) and `train_trial` (each
candidate alone, as a plain loop would). Prints the best wall time of `--repeats` for each, the
ratio, and the largest relative difference between the two ways' values (float32 drift).
"""

import argparse
import os
import tempfile
import time

import torch

import adamtune
from adamtune.config import Config
from adamtune.engine import data_seed, init_seed, train_trial
from adamtune.engine.batched import train_members
from adamtune.trials import ranked
from adamtune.workloads import load_workload


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    with tempfile.TemporaryDirectory() as tmp:
        result = adamtune.tune("digits-mlp", storage=f"sqlite:///{tmp}/demo.db", notice=lambda m: None)
    w = load_workload("digits-mlp")
    candidates = ranked(result.trials, "minimize")[:args.top]
    configs = [Config(**t.config) for t in candidates]

    def stacked():
        return [[o.value for o in train_members(w, configs, init_seeds=[init_seed(r, 0)] * len(configs),
                                                data_seed=data_seed(r))] for r in range(1, args.seeds + 1)]

    def alone():
        return [[train_trial(w, c, init_seed=init_seed(r, 0), data_seed=data_seed(r)).value for c in configs]
                for r in range(1, args.seeds + 1)]

    times, values = {}, {}
    for _ in range(args.repeats):
        for name, fn in (("stacked", stacked), ("one at a time", alone)):  # interleaved
            start = time.perf_counter()
            values[name] = fn()
            times[name] = min(times.get(name, float("inf")), time.perf_counter() - start)
    # float32 over 400 steps: the two orders of summation drift apart a little, as any two kernels do
    drift = max(abs(a - b) / abs(b) for ra, rb in zip(values["stacked"], values["one at a time"])
                for a, b in zip(ra, rb))
    n = args.top * args.seeds
    print(f"confirm of digits-mlp: top {args.top} x {args.seeds} seeds = {n} trainings of {w.steps} steps, "
          f"torch threads {torch.get_num_threads()}")
    for name in ("stacked", "one at a time"):
        print(f"  {name:<14} {times[name]:6.2f} s   ({n / times[name] * 60:5.0f} trainings/min)")
    print(f"  ratio          {times['one at a time'] / times['stacked']:6.2f}x   values: largest relative difference "
          f"{drift:.1e}")


if __name__ == "__main__":
    main()
