"""Running trials: the sequential trainer, the batched trainer, and their shared monitors."""

from adamtune.engine.outcome import Outcome
from adamtune.engine.seeding import data_seed, init_seed
from adamtune.engine.sequential import better, infeasible, train_trial

__all__ = ["Outcome", "better", "data_seed", "infeasible", "init_seed", "train_trial"]
