"""Seeds: a trial's initial weights depend on (study seed, trial number) only; the minibatch
order depends on the study seed only. Both engines use these, which is what makes a batched
member start exactly where the sequential engine would start that trial."""

from __future__ import annotations


def init_seed(study_seed: int, trial_number: int) -> int:
    """Seed set right before building trial ``trial_number``'s model."""
    return (study_seed * 1_000_003 + trial_number * 7_919 + 17) % (2**63 - 1)


def data_seed(study_seed: int) -> int:
    """Seed of the minibatch order shared by every trial of a study."""
    return (study_seed * 104_729 + 1) % (2**63 - 1)
