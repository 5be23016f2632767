"""Batched vs sequential vs a plain Optuna loop: the same trials, three ways, in one run.

    python benchmarks/batched_vs_sequential.py            # digits-mlp K=16, K=64; charlm K=8
    python benchmarks/batched_vs_sequential.py --quick    # digits-mlp K=16 only

Every way trains the same K configurations (lr, weight_decay, beta1 from the same scrambled
Sobol points) for the workload's full number of steps with no pruning, and evaluates at the
same steps. The plain loop is what a user writes by hand: an Optuna objective with
torch.optim.AdamW and a shuffled DataLoader, one trial after another.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import warnings

import optuna
import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

import adamtune
from adamtune.workloads import load_workload

warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def matmul_peak_gflops(device: str, n: int = 1024, repeat: int = 10) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t = time.perf_counter()
    for _ in range(repeat):
        a @ b
    sync()
    return 2 * n**3 * repeat / (time.perf_counter() - t) / 1e9


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="digits-mlp K=16 only")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    cases = [("digits-mlp", 16)] if args.quick else [("digits-mlp", 16), ("digits-mlp", 64), ("charlm", 8)]
    peak = matmul_peak_gflops(args.device)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; measured fp32 matmul peak {peak:.1f} GFLOP/s")
    header = f"{'workload':<11} {'K':>3} | {'way':<20} {'wall s':>8} {'trials/min':>10} {'GFLOP/s':>8} {'% peak':>6} {'speedup':>8}"
    print(header)
    print("-" * len(header))
    for name, k in cases:
        w = load_workload(name)
        flops = flops_per_trial(w) * k
        times = {
            "plain Optuna loop": plain_optuna(w, k, args.device),
            "adamtune sequential": adamtune_run(w, k, 1, args.device),
            "adamtune batched": adamtune_run(w, k, k, args.device),
        }
        base = times["plain Optuna loop"]
        for way, t in times.items():
            g = flops / t / 1e9
            print(f"{name:<11} {k:>3} | {way:<20} {t:>8.1f} {k / t * 60:>10.1f} {g:>8.2f} {100 * g / peak:>5.1f}% {base / t:>7.1f}x")


if __name__ == "__main__":
    main()
