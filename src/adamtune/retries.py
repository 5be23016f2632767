"""Trials cut short are run again: the same point of the search, the same initial weights.

A trial cut short (Ctrl-C, SIGTERM, a worker lost) does not use up the study's budget, and
the next ``tune`` of the study makes up for it by running it again: an Optuna enqueued
trial with the cut-short trial's hyperparameters fixed, built from the same initial weights.
A study stopped and continued then holds the trials of one run without a stop; with the
quasi-random sampler, the Sobol sequence has no hole where a batch was stopped.

Each trial stands for one *point* of the search. A retry stands for the point of the trial
it retries (its ``retry_of`` attribute); any other trial stands for the next new point: its
number less the retries numbered below it. With no retry in a study, trial i is point i. The
quasi-random sampler draws point i of the Sobol sequence for it, the random sampler draws
its values from a generator seeded with (seed, i), and the engines seed its model from i.

Two workers that start ``tune`` on one study at the same moment can both enqueue a retry of
the same point (nothing in Optuna's storage makes the look and the enqueue one step); the
worker that takes the later of the two ends it unrun (:func:`duplicates`), cut short and not
counted, and the point runs once.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

import optuna

from adamtune.trials import ATTR_INTERRUPTED, ATTR_RETRY_OF


def retry_numbers(trials: Iterable[optuna.trial.FrozenTrial]) -> list[int]:
    """The numbers of the trials that are retries, in order."""
    return sorted(t.number for t in trials if ATTR_RETRY_OF in t.user_attrs)


def point_of(number: int, retry_of: int | None, retries: Sequence[int]) -> int:
    """The point of the search that trial ``number`` stands for.

    Args:
        retry_of: the point the trial retries (its ``retry_of`` attribute), or None.
        retries: :func:`retry_numbers` of the study.
    """
    if retry_of is not None:
        return int(retry_of)
    return number - bisect.bisect_left(retries, number)


def _cut_short(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.state == optuna.trial.TrialState.FAIL and bool(trial.user_attrs.get(ATTR_INTERRUPTED))


def _attempts(trials: Sequence[optuna.trial.FrozenTrial]) -> dict[int, list[optuna.trial.FrozenTrial]]:
    """The trials of each point."""
    retries = retry_numbers(trials)
    attempts: dict[int, list[optuna.trial.FrozenTrial]] = {}
    for t in trials:
        attempts.setdefault(point_of(t.number, t.user_attrs.get(ATTR_RETRY_OF), retries), []).append(t)
    return attempts


def retry_cut_short(study: optuna.Study, limit: int, names: Iterable[str]) -> list[int]:
    """Enqueue a retry of each point whose every trial was cut short, lowest first.

    At most ``limit`` less the trials already waiting (the next asks take those first). A
    retry has the hyperparameters of the point's last trial fixed when that trial had drawn
    all of ``names`` (the search space's); one cut short while drawing leaves them to the
    sampler, and the quasi-random and random samplers draw the point's values again from the
    point. Returns the points retried.
    """
    trials = study.get_trials(deepcopy=False)
    limit -= sum(1 for t in trials if t.state == optuna.trial.TrialState.WAITING)
    if limit <= 0:
        return []
    names = set(names)
    attempts = _attempts(trials)
    todo = sorted(p for p, ts in attempts.items() if all(_cut_short(t) for t in ts))[:limit]
    for p in todo:
        last = max(attempts[p], key=lambda t: t.number)
        study.enqueue_trial(dict(last.params) if names <= set(last.params) else {}, user_attrs={ATTR_RETRY_OF: p})
    return todo


def duplicates(trials: Sequence[optuna.trial.FrozenTrial], numbers: Iterable[int]) -> dict[int, int]:
    """``{number: earlier trial's number}`` for those of ``numbers`` that retry a point an
    earlier trial, not cut short, already stands for (``trials``: all of the study's).

    Two workers that start at once can both enqueue a retry of a point; whichever takes the
    later one ends it unrun, and the point runs once.
    """
    attempts = _attempts(trials)
    by_number = {t.number: t for t in trials}
    found = {}
    for n in numbers:
        retry_of = by_number[n].user_attrs.get(ATTR_RETRY_OF) if n in by_number else None
        if retry_of is None:
            continue
        earlier = [t.number for t in attempts[int(retry_of)] if t.number < n and not _cut_short(t)]
        if earlier:
            found[n] = min(earlier)
    return found


def first_trials(trials: Iterable[tuple[int, int | None]]) -> dict[int, int]:
    """``{retry's number: number of the trial first run at its point}``, from ``(number, retry_of)`` pairs."""
    trials = sorted(trials)
    retries = [n for n, r in trials if r is not None]
    first: dict[int, int] = {}
    for n, r in trials:
        if r is None:
            first.setdefault(point_of(n, None, retries), n)
    return {n: first[r] for n, r in trials if r is not None and r in first}
