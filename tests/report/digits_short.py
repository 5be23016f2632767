"""digits-mlp shortened for tests, loadable as a workload file (tests/report/digits_short.py:short_digits)."""

import dataclasses

from adamtune.workloads import load_workload


def short_digits():
    """digits-mlp with 100 steps (4 evaluations) instead of 400: a study of 8 trials takes seconds."""
    return dataclasses.replace(load_workload("digits-mlp"), steps=100, eval_every=25)
