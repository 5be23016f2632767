"""What an engine hands back for one trial, before the study layer tells Optuna."""

from __future__ import annotations

import dataclasses
from typing import Any

from adamtune.trials import GradNorms


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The end of one trial's training.

    Attributes:
        status: ``"complete"``, ``"pruned"`` or ``"diverged"``; ``"failed"`` when the user's
            code is at fault though it raised nothing (``error`` says how); ``"ended"`` when
            another worker ended the trial meanwhile (as lost), so there is nothing to tell.
        value: the objective: the best evaluation of the run (retrospective checkpoint
            selection, as the playbook recommends); +-inf when diverged; NaN when failed.
        steps: training steps run.
        curve: ``{"step": [...], metric: [...]}`` per evaluation.
        grad_norms: summary of the unclipped gradient norms.
        diverged_at: the first step with a non-finite loss, or the evaluation step at which
            the loss was found to have blown up.
        error: why a failed trial failed, as the last line of a traceback reads
            (``WorkloadError: ...``).
    """

    status: str
    value: float
    steps: int
    curve: dict[str, Any]
    grad_norms: GradNorms | None
    diverged_at: int | None = None
    error: str | None = None
