"""Which engine is faster for this workload on this machine: a short timing probe.

Batching wins by a wide margin for small and medium models (one stacked matmul instead of K
small ones), but not everywhere: on some CPUs large stacked activations run slower than K
models one after another. ``--batch auto`` therefore times both engines on a few steps before a
study starts and batches only where batching is not clearly slower.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from adamtune.config import Config
from adamtune.engine.batched import train_members
from adamtune.engine.sequential import train_trial
from adamtune.workloads import Workload

#: Training steps per timed run: enough for the per-step cost to show, little next to a study.
PROBE_STEPS = 4
#: Trials shorter than this are batched without a probe: it would cost a good part of them.
PROBE_MIN_STEPS = 100


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds to train ``k`` trials for ``steps`` steps each way (best of the repeats)."""

    k: int
    steps: int
    batched: float
    sequential: float

    def batching_is_slower(self, margin: float = 1.25) -> bool:
        """Whether batching took more than ``margin`` times the sequential time."""
        return self.batched > margin * self.sequential


def time_engines(workload: Workload, k: int, device: torch.device | str, optimizer: str,
                 repeats: int = 2) -> Timing:
    """Time ``k`` trials of ``PROBE_STEPS`` steps batched and one after another, interleaved.

    The batched way runs once untimed (vmap's first-call costs), then each way ``repeats``
    times, alternating; the best time of each way counts, since shared machines change speed from second
    to second. Random state is restored afterwards, so the study that follows is unchanged.

    Raises:
        NotBatchable: the model cannot be vmapped.
    """
    short = dataclasses.replace(workload, steps=PROBE_STEPS, eval_every=PROBE_STEPS)
    configs = [Config(optimizer=optimizer)] * k
    seeds = list(range(k))

    def batched() -> None:
        train_members(short, configs, init_seeds=seeds, data_seed=0, device=device)

    def sequential() -> None:
        for seed in seeds:
            train_trial(short, configs[0], init_seed=seed, data_seed=0, device=device)

    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    best = {batched: float("inf"), sequential: float("inf")}
    cuda = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        batched()
        for _ in range(repeats):
            for way in best:
                sync()
                t = time.perf_counter()
                way()
                sync()
                best[way] = min(best[way], time.perf_counter() - t)
    return Timing(k, PROBE_STEPS, best[batched], best[sequential])
