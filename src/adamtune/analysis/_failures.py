"""Failed trials: the user's code raised. How many, with which error, and whether they sort by a
hyperparameter.

A failed trial has no objective and Optuna's samplers skip it: unless the analysis looks at
failures, they are seen only in the trial table, and a next study of the same seed draws the
same failing points again. Trials cut short (Ctrl-C, a stopped study, a lost worker) are not
failures of the code and are left out.

- **error**: the most common last line of the failed trials' tracebacks, numbers aside
  (``loss exploded: 417`` and ``loss exploded: 3.76e+03`` are one error).
- **sorted**: every failed trial's value of a tuned dimension lies above (or below) every value
  of the trials that ran without failing (complete, pruned or diverged). ``lr`` is looked at
  first: a loss that raises when it explodes fails the largest lrs. The claim needs the order to
  be unlikely by chance: k failures among n trials are the k largest (or smallest) with
  probability ``1/C(n, k)``; that times the number of orders looked at (2 sides of ``lr``, or 2
  sides of every tuned dimension) must be below ``SORTED_CHANCE``.

When the failed trials are those of the largest lrs, the best trials at lr's upper edge are not
a missed optimum: the lrs above them failed. The boundary check of lr is then not raised there
(``failure_limited``), as it is not where trials beyond the best diverged.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
from collections.abc import Sequence

from adamtune.analysis._boundary import UPPER, BoundaryCheck
from adamtune.analysis._finding import INFO, WARNING, Finding, fmt, trial_list
from adamtune.analysis._select import Study, unpack
from adamtune.commands import command_line
from adamtune.results import StudySettings
from adamtune.trials import TrialRecord, TrialState, last_line, trials_text

SORTED_CHANCE = 0.05
# A share of failed trials at which the finding is a warning whatever else holds: one in five.
WARN_SHARE = 0.2
ABOVE, BELOW = "above", "below"
# An error line longer than this is cut in titles (a CUDA error can run to hundreds of characters).
MAX_ERROR_CHARS = 160
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_RAN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.DIVERGED)


@dataclasses.dataclass(frozen=True)
class Failures:
    """The study's failed trials and what they share.

    Attributes:
        failed: numbers of the failed trials (not those cut short).
        ran: how many trials ran to an end: complete, pruned, diverged or failed.
        error: the most common last line of their tracebacks (numbers aside), as the first of
            them printed it; None when no failed trial stored a traceback.
        error_count: how many failed trials ended with that line, numbers aside.
        error_same: whether those lines are the same to the letter, numbers too.
        sorted_by: the tuned dimension whose values part the failed trials from the others
            (``lr`` first); None when none does.
        side: ``"above"`` or ``"below"``: the failed trials' values lie above (below) every other one.
        bound: the failed trials' value nearest the others (the smallest when ``above``).
        trained_bound: the largest (``above``; smallest when ``below``) value among the trials
            that trained (complete or pruned); None without any.
        others_diverged: how many of the other trials with a value diverged.
        chance: how likely failures at random would have sorted so (the module docstring).
    """

    failed: tuple[int, ...]
    ran: int
    error: str | None = None
    error_count: int = 0
    error_same: bool = True
    sorted_by: str | None = None
    side: str | None = None
    bound: float | None = None
    trained_bound: float | None = None
    others_diverged: int = 0
    chance: float | None = None

    @property
    def lr_ceiling(self) -> float | None:
        """The smallest lr that failed, when every lr above the trained ones failed: the top the
        next lr window stays below (None otherwise)."""
        return self.bound if self.sorted_by == "lr" and self.side == ABOVE else None


def failures(study: Study, settings: StudySettings | None = None) -> Failures:
    """The failed trials of ``study``, their most common error and the dimension they sort by."""
    trials, settings = unpack(study, settings)
    failed = [t for t in trials if t.state == TrialState.FAILED and not t.interrupted]
    others = [t for t in trials if t.state in _RAN]
    out = Failures(tuple(t.number for t in failed), len(failed) + len(others))
    if not failed:
        return out
    lines = [x for x in (last_line(t.error) for t in failed) if x is not None]
    if lines:
        groups = collections.Counter(_NUMBER.sub("#", x) for x in lines)
        key, count = max(groups.items(), key=lambda kv: kv[1])  # ties: the first seen
        members = [x for x in lines if _NUMBER.sub("#", x) == key]
        out = dataclasses.replace(out, error=members[0], error_count=count, error_same=len(set(members)) == 1)
    names = [d.name for d in settings.space.dimensions]
    order = (["lr"] if "lr" in names else []) + [n for n in names if n != "lr"]
    for name in order:
        looks = 2 if name == "lr" else 2 * len(names)
        found = _sorted(name, failed, others, looks)
        if found is not None:
            return dataclasses.replace(out, sorted_by=name, **found)
    return out


def failure_limited(checks: Sequence[BoundaryCheck], f: Failures) -> tuple[BoundaryCheck, ...]:
    """``checks`` with lr's upper edge not raised when every lr above those that trained failed:
    there is nothing to widen into."""
    return tuple(dataclasses.replace(c, edge=None, proposal=None)
                 if c.name == "lr" and c.edge == UPPER and f.lr_ceiling is not None else c for c in checks)


def _value(t: TrialRecord, name: str) -> float | None:
    v = t.params.get(name)
    return v if v is not None and math.isfinite(v) else None


def _sorted(name: str, failed: list[TrialRecord], others: list[TrialRecord], looks: int) -> dict | None:
    """``side``, ``bound``, ... when the failed trials' ``name`` values lie beyond every other's."""
    bad = [_value(t, name) for t in failed]
    if any(v is None for v in bad):
        return None
    rest = [(t, v) for t, v in ((t, _value(t, name)) for t in others) if v is not None]
    if not rest:
        return None
    chance = looks / math.comb(len(bad) + len(rest), len(bad))
    if chance >= SORTED_CHANCE:
        return None
    trained = [v for t, v in rest if t.state != TrialState.DIVERGED]
    diverged = sum(1 for t, _ in rest if t.state == TrialState.DIVERGED)
    if min(bad) > max(v for _, v in rest):
        return {"side": ABOVE, "bound": min(bad), "trained_bound": max(trained, default=None),
                "others_diverged": diverged, "chance": chance}
    if max(bad) < min(v for _, v in rest):
        return {"side": BELOW, "bound": max(bad), "trained_bound": min(trained, default=None),
                "others_diverged": diverged, "chance": chance}
    return None


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 1] + "…"


def failure_title(f: Failures) -> str:
    """``"5 of 12 trials failed, all like RuntimeError: ...; all 5 at lr ≥ 0.2104, every lr below trained"``."""
    k = len(f.failed)
    title = f"{k} of {f.ran} trials failed"
    if f.error is not None:
        error = _cut(f.error)
        if k == 1:
            title += f": {error}"
        elif f.error_count == k:
            title += f", all {'with' if f.error_same else 'like'} {error}"
        elif f.error_count > 1:
            title += f", {f.error_count} {'with' if f.error_same else 'like'} {error}"
        else:
            title += f", each with an error of its own (first: {error})"
    if f.sorted_by is not None:
        sign, other = ("≥", "below") if f.side == ABOVE else ("≤", "above")
        who = "the one" if k == 1 else f"all {k}"
        went = "trained or diverged" if f.others_diverged else "trained"
        title += f"; {who} at {f.sorted_by} {sign} {fmt(f.bound)}, every {f.sorted_by} {other} {went}"
    return title


def failure_findings(f: Failures, study_name: str | None = None, storage: str | None = None) -> tuple[Finding, ...]:
    """A finding when trials failed: a warning when they are ``WARN_SHARE`` of the trials or
    more, or when they sort by lr; the tracebacks' command names ``storage`` and ``study_name``."""
    k = len(f.failed)
    if not k:
        return ()
    detail = f"{trial_list(list(f.failed))} failed: the workload's code raised an error, so they tell the search nothing."
    if f.error is not None and k > 1:
        alike = "" if f.error_same else ", numbers aside"
        share = f"all {k}" if f.error_count == k else f"{f.error_count} of {k}"
        detail += (f" The most common last line of their tracebacks, in {share}{alike}: "
                   f"{_cut(f.error)}.")
    if f.sorted_by is not None:
        highest = "largest" if f.side == ABOVE else "smallest"
        who = "the trial" if k == 1 else f"the {trials_text(k)}"
        detail += (f" They are {who} with the {highest} {f.sorted_by}s of the study: failures at random would "
                   f"sort so {f.chance:.1%} of the time.")
        if f.trained_bound is not None:
            detail += (f" The {'largest' if f.side == ABOVE else 'smallest'} {f.sorted_by} that trained is "
                       f"{fmt(f.trained_bound)}.")
    detail += f" Every traceback: {command_line('show', '--json', storage=storage, study=study_name)}"
    severity = WARNING if f.sorted_by == "lr" or k >= WARN_SHARE * f.ran else INFO
    return (Finding("failed", severity, failure_title(f), detail, f.failed),)
