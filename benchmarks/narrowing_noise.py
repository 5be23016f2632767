"""How often the next search space narrows a hyperparameter that does not matter, and one that does.

Synthetic studies, no training: lr and weight_decay drawn by a scrambled Sobol sequence (as
Optuna's QMC sampler draws them), objective = (log10 lr + 3.2)^2 + noise, so only lr matters.
For each study size, over many seeds, prints how often ``next_space`` narrows each window and
whether the narrowed lr window still holds the optimum. Not a speed benchmark: the quality
figure behind the narrowing rule in ``adamtune/analysis/_next.py`` (``NARROW_CHANCE``).

    python benchmarks/narrowing_noise.py [--seeds 200]
"""

from __future__ import annotations

import argparse
import math
import random

from scipy.stats import qmc

from adamtune.analysis import next_space
from adamtune.results import StudySettings
from adamtune.space import Dimension, SearchSpace
from adamtune.trials import Curve, TrialRecord, TrialState

LR = Dimension("lr", 1e-5, 1e-2, "log")
WD = Dimension("weight_decay", 1e-5, 0.3, "log")
OPTIMUM = 10 ** -3.2


def study(n: int, seed: int) -> tuple[list[TrialRecord], StudySettings]:
    settings = StudySettings(workload="digits-mlp", workload_name="digits-mlp", optimizer="adamw", task="generic",
                             space=SearchSpace("adamw", (LR, WD)), budget=n, seed=0, sampler="quasi-random",
                             pruner="none", metric="val_loss", direction="minimize")
    rng = random.Random(seed)
    trials = []
    for i, (u, w) in enumerate(qmc.Sobol(2, scramble=True, seed=seed).random(n)):
        lr, wd = LR.from_unit(u), WD.from_unit(w)
        value = (math.log10(lr) - math.log10(OPTIMUM)) ** 2 + rng.gauss(0, 0.002)
        trials.append(TrialRecord(number=i, state=TrialState.COMPLETE, params={"lr": lr, "weight_decay": wd},
                                  config=None, value=value, steps=100, curve=Curve(), grad_norms=None))
    return trials, settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    args = parser.parse_args()
    print(f"{'trials':>6}  {'lr narrowed':>11}  {'weight_decay narrowed':>21}  {'lr window holds the optimum':>27}")
    for n in (8, 16, 32):
        lr = wd = holds = 0
        for seed in range(args.seeds):
            dims = {d.name: d for d in next_space(*study(n, seed)).dimensions}
            lr += dims["lr"].change == "narrow"
            wd += dims["weight_decay"].change == "narrow"
            holds += dims["lr"].window.low <= OPTIMUM <= dims["lr"].window.high
        s = args.seeds
        print(f"{n:>6}  {lr / s:>11.0%}  {wd / s:>21.0%}  {holds / s:>27.0%}")


if __name__ == "__main__":
    main()
