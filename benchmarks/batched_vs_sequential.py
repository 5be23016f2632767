"""Batched vs sequential vs a plain Optuna loop: the same trials, three ways, in one run.

    python benchmarks/batched_vs_sequential.py            # digits-mlp K=16, K=64; charlm K=8
    python benchmarks/batched_vs_sequential.py --quick    # digits-mlp K=16 only
    python benchmarks/batched_vs_sequential.py --case digits-mlp:64 --rounds 2
    python benchmarks/batched_vs_sequential.py --rounds 5 --device cuda
    python benchmarks/batched_vs_sequential.py --quick --way "adamtune batched" --rounds 5

Every way trains the same K configurations (lr, weight_decay, beta1 from the same scrambled
Sobol points) for the workload's full number of steps with no pruning, and evaluates at the
same steps. The plain loop is what a user writes by hand: an Optuna objective with
torch.optim.AdamW and a shuffled DataLoader, one trial after another, in Optuna's in-memory
storage. adamtune's two ways keep every trial in a real SQLite file, as the product does.

Shared and virtual machines change speed from second to second, so the three ways run in
``--rounds`` interleaved rounds (the order rotates each round) after one warm-up run of each
(imports, first-call costs); the table gives each way's best and median wall time, the
speedups of both, and the speedup within each round (the plain loop's time that round over this
way's), which a slow spell of the machine shifts less when it spans the round. The matmul peak
is the best of several timed 1024x1024 fp32 products.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable

import optuna
import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

import adamtune
from adamtune.workloads import load_workload

warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def matmul_peak_gflops(device: str, n: int = 1024, repeat: int = 10, rounds: int = 15) -> float:
    """Best-of-``rounds`` fp32 matmul throughput: what this machine can do when left alone."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    best = 0.0
    for _ in range(rounds + 1):
        sync()
        t = time.perf_counter()
        for _ in range(repeat):
            a @ b
        sync()
        best = max(best, 2 * n**3 * repeat / (time.perf_counter() - t) / 1e9)
    return best


def flops_per_trial(w: adamtune.Workload) -> float:
    """Training (forward+backward) and evaluation FLOPs of one trial, counted by torch."""
    model = w.model()
    x, y = w.train_data[0][: w.batch_size], w.train_data[1][: w.batch_size]
    with FlopCounterMode(display=False) as fc:
        w.loss(model(x), y).backward()
    train = fc.get_total_flops() * w.steps
    xv, yv = w.valid_data
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        w.loss(model(xv), yv)
    return train + fc.get_total_flops() * len(w.evaluation_steps)


def plain_optuna(w: adamtune.Workload, k: int, device: str, seed: int = 0) -> float:
    """The hand-written baseline: one trial at a time with torch.optim.AdamW."""
    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-5, 1e-2, log=True)
        wd = trial.suggest_float("weight_decay", 1e-5, 0.3, log=True)
        beta1 = 1 - trial.suggest_float("1-beta1", 1e-3, 0.2, log=True)
        torch.manual_seed(trial.number)
        model = w.model().to(device)
        xv, yv = w.valid_data[0].to(device), w.valid_data[1].to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(beta1, 0.999), weight_decay=wd)
        loader = DataLoader(TensorDataset(*w.train_data), batch_size=w.batch_size, shuffle=True, drop_last=True)
        step, best = 0, float("inf")
        while step < w.steps:
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                step += 1
                opt.zero_grad()
                w.loss(model(x), y).backward()
                opt.step()
                if step in w.evaluation_steps:
                    with torch.no_grad():
                        model.eval()
                        best = min(best, float(w.loss(model(xv), yv)))
                        model.train()
                    trial.report(best, step)
                if step >= w.steps:
                    break
        return best

    study = optuna.create_study(sampler=optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed))
    t = time.perf_counter()
    study.optimize(objective, n_trials=k)
    return time.perf_counter() - t


def adamtune_run(w: adamtune.Workload, k: int, batch: int, device: str) -> float:
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        r = adamtune.tune(w, budget=k, batch=batch, pruner="none", storage=f"sqlite:///{d}/b.db", device=device,
                          space=["lr=1e-5:1e-2", "weight_decay=1e-5:0.3", "beta1=0.8:0.999"])
        elapsed = time.perf_counter() - t
    assert len(r.trials) == k
    return elapsed


WAYS: dict[str, Callable[[adamtune.Workload, int, str], float]] = {
    "plain Optuna loop": plain_optuna,
    "adamtune sequential": lambda w, k, device: adamtune_run(w, k, 1, device),
    "adamtune batched": lambda w, k, device: adamtune_run(w, k, k, device),
}


def warm_up(device: str) -> None:
    """Pay the one-off costs (imports of the SQL stack, first calls) before any timing."""
    w = dataclasses.replace(load_workload("digits-mlp"), steps=25)
    for way in WAYS.values():
        way(w, 2, device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="digits-mlp K=16 only")
    ap.add_argument("--case", action="append", metavar="WORKLOAD:K", default=[],
                    help="run only these cases, e.g. --case digits-mlp:64 --case charlm:8")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timed runs of every way (default 3)")
    ap.add_argument("--way", action="append", choices=list(WAYS), default=[],
                    help="time only these ways (repeatable), e.g. to compare two commits' batched engine; "
                         "speedups need the plain loop")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    ways = [way for way in WAYS if way in args.way] if args.way else list(WAYS)
    cases = [("digits-mlp", 16)] if args.quick else [("digits-mlp", 16), ("digits-mlp", 64), ("charlm", 8)]
    if args.case:
        try:
            cases = [(c.rsplit(":", 1)[0], int(c.rsplit(":", 1)[1])) for c in args.case]
        except (IndexError, ValueError):
            ap.error(f"--case must look like WORKLOAD:K (e.g. digits-mlp:64), got {args.case}")
        for name, _ in cases:
            try:
                load_workload(name)
            except adamtune.AdamtuneError as e:
                ap.error(f"--case {name}: {e}")
    warm_up(args.device)
    peak = matmul_peak_gflops(args.device)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}; best fp32 matmul {peak:.1f} GFLOP/s; "
          f"{args.rounds} rounds")
    header = (f"{'workload':<11} {'K':>3} | {'way':<20} {'best s':>7} {'median s':>8} {'trials/min':>10} "
              f"{'GFLOP/s':>8} {'% peak':>6} {'speedup':>8} {'(median)':>8}  per round")
    print(header)
    print("-" * len(header))
    for name, k in cases:
        w = load_workload(name)
        flops = flops_per_trial(w) * k
        times: dict[str, list[float]] = {way: [] for way in ways}
        for r in range(args.rounds):
            for way in ways[r % len(ways):] + ways[:r % len(ways)]:
                times[way].append(WAYS[way](w, k, args.device))
        best = {way: min(t) for way, t in times.items()}
        median = {way: statistics.median(t) for way, t in times.items()}
        plain = "plain Optuna loop"
        for way in ways:
            g = flops / best[way] / 1e9
            if plain in times:
                rounds = " ".join(f"{p / t:.1f}x" for p, t in zip(times[plain], times[way], strict=True))
                speedups = f"{best[plain] / best[way]:>7.1f}x {median[plain] / median[way]:>7.1f}x  {rounds}"
            else:
                speedups = f"{'-':>8} {'-':>8}"
            print(f"{name:<11} {k:>3} | {way:<20} {best[way]:>7.2f} {median[way]:>8.2f} {k / best[way] * 60:>10.1f} "
                  f"{g:>8.2f} {100 * g / peak:>5.1f}% {speedups}", flush=True)


if __name__ == "__main__":
    main()
