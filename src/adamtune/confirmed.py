"""What ``adamtune confirm`` found, kept in the study: the best trials trained again with other
seeds, their means and spreads, and the verdict. Reading it needs no torch (``adamtune report``
and ``show`` import this, not the training in :mod:`adamtune.confirmation`)."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics

from adamtune.results import TuneResult
from adamtune.trials import oriented, ranked, trials_text

CONFIRM_ATTR = "adamtune_confirm"


@dataclasses.dataclass(frozen=True)
class Retrained:
    """One configuration trained again with other seeds.

    Attributes:
        number: the study's trial whose configuration it is.
        tuned: that trial's value in the study (its own seed's best evaluation).
        best: each seed's best evaluation (the study's objective); +-inf where it diverged.
        end: each seed's last evaluation; NaN where it diverged.
    """

    number: int
    tuned: float
    best: tuple[float, ...]
    end: tuple[float, ...]

    @property
    def diverged(self) -> int:
        return sum(1 for v in self.best if not math.isfinite(v))

    @property
    def mean(self) -> float:
        """The mean best evaluation over the seeds (inf/-inf where one diverged)."""
        return statistics.fmean(self.best)

    @property
    def sd(self) -> float:
        finite = [v for v in self.best if math.isfinite(v)]
        return statistics.stdev(finite) if len(finite) > 1 else math.nan

    @property
    def end_mean(self) -> float:
        finite = [v for v in self.end if math.isfinite(v)]
        return statistics.fmean(finite) if finite and not self.diverged else math.nan


@dataclasses.dataclass(frozen=True)
class Confirmation:
    """A study's top trials retrained with other seeds, best on average first."""

    study_name: str
    metric: str
    direction: str
    seeds: int
    retrained: tuple[Retrained, ...]
    tuned_best: int  # the study's best trial
    finished: int | None = None  # the study's finished trials when it was made (None: not recorded)
    top: int | None = None  # the best trials it was asked to train (None: not recorded; as many as it holds)
    missing: tuple[int, ...] = ()  # trials now among the study's best max(len(retrained), top) not trained again

    @property
    def best(self) -> Retrained:
        return self.retrained[0]

    @property
    def tuned(self) -> Retrained:
        """The study's best trial, trained again."""
        return next(r for r in self.retrained if r.number == self.tuned_best)

    def verdict(self) -> str:
        """What to adopt, in a sentence or two."""
        first = self.best
        if first.diverged:
            return (f"every configuration diverged with at least one of {self.seeds} seeds: none is safe to adopt; "
                    "lower lr or add warmup")
        lines = []
        if len(self.retrained) == 1:
            lines.append(f"trial {first.number}, the study's best, averages {_g(first.mean)} over {self.seeds} seeds")
        elif first.number == self.tuned_best:
            lines.append(f"trial {first.number}, the study's best, is also best on average over {self.seeds} seeds")
        elif self._switch():
            lines.append(f"trial {first.number} is best on average over {self.seeds} seeds, not the study's best "
                         f"trial {self.tuned_best}: adopt trial {first.number}'s configuration")
        else:
            lines.append(f"trial {first.number} is best on average over {self.seeds} seeds, not the study's best "
                         f"trial {self.tuned_best}, {self._why_keep()}: keep trial {self.tuned_best}'s configuration, "
                         "or confirm with more seeds")
        if len(self.retrained) > 1:
            second = self.retrained[1]
            if second.diverged:
                lines.append(f"trial {second.number} diverged with {second.diverged} of {self.seeds} seeds")
            else:
                lines.append(self._lead(first, second)[0])
        tuned = self.tuned
        if self._lucky():
            lines.append(f"trial {tuned.number}'s {self.metric} in the study ({_g(tuned.tuned)}) is more than a "
                         f"standard deviation better than its mean over seeds ({_g(tuned.mean)}): one seed's luck, "
                         "so expect the mean")
        return "; ".join(lines)

    def _lucky(self) -> bool:
        """Whether the study's best trial's value is more than a standard deviation better than its
        mean over the seeds: one seed's luck."""
        tuned = self.tuned
        return not tuned.diverged and math.isfinite(tuned.sd) and oriented(tuned.tuned, self.direction) \
            < oriented(tuned.mean, self.direction) - tuned.sd

    def luck(self) -> str | None:
        """For the places that show the study's best, when it is kept and its value was one seed's
        luck (``_lucky``): what to expect instead, in one sentence; else None."""
        if not self._lucky() or self.adopt() != self.tuned_best:
            return None
        t = self.tuned
        return (f"adamtune confirm trained trial {t.number} with {self.seeds} other seeds: {self.metric} "
                f"{_g(t.mean)} ± {_g(t.sd)} on average, at the end {_g(t.end_mean)}; its {_g(t.tuned)} here was one "
                "seed's luck, so expect the mean")

    def caution(self) -> str | None:
        """For the places that show the study's best (``adamtune best``, ``tune``'s end, the
        report's card) when the seeds found none safe: one sentence saying so; else None."""
        if not self.best.diverged:
            return None
        return (f"adamtune confirm trained the best {trials_text(len(self.retrained))} with {self.seeds} other seeds "
                "and each diverged with at least one: none is safe to adopt; lower lr or add warmup")

    def stale(self) -> str | None:
        """When trials now among the study's best were not trained again (the study went on after
        it was made): one sentence saying so; else None."""
        if not self.missing:
            return None
        when = f" (made when the study had {self.finished} finished trials)" if self.finished is not None else ""
        who = ", ".join(str(n) for n in self.missing)
        one = len(self.missing) == 1
        return (f"trial{'' if one else 's'} {who}, now among the best {max(len(self.retrained), self.top or 0)}, "
                f"{'was' if one else 'were'} "
                f"not trained again by the confirmation{when}: run adamtune confirm again to include "
                f"{'it' if one else 'them'}")

    def _switch(self) -> bool:
        """Whether the seeds say to adopt another configuration than the study's best trial's: best
        on average by more than the noise, and no worse at the end of training (ranking by each
        seed's best evaluation still favours a curve that swings; its end tells)."""
        first = self.best
        tuned = self.tuned
        if first.diverged or first.number == self.tuned_best:
            return False
        if tuned.diverged:
            return True
        beyond = self._lead(first, tuned)[1]
        ends = not (math.isfinite(first.end_mean) and math.isfinite(tuned.end_mean)) or \
            oriented(first.end_mean, self.direction) <= oriented(tuned.end_mean, self.direction)
        return beyond and ends

    def _why_keep(self) -> str:
        first = self.best
        tuned = self.tuned
        if not self._lead(first, tuned)[1]:
            return "but by less than the seeds' noise"
        noise = ""
        if all(math.isfinite(v) for v in (*first.end, *tuned.end)):
            half = self._half([b - a for a, b in zip(first.end, tuned.end)], 1)
            inside = abs(first.end_mean - tuned.end_mean) <= half
            noise = f"; {'within' if inside else 'beyond'} the seeds' noise, ±{_g(half)}"
        return (f"but it ends training worse on average ({_g(first.end_mean)} against {_g(tuned.end_mean)}{noise}), "
                "so its lead may lie in its curve's swings")

    def adopt(self) -> int:
        """The trial whose configuration to adopt: the one best on average where the seeds say so
        (``_switch``), else the study's best."""
        return self.best.number if self.best.number == self.tuned_best or self._switch() else self.tuned_best

    def other_choice(self) -> str | None:
        """When the seeds say to adopt another configuration than the study's best trial's (see
        ``_switch``), one sentence saying so (for the places that show the study's best:
        ``adamtune best``, the report's card); else None."""
        if not self._switch():
            return None
        first = self.best
        tuned = self.tuned
        theirs = f"{_g(tuned.mean)} ± {_g(tuned.sd)}" if not tuned.diverged else "diverged with some"
        return (f"adamtune confirm found trial {first.number} best on average over {self.seeds} other seeds "
                f"({self.metric} {_g(first.mean)} ± {_g(first.sd)}; trial {self.tuned_best}: {theirs}), beyond the "
                f"noise and no worse at the end: adopt trial {first.number}'s configuration")

    def _half(self, diffs: list[float], comparisons: int) -> float:
        """The half-width of the 95% t-interval of the mean of ``diffs`` (paired differences, one
        per seed), Bonferroni-widened for ``comparisons`` comparisons made at once."""
        from scipy.stats import t as student_t

        return student_t.ppf(1 - 0.025 / comparisons, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))

    def _lead(self, first: Retrained, second: Retrained) -> tuple[str, bool]:
        """Whether ``first``'s lead over ``second`` is beyond the seeds' noise, in words and as a
        bool: a paired comparison (seed r gave both the same initial weights and minibatches), the
        95% t-interval of the mean difference, which with few seeds is wide (t = 4.3 for 3 seeds).
        ``first`` is the best on average of the candidates: picked from k of them, its lead over
        any one would pass a plain 95% interval by chance more often than 5% (about 1 in 6 for 16
        equal candidates), so the interval is widened for the k - 1 comparisons (Bonferroni)."""
        k = len(self.retrained)
        gap = abs(second.mean - first.mean)
        half = self._half([b - a for a, b in zip(first.best, second.best)], max(1, k - 1))
        interval = (f"the 95% interval of the difference over {self.seeds} seeds"
                    f"{f', widened for picking the best of {k}' if k > 2 else ''}: ±{_g(half)}")
        if gap > half:
            return f"its lead over trial {second.number} ({_g(gap)}) is beyond the seeds' noise ({interval})", True
        return (f"its lead over trial {second.number} ({_g(gap)}) is within the seeds' noise ({interval}): "
                f"{self.seeds} seeds do not tell them apart"
                f"{' (2 seeds tell only a large lead from the noise: try 5)' if self.seeds == 2 else ''}"), False

    def to_json(self) -> dict:
        return {"seeds": self.seeds, "finished": self.finished, "top": self.top, "trials": {str(r.number): {"tuned": _num(r.tuned), "best": [_num(v) for v in r.best],
                                                               "end": [_num(v) for v in r.end]}
                                                for r in self.retrained}}


