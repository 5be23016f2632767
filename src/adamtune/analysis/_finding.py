"""A finding: something the analysis noticed, in plain language, with the action to take."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from adamtune import guide

if TYPE_CHECKING:
    from adamtune.analysis._next import ChangeStudy

WARNING = "warning"
INFO = "info"


@dataclasses.dataclass(frozen=True)
class Finding:
    """One thing a person should know about a study, and what to do about it.

    Attributes:
        kind: the key of its action in ``guide.ACTIONS`` (``"boundary"``, ``"overfitting"``, ...).
        severity: ``"warning"`` (act on it) or ``"info"`` (good to know).
        title: one line, e.g. ``"lr: the best trials sit at the upper edge of 1e-06..0.0001"``.
        detail: the evidence in a sentence or two, with the numbers.
        trials: the trial numbers it is about.
        suggestion: ready-to-run ``--set`` arguments where there is something to paste.
        new_study: for a suggestion to try (clipping, a weight_decay window to test), the new
            study that tries it with this study's other windows and fixed values (``analyze``
            adds it; a study continued keeps its own search space, so ``--set`` alone cannot).
    """

    kind: str
    severity: str
    title: str
    detail: str
    trials: tuple[int, ...] = ()
    suggestion: tuple[str, ...] = ()
    new_study: ChangeStudy | None = None

    def __post_init__(self) -> None:
        if self.kind not in guide.ACTIONS:
            raise ValueError(f"kind must be one of {', '.join(guide.ACTIONS)}, got {self.kind!r}")
        if self.severity not in (WARNING, INFO):
            raise ValueError(f"severity must be {WARNING!r} or {INFO!r}, got {self.severity!r}")

    @property
    def action(self) -> str:
        """What to do, in the words of ``guide.ACTIONS`` (the one source of advice text)."""
        return guide.ACTIONS[self.kind]


def fmt(x: float) -> str:
    """A number as findings print it: 4 significant digits."""
    return f"{x:.4g}"


def trial_list(numbers: tuple[int, ...] | list[int]) -> str:
    """``"trial 3"`` or ``"trials 3, 5 and 7"``."""
    n = [str(x) for x in numbers]
    if len(n) == 1:
        return f"trial {n[0]}"
    return f"trials {', '.join(n[:-1])} and {n[-1]}"
