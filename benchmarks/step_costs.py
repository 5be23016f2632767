"""One training step, plain vs stacked: where a batched step's time goes (digits-mlp).

    python benchmarks/step_costs.py            # K=16, one thread
    python benchmarks/step_costs.py --k 64 --threads 2

Times, as the best of many short blocks (what the machine does when left alone): one plain
model step with torch.optim.AdamW (forward+backward, then the optimizer), and one step of K
stacked members (forward+backward, then adamtune's BatchedAdamW) two ways: under
``torch.vmap(functional_call(...))`` and written out as batched matmuls (what the engine runs
for a plain Sequential such as this MLP); plus the FLOP rate of a bare bmm of the stacked
layer's shape and of a 1024x1024 matmul.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch.func import functional_call, stack_module_state

from adamtune.engine.batched import adopt_grad_layout
from adamtune.engine.stacked import member_losses, stacked_forward
from adamtune.optim import BatchedAdamW, matrix_decay_mask
from adamtune.workloads import load_workload


def best_ms(fn, n: int = 10, rounds: int = 15) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n * 1e3)
    return best


def stacked_steps(w, k: int, x: torch.Tensor, y: torch.Tensor) -> dict:
    """``{way: (forward+backward, whole step, fused)}`` for K stacked members of ``w``'s model,
    under vmap and written out, as the engine sets them up (gradient layout, BatchedAdamW)."""
    models = [w.model() for _ in range(k)]
    base = copy.deepcopy(models[0]).to("meta")
    stacked_params, buffers = stack_module_state(models)
    vmapped = torch.vmap(lambda p, b, xx, yy: w.loss(functional_call(base, (p, b), (xx,)), yy),
                         in_dims=(0, 0, None, None))
    forward, losses = stacked_forward(base), member_losses(w.loss)
    ways = {
        "vmap": lambda p: vmapped(p, buffers, x, y),
        "written out": lambda p: losses(forward(p, x), y),
    }
    steps = {}
    for name, loss in ways.items():
        params = {n: t.detach().clone().requires_grad_() for n, t in stacked_params.items()}
        params = adopt_grad_layout(params, lambda: loss(params).sum())
        bopt = BatchedAdamW(list(params.values()), lr=1e-3, decay_mask=matrix_decay_mask(params.values()))

        def stacked_fb(loss=loss, params=params, bopt=bopt) -> None:
            bopt.zero_grad()
            loss(params).sum().backward()

        def stacked_step(stacked_fb=stacked_fb, bopt=bopt) -> None:
            stacked_fb()
            bopt.step()

        steps[name] = (stacked_fb, stacked_step, bopt.fused)
    return steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    k = args.k
    w = load_workload("digits-mlp")
    x, y = w.train_data[0][: w.batch_size], w.train_data[1][: w.batch_size]

    model = w.model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def plain_fb() -> None:
        model.zero_grad()
        w.loss(model(x), y).backward()

    def plain_step() -> None:
        plain_fb()
        opt.step()

    steps = stacked_steps(w, k, x, y)
    flops = 3 * 2 * w.batch_size * sum(p.numel() for p in model.parameters() if p.ndim == 2)
    a, b = torch.randn(k, w.batch_size, 128), torch.randn(k, 128, 128)
    m1, m2 = torch.randn(1024, 1024), torch.randn(1024, 1024)
    pf, ps = best_ms(plain_fb), best_ms(plain_step)
    timed = {name: (best_ms(fb), best_ms(step), fused) for name, (fb, step, fused) in steps.items()}
    bmm = 2 * k * w.batch_size * 128 * 128 / best_ms(lambda: torch.bmm(a, b)) / 1e6
    mm = 2 * 1024**3 / best_ms(lambda: m1 @ m2, n=3) / 1e6
    print(f"digits-mlp, K={k}, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    print(f"plain step                    {ps:7.3f} ms  (forward+backward {pf:.3f}, torch.optim.AdamW {ps - pf:.3f})")
    for name, (sf, ss, fused) in timed.items():
        print(f"stacked step, K={k:<3} {name:<11} {ss:7.3f} ms  (forward+backward {sf:.3f}, "
              f"BatchedAdamW {ss - sf:.3f}, fused={fused})")
        print(f"  per member-step             {ss / k:7.3f} ms  ({ps * k / ss:.1f}x the plain step); "
              f"{flops * k / ss / 1e6:.1f} GFLOP/s")
    print(f"stacked step FLOPs {flops * k / 1e6:.0f} MFLOP; "
          f"bmm of the middle layer {bmm:.0f} GFLOP/s; 1024x1024 matmul {mm:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