def stored(result: TuneResult) -> Confirmation | None:
    """The last confirmation kept in ``result``'s study as it was read (``TuneResult.attrs``), or None
    (none made, or unreadable)."""
    if result.best is None:
        return None
    text = result.attrs.get(CONFIRM_ATTR)
    if not isinstance(text, str):
        return None
    worst = math.inf if result.settings.direction == "minimize" else -math.inf
    try:
        data = json.loads(text)
        retrained = [Retrained(int(n), _back(d["tuned"]), tuple(worst if v is None else float(v) for v in d["best"]),
                               tuple(_back(v) for v in d["end"])) for n, d in data["trials"].items()]
        seeds = int(data["seeds"])
        finished, top = (None if data.get(k) is None else int(data[k]) for k in ("finished", "top"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    numbers = {r.number for r in retrained}
    if not retrained or result.best.number not in numbers:
        return None  # made before the study's best changed: it says nothing of it
    now = [t.number for t in ranked(result.trials, result.settings.direction)[:max(len(retrained), top or 0)]]
    return Confirmation(result.study_name, result.settings.metric, result.settings.direction, seeds,
                        best_first(retrained, result.settings.direction), result.best.number, finished, top,
                        tuple(n for n in now if n not in numbers))


def best_first(retrained: list[Retrained], direction: str) -> tuple[Retrained, ...]:
    """``retrained`` best on average first (those that diverged with some seed last; ties: the
    earlier trial first), as a Confirmation holds them."""
    return tuple(sorted(retrained, key=lambda x: (x.diverged, oriented(x.mean, direction), x.number)))


def adopted(result: TuneResult, found: Confirmation) -> TuneResult:
    """``result`` with the trial ``found`` says to adopt as its best (its card, its paste code)."""
    number = found.adopt()
    return dataclasses.replace(result, best=next(t for t in result.trials if t.number == number))


def _back(v: float | None) -> float:
    return math.nan if v is None else float(v)  # JSON's null: a seed that diverged


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _g(x: float) -> str:
    return f"{x:.4g}"


def summary(found: Confirmation) -> list[str]:
    """The confirmation as lines for a terminal: one per candidate, then the verdict."""
    lines = [f"{trials_text(len(found.retrained))} of study {found.study_name} trained again with {found.seeds} other "
             f"seeds each ({found.metric}: best evaluation, mean ± sd; the study's own seed's in brackets)"]
    for r in found.retrained:
        spread = f"{_g(r.mean)} ± {_g(r.sd)}" if not r.diverged else f"diverged with {r.diverged} of {found.seeds} seeds"
        end = f", at the end {_g(r.end_mean)}" if math.isfinite(r.end_mean) else ""
        star = "★" if r is found.best else " "
        lines.append(f"  {star} trial {r.number:>3}  {spread}{end}  [{_g(r.tuned)}]")
    lines.append(found.verdict())
    return lines
