"""One evaluation of K members, batched vs one model after another, by examples per call.

    python benchmarks/evaluation_costs.py                          # charlm, K=8
    python benchmarks/evaluation_costs.py --workload digits-mlp --k 16

Times (best of ``--rounds``) one evaluation of K freshly built members on the whole
validation set: the K models one after another with the workload's ``eval_batch_size``, and
the K members stacked (as the batched engine runs them), each member seeing
``eval_batch_size / K`` examples per call (what the engine does) and the whole
``eval_batch_size`` per call (what it did before 6e42c80). Also one training step's forward
and backward: the K models one after another vs the stack.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch.func import stack_module_state

from adamtune.engine.batched import _batched_functions, adopt_grad_layout
from adamtune.engine.evaluate import evaluate
from adamtune.workloads import load_workload


def best_s(fn, rounds: int) -> float:
    fn()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="charlm")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    w, k = load_workload(args.workload), args.k
    models = [w.model() for _ in range(k)]
    base = copy.deepcopy(models[0]).to("meta")
    params, buffers = stack_module_state(models)
    forward, loss, runner = _batched_functions(base, w)
    x, y = w.train_data[0][: w.batch_size], w.train_data[1][: w.batch_size]
    params = adopt_grad_layout(params, lambda: loss(params, buffers, x, y).sum())

    def one_after_another() -> None:
        for m in models:
            evaluate(m, w, "cpu")

    def stacked(members: int) -> None:
        evaluate(lambda xx: forward(params, buffers, xx), w, "cpu", batched=True, members=members)

    def train_one_after_another() -> None:
        for m in models:
            m.zero_grad()
            w.loss(m(x), y).backward()

    def train_stacked() -> None:
        for p in params.values():
            p.grad = None
        loss(params, buffers, x, y).sum().backward()

    base.eval()
    for m in models:
        m.eval()
    per_member = -(-w.eval_batch_size // k)
    print(f"{w.name}, K={k}, {w.valid_data[0].shape[0]} validation examples, eval_batch_size {w.eval_batch_size}, "
          f"{torch.get_num_threads()} thread(s), stacked by {runner}; best of {args.rounds}")
    rows = [
        (f"evaluation, the {k} models one after another ({w.eval_batch_size} a call)", best_s(one_after_another, args.rounds), "s"),
        (f"evaluation, stacked, {per_member} examples per member a call", best_s(lambda: stacked(k), args.rounds), "s"),
        (f"evaluation, stacked, {w.eval_batch_size} examples per member a call", best_s(lambda: stacked(1), args.rounds), "s"),
    ]
    base.train()
    for m in models:
        m.train()
    rows += [
        ("training step forward+backward, one after another", best_s(train_one_after_another, args.rounds) * 1e3, "ms"),
        ("training step forward+backward, stacked", best_s(train_stacked, args.rounds) * 1e3, "ms"),
    ]
    for label, value, unit in rows:
        print(f"{label:62s} {value:8.3f} {unit}")

if __name__ == "__main__":
    main()
