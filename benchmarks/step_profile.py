"""Where one stacked training step's time goes, op by op: inside the step vs the same call alone.

    python benchmarks/step_profile.py                  # digits-mlp, K=16, 2 threads
    python benchmarks/step_profile.py --k 64 --threads 1 --top 30

Runs the written-out stacked step of K digits-mlp members (forward, backward, BatchedAdamW,
set up as the engine sets it up) under torch.profiler and prints, per aten operation and input
shapes, its self time per step. Every operation call of one step is also recorded (a
dispatch mode) and replayed alone on the same tensors, many times in a row: the "alone" column
is what those calls cost with their inputs in the caches and nothing in between. The step's
wall time is measured without the profiler.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from step_costs import best_ms, stacked_steps
from adamtune.workloads import load_workload


def _key(name: str, shapes) -> tuple:
    return name, tuple(tuple(s) for s in shapes if s)


class _Recorder(TorchDispatchMode):
    """Keeps every aten call of the step (function, arguments) to replay it later."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.calls.append((func, args, kwargs))
        return func(*args, **kwargs)


def _alone_us(func, args, kwargs, repeat: int = 20) -> float:
    for _ in range(3):
        func(*args, **kwargs)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        func(*args, **kwargs)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100, help="profiled steps (default 100)")
    ap.add_argument("--top", type=int, default=20, help="rows shown (default 20)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    w = load_workload("digits-mlp")
    x, y = w.train_data[0][: w.batch_size], w.train_data[1][: w.batch_size]
    _, step, _ = stacked_steps(w, args.k, x, y)["written out"]
    wall = best_ms(step)

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.steps):
            step()
    in_step: dict[tuple, float] = defaultdict(float)
    calls: dict[tuple, float] = defaultdict(float)
    for e in prof.key_averages(group_by_input_shape=True):
        if e.key.startswith("aten::"):
            key = _key(e.key, e.input_shapes)
            in_step[key] += e.self_cpu_time_total / args.steps
            calls[key] += e.count / args.steps

    recorder = _Recorder()
    with recorder:
        step()
    alone: dict[tuple, float] = defaultdict(float)
    with torch.no_grad():  # replayed as plain calls: an out= product (the narrow head) refuses autograd
        for func, a, kw in recorder.calls:
            shapes = [t.shape for t in a if isinstance(t, torch.Tensor)]
            alone[_key(func._schema.name, shapes)] += _alone_us(func, a, kw)

    print(f"digits-mlp, K={args.k}, {torch.get_num_threads()} thread(s), torch {torch.__version__}; "
          f"step {wall * 1e3:.0f} us (best, no profiler); {len(recorder.calls)} aten calls a step")
    print(f"{'operation':<26} {'input shapes':<44} {'calls':>5} {'in step':>9} {'alone':>9} {'ratio':>6}")
    rows = sorted(in_step, key=lambda k: -in_step[k])
    for key in rows[: args.top]:
        name, shapes = key
        shown = " ".join("x".join(map(str, s)) for s in shapes)[:44]
        a = alone.get(key)
        ratio = f"{in_step[key] / a:5.1f}x" if a else "     -"
        print(f"{name:<26} {shown:<44} {calls[key]:>5.0f} {in_step[key]:>7.0f}us "
              f"{(f'{a:.0f}us' if a else '-'):>9} {ratio}")
    matched = [k for k in in_step if k in alone]
    print(f"all aten ops: {sum(in_step.values()):.0f} us a step in the step (profiler self time), "
          f"{sum(alone.values()):.0f} us alone; the ops found both ways: "
          f"{sum(in_step[k] for k in matched):.0f} us vs {sum(alone[k] for k in matched):.0f} us")


if __name__ == "__main__":
    main()
