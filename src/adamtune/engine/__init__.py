"""Running trials: the sequential trainer, the batched trainer, and their shared monitors."""

from adamtune.engine.outcome import Outcome
from adamtune.engine.seeding import data_seed, init_seed
from adamtune.engine.sequential import better, first_step, infeasible, train_trial

__all__ = ["Outcome", "better", "data_seed", "first_step", "infeasible", "init_seed", "train_trial"]
