"""AdamW's weight decay read as a timescale: does the best trial's decay act within its run?

PyTorch's AdamW multiplies the weights by ``1 - lr·λ`` each step, so the weights are an
exponential moving average of recent updates over ``τ = 1/(lr·λ)`` steps (Wang & Aitchison
2024; ``guide.decay_timescale``). A good τ lies between about one epoch and the whole run. A λ
whose τ is far longer than the run barely decays anything; one whose τ is shorter than an
epoch forgets what the model learned from most of the data. Only AdamW's decoupled decay has
this reading: Adam's and Adadelta's weight_decay is an L2 term added to the gradient.

A short run at a small lr needs a large λ for its τ to fit in the run: the advised range may lie
above the window the study searched, or above ``guide.STRONG_WEIGHT_DECAY`` (0.1), which the guide
calls over-regularising for typical lrs and long runs. The finding then says so, and gives the
``--set weight_decay=LOW:HIGH`` that tests the range: only the validation loss can tell. The
window is held back when the lr it is computed at is not settled (lr's boundary check fires at
either edge, or fewer trials completed than the next search takes to narrow a window), when the
study already searched into the range and its best trials sit at the lower edge of weight_decay's
window (it preferred weaker decay), and when the next search's widened weight_decay window reaches
the range anyway.

The window puts τ in the range at the best trial's lr only: a trial at k times that lr has a τ k
times shorter. So the study that tests it searches lr within ``lr_spread`` of the best trial's lr
(``DecayTimescale.lr_window_to_try``), inside the lr window it would search otherwise
(``change_study``: the study's, or the next search's where that cuts lr below lrs that failed or
diverged); the finding says which share of its trials that puts in the range, against the share
over the wider window. The window's top also stops where lr·weight_decay at the top of that lr
window would pass ``MAX_DECAY_PER_STEP`` (only very short runs reach it); with too little of the
range left, none is given. When no trial learned, there is no finding: the best trial is best by
noise.

The same timescale bounds the boundary check's weight_decay proposals (``decay_window_limit``):
a window is not widened down where decay barely acts (smaller values act even less), and not
widened up past ``guide.shortest_decay_timescale`` (one epoch) at the best trial's lr; nor, in the
next search, past lr·weight_decay = ``MAX_DECAY_PER_STEP`` at the top of its lr window
(``next_lr_limit``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from adamtune import guide
from adamtune.analysis._finding import INFO, Finding, fmt
from adamtune.analysis._format import set_argument, window_text
from adamtune.analysis._select import Study, top_trials, unpack
from adamtune.errors import AdamtuneError
from adamtune.results import StudySettings
from adamtune.space import Dimension

if TYPE_CHECKING:  # _boundary imports this module
    from adamtune.analysis._boundary import BoundaryCheck

# τ this many times the run (or this fraction of an epoch) is far enough out to say so.
BEYOND = 2.0
# The most of the weights a weight_decay window to test may take in one step at the top of the lr
# window it is tried over: lr·weight_decay stays at or below this. The window is computed at the best
# trial's lr, but its study samples every lr of its window with every weight_decay of this one: at
# lr·weight_decay = 1 AdamW's per-step multiplier 1 - lr·weight_decay reaches zero, and past it the
# weights flip sign every step (guide.SHORTEST_DECAY_TIMESCALE_OF_RUN's note).
MAX_DECAY_PER_STEP = 0.5


@dataclasses.dataclass(frozen=True)
class DecayTimescale:
    """The best trial's decay timescale against its run.

    Attributes:
        trial: the best completed trial.
        lr, weight_decay: its peak lr and λ (PyTorch's convention).
        timescale: ``1/(lr·λ)`` in steps.
        run: the steps of a run; epoch: the steps of one pass over the training data (None
            when the study does not know the data's size).
        low, high: the λ at this lr whose τ is the run, and one epoch (None without an epoch).
            The strongest λ adamtune proposes is ``strongest``: ``high`` where the epoch bounds
            the decay (``epoch_bounds``).
        searched: the top of the weight_decay window the study searched (None: not tuned).
    """

    trial: int
    lr: float
    weight_decay: float
    timescale: float
    run: int
    epoch: float | None
    low: float
    high: float | None
    searched: float | None = None

    @property
    def too_long(self) -> bool:
        return self.timescale > BEYOND * self.run

    @property
    def epoch_bounds(self) -> bool:
        """Whether one epoch is the shortest τ adamtune proposes (``guide.epoch_bounds_decay``): an
        epoch known and at most half the run, not one nearly as long as the run or longer."""
        return guide.epoch_bounds_decay(self.run, self.epoch)

    @property
    def above_window(self) -> bool:
        """The advised range starts above the weight_decay window the study searched."""
        return self.searched is not None and self.low > self.searched

    @property
    def above_usual(self) -> bool:
        """The advised range starts above the window searched or ``guide.STRONG_WEIGHT_DECAY``."""
        return self.above_window or self.low > guide.STRONG_WEIGHT_DECAY

    @property
    def shortest(self) -> float:
        """The shortest τ adamtune proposes for this run: one epoch, or a tenth of the run without
        one or with one longer than half the run (``guide.shortest_decay_timescale``)."""
        return guide.shortest_decay_timescale(self.run, self.epoch)

    @property
    def shortest_text(self) -> str:
        """``shortest`` in words: ``"one epoch (22 steps)"``."""
        if self.epoch_bounds:
            return f"one epoch ({self.shortest:.0f} steps)"
        return (f"{guide.SHORTEST_DECAY_TIMESCALE_OF_RUN:.0%} of the {self.run}-step run ({self.shortest:.0f} "
                f"step{'s' if self.shortest != 1 else ''})")

    @property
    def strongest(self) -> float:
        """The largest λ adamtune proposes at this lr: the one whose τ is ``shortest``."""
        return guide.weight_decay_for_timescale(self.lr, self.shortest)

    def window_to_try(self, lr_top: float | None = None) -> Dimension | None:
        """The weight_decay window that tests the advised range: τ from the run down to ``shortest``
        (one epoch; without an epoch, or with one longer than half the run: a tenth of the run) at the
        best trial's lr; its top no higher than ``lr_cap(lr_top)`` (None: tried at this lr alone). None
        when the cap leaves no window, or one whose top is under ``BEYOND`` times its low end: decay
        barely faster than over the whole run tests nothing."""
        top = min(self.strongest, lr_cap(lr_top or self.lr))
        if top < self.strongest and top < BEYOND * self.low:
            return None
        try:
            return Dimension("weight_decay", self.low, top, "log")
        except AdamtuneError:  # a λ too large to be a number
            return None

    @property
    def lr_spread(self) -> float:
        """The factor either side of the best trial's lr that the study testing ``window_to_try``
        searches lr within: √(run / shortest).

        The window gives τ from ``shortest`` to the run at the best trial's lr; at k times that lr
        each τ is k times shorter. With lr and weight_decay drawn evenly on log scales, lr within a
        factor s either side puts 1 - ln s / (2 ln(run / shortest)) of the trials' τ in that range:
        this s puts 3/4 there (digits-mlp: a factor of 4.2 for an epoch of 22 steps in a 400-step
        run), and lr still moves with weight_decay, since stronger decay may want another lr. The
        study's whole lr window, 4.5 decades there, put 7 of 32 trials in it.
        """
        return math.sqrt(self.run / self.shortest)

    def lr_window_to_try(self, within: Dimension | None) -> Dimension | None:
        """lr's window in the study that tests ``window_to_try``: within ``lr_spread`` of the best
        trial's lr, inside ``within`` (the lr window it would search otherwise). None where lr is
        not tuned (``within`` None); ``within`` itself where that is as narrow already."""
        if within is None:
            return None
        low, high = max(within.low, self.lr / self.lr_spread), min(within.high, self.lr * self.lr_spread)
        if low <= within.low and high >= within.high:
            return within
        try:
            return Dimension(within.name, low, high, within.scale)
        except AdamtuneError:  # the best trial's lr outside ``within``, or no width left
            return within

    @property
    def too_short(self) -> bool:
        """τ well under ``shortest`` (one epoch where that bounds the decay), with the data's size known."""
        return self.epoch is not None and self.timescale * BEYOND < self.shortest


def lr_cap(lr_top: float) -> float:
    """The largest weight_decay a window to test tried up to lr ``lr_top`` may reach (``MAX_DECAY_PER_STEP``)."""
    return MAX_DECAY_PER_STEP / lr_top


def share_in_range(lr: Dimension, weight_decay: Dimension, shortest: float, longest: float) -> float:
    """The share of a search's (lr, weight_decay) points whose τ = 1/(lr·weight_decay) lies in
    ``shortest..longest`` steps, both drawn evenly on log scales (what a quasi-random search does)."""
    # ln lr + ln λ is the sum of two uniform variables: its distribution function is a sum of four
    # half-squares (the integral of the trapezoid that is its density).
    a1, a2, b1, b2 = math.log(lr.low), math.log(lr.high), math.log(weight_decay.low), math.log(weight_decay.high)

    def h(x: float) -> float:
        return max(x, 0.0) ** 2 / 2

    def below(c: float) -> float:
        return (h(c - a1 - b1) - h(c - a2 - b1) - h(c - a1 - b2) + h(c - a2 - b2)) / ((a2 - a1) * (b2 - b1))

    return below(-math.log(shortest)) - below(-math.log(longest))


def decay_timescale(study: Study, settings: StudySettings | None = None) -> DecayTimescale | None:
    """The timescale of the best trial's decay, or None (not AdamW, no decay, no run length)."""
    trials, settings = unpack(study, settings)
    if settings.optimizer != "adamw":
        return None
    top = top_trials(trials, settings.direction)
    if not top or not top[0].config:
        return None
    best = top[0]
    lr, wd = best.config.get("lr"), best.config.get("weight_decay")
    info = settings.workload_info or {}
    run = info.get("steps") or best.steps
    if not isinstance(lr, (int, float)) or not isinstance(wd, (int, float)) or not lr > 0 or not wd > 0 or not run:
        return None
    searched = next((d.high for d in settings.space.dimensions if d.name == "weight_decay"), None)
    examples, batch = info.get("train_examples"), info.get("batch_size")
    epoch = examples / batch if isinstance(examples, int) and isinstance(batch, int) and batch > 0 else None
    return DecayTimescale(
        trial=best.number, lr=float(lr), weight_decay=float(wd), timescale=guide.decay_timescale(lr, wd), run=int(run),
        epoch=epoch, low=guide.weight_decay_for_timescale(lr, run),
        high=guide.weight_decay_for_timescale(lr, epoch) if epoch else None, searched=searched,
    )


def _figures(x: float) -> str:
    """``x`` to three significant figures, as a whole number with thousands separators: 59,500."""
    return f"{float(f'{x:.3g}'):,.0f}" if math.isfinite(x) else "∞"


def decay_window_limit(dim: Dimension, edge: str, proposal: Dimension | None,
                       d: DecayTimescale | None) -> tuple[Dimension | None, str]:
    """The boundary check's widened weight_decay window, bounded by what AdamW's decay timescale allows.

    - At the lower edge, when the best trial's decay barely acts (``too_long``, the decay finding's
      own test): no proposal. Smaller values act even less; the dimension does not matter there.
    - At the upper edge: the top stops at ``d.strongest``, where the best trial's lr gives
      ``τ = d.shortest`` (one epoch); no proposal when the window's top already reaches it.

    Args:
        dim: the weight_decay window the study searched; edge: the edge the best trials sit at.
        proposal: the window widened by the boundary check's rule (None: none).
        d: the best trial's decay timescale (None: not AdamW or unknown; nothing is bounded).

    Returns:
        The proposal (bounded, or None), and a sentence that says why it stops short, or "".
    """
    if d is None or dim.name != "weight_decay":
        return proposal, ""
    if edge == "lower" and d.too_long:
        tau = guide.decay_timescale(d.lr, dim.low)
        return None, (f"At the best trial's lr ({fmt(d.lr)}), weight_decay {fmt(dim.low)} gives a decay timescale "
                      f"1/(lr·weight_decay) of {_figures(tau)} steps, {_figures(tau / d.run)}x the {d.run}-step run: "
                      f"decay barely acts at these values, and smaller ones act even less, so the window is not "
                      f"widened down (the dimension matters little at that edge).")
    if edge != "upper":
        return proposal, ""
    cap = d.strongest
    if cap <= dim.high:
        tau = guide.decay_timescale(d.lr, dim.high)
        return None, (f"At the best trial's lr ({fmt(d.lr)}), the window's top {fmt(dim.high)} already gives a decay "
                      f"timescale 1/(lr·weight_decay) of {_figures(tau)} steps, no more than {d.shortest_text}, the "
                      f"shortest adamtune proposes: stronger decay forgets what the model learned from most of the "
                      f"data (and from lr·weight_decay = 1 on, AdamW's per-step multiplier 1 - lr·weight_decay is "
                      f"no longer positive), so the window is not widened up.")
    if proposal is None or proposal.high <= cap:
        return proposal, ""
    try:
        bounded = Dimension(dim.name, proposal.low, cap, proposal.scale)
    except AdamtuneError:
        return None, ""
    return bounded, (f"It stops at {fmt(cap)}, not at {fmt(proposal.high)} (half the window's width): at the best "
                     f"trial's lr ({fmt(d.lr)}), a larger weight_decay makes the decay timescale 1/(lr·weight_decay) "
                     f"shorter than {d.shortest_text}, the shortest adamtune proposes; decay that strong forgets "
                     f"what the model learned from most of the data.")


def next_lr_limit(check: BoundaryCheck, lr_top: float | None) -> BoundaryCheck:
    """weight_decay's boundary check with its window widened up no further than lr·weight_decay =
    ``MAX_DECAY_PER_STEP`` at ``lr_top``, the top of the next search's lr window.

    ``decay_window_limit`` bounds the widening at the best trial's lr; the next search samples every
    lr of its window with every weight_decay of the widened one (lr 0.32 and 7.6: lr·weight_decay
    2.4, where AdamW's multiplier 1 - lr·weight_decay is negative). With no room left above the
    window's top, there is no proposal, and the note says why. Any other check, or ``lr_top`` None
    (the next search does not tune lr), comes back as it is.
    """
    if check.name != "weight_decay" or check.edge != "upper" or check.proposal is None or lr_top is None:
        return check
    cap = lr_cap(lr_top)
    if check.proposal.high <= cap:
        return check
    multiplier = "AdamW's per-step multiplier 1 - lr·weight_decay reaches zero at 1, and turns negative past it"
    try:
        bounded = Dimension(check.name, check.proposal.low, cap, check.proposal.scale)
    except AdamtuneError:
        bounded = None
    if bounded is None or cap <= check.window.high:
        top = check.window.high
        return dataclasses.replace(check, proposal=None, note=(
            f"At the top of the next search's lr window ({fmt(lr_top)}), the window's top {fmt(top)} already gives "
            f"lr·weight_decay = {lr_top * top:.2g}, {'at' if lr_top * top == MAX_DECAY_PER_STEP else 'past'} the "
            f"{MAX_DECAY_PER_STEP:g} adamtune proposes at most ({multiplier}), so the window is not widened up."))
    return dataclasses.replace(check, proposal=bounded, note=(
        f"It stops at {fmt(cap)}: the next search searches lr up to {fmt(lr_top)}, where a larger weight_decay puts "
        f"lr·weight_decay past {MAX_DECAY_PER_STEP:g} ({multiplier})."))


def _check(checks: Sequence[BoundaryCheck], name: str) -> BoundaryCheck | None:
    return next((c for c in checks if c.name == name), None)


def decay_findings(d: DecayTimescale | None, checks: Sequence[BoundaryCheck] = (),
                   too_few: tuple[int, int] | None = None, nothing_learned: bool = False,
                   test_lr: Dimension | None = None, test_lr_why: str = "") -> tuple[Finding, ...]:
    """An info finding when the best trial's τ lies far outside one epoch .. the whole run.

    Args:
        checks: the study's boundary checks. With lr's firing at either edge, the window to test
            waits until lr is settled (the advised λ moves as lr does). With weight_decay's best
            trials at the lower edge of a window that reached the advised range, or its window
            widened up into that range, there is no separate window to test.
        too_few: ``(completed, needed)`` when fewer trials completed than the next search takes to
            narrow a window (``_next.NARROW_MIN_COMPLETED``): the best one's lr, at which the window
            is computed, is not settled either, so the window to test waits too.
        nothing_learned: no trial learned anything; the best trial is best by noise: no finding.
        test_lr: the lr window the study testing the window would search but for the narrowing
            around the best trial's lr (``DecayTimescale.lr_window_to_try``, which ``change_study``
            is given too): the study's, or the next search's where that cuts lr; None: lr is fixed,
            at the best trial's lr. The window's top keeps lr·weight_decay at the top of the
            narrowed window within ``MAX_DECAY_PER_STEP``; with too little left, none is given.
        test_lr_why: why that lr window is not the study's own ("below the lrs that failed"), or "".
    """
    if nothing_learned or d is None or not (d.too_long or d.too_short):
        return ()
    lr, wd = _check(checks, "lr"), _check(checks, "weight_decay")
    steps = _figures(d.timescale)
    if d.too_long:
        title = (f"weight decay barely acts: its timescale 1/(lr·weight_decay) is {steps} steps, "
                 f"{_figures(d.timescale / d.run)}x the {d.run}-step run")
    else:
        title = (f"weight decay forgets within an epoch: its timescale 1/(lr·weight_decay) is {steps} steps, "
                 f"an epoch {d.epoch:.0f}")
    rule = "puts a good τ between one epoch and the whole run: at this lr, "
    if d.epoch_bounds:
        window = f"weight_decay from {fmt(d.low)} (τ = the run) to {fmt(d.high)} (τ = one epoch, {d.epoch:.0f} steps)"
    elif d.epoch is not None:  # an epoch nearly as long as the run, or longer: that leaves no range
        rule = (f"puts a good τ between one epoch and the whole run; an epoch of {d.epoch:.0f} steps is "
                f"{'most of' if d.epoch <= d.run else 'longer than'} the {d.run}-step run, so adamtune takes τ down "
                f"to {guide.SHORTEST_DECAY_TIMESCALE_OF_RUN:.0%} of the run instead, as without the data's size: at "
                f"this lr, ")
        window = f"weight_decay from {fmt(d.low)} (τ = the run) to {fmt(d.strongest)} (τ = {d.shortest:.0f} steps)"
    else:
        window = f"weight_decay of about {fmt(d.low)} (τ = the run)"
    detail = (f"Trial {d.trial} ran AdamW with lr={fmt(d.lr)} and weight_decay={fmt(d.weight_decay)} in PyTorch's "
              f"convention (each step multiplies the weights by 1 - lr·weight_decay; τ taken at the peak lr). The "
              f"timescale rule (Wang & Aitchison 2024) {rule}{window}.")
    suggestion: tuple[str, ...] = ()
    narrowed = d.lr_window_to_try(test_lr)
    lr_top = narrowed.high if narrowed is not None else d.lr
    test = d.window_to_try() if d.too_long and d.above_usual else None
    if test is not None:
        where = (f"the top of the weight_decay window this study searched ({fmt(d.searched)})" if d.above_window else
                 f"{guide.STRONG_WEIGHT_DECAY:g}, above which the guide calls AdamW's weight_decay over-regularising "
                 f"(a rule of thumb for lrs near 1e-3 and long runs)")
        detail += (f" That range starts above {where}: a {d.run}-step run at lr {fmt(d.lr)} needs decay this strong "
                   f"for it to act at all.")
        if lr is not None and lr.edge is not None:
            way = "larger lr needs a smaller" if lr.edge == "upper" else "smaller lr needs a larger"
            detail += (f" But the best trials sit at the {lr.edge} edge of the lr window: settle lr first (a {way} "
                       f"weight_decay for the same τ).")
        elif too_few is not None:
            done, needed = too_few
            detail += (f" But too few trials completed to settle the lr it is computed at ({done} of the {needed} the "
                       f"next search takes to narrow the windows): run more trials of this study first (a larger lr "
                       f"needs a smaller weight_decay for the same τ).")
        elif wd is not None and wd.edge == "lower" and not d.above_window:
            detail += (f" But this study searched weight_decay up to {fmt(wd.window.high)}, into that range, and its "
                       f"best trials sit at the lower edge of the window {window_text(wd.window)}: the validation loss "
                       f"preferred the weaker decay, so there is no stronger one to test.")
        elif wd is not None and wd.edge == "upper" and wd.proposal is not None and wd.proposal.high >= d.low:
            detail += (f" The next search's weight_decay window, widened at its top to {window_text(wd.proposal)}, "
                       f"reaches into that range: it tests it.")
        elif (capped := d.window_to_try(lr_top)) is None:
            cap = lr_cap(lr_top)
            left = "none" if cap <= d.low else "too little"
            detail += (f" But a study testing it searches lr up to {fmt(lr_top)}, where a weight_decay above "
                       f"{fmt(cap)} puts lr·weight_decay past {MAX_DECAY_PER_STEP:g} (AdamW's per-step multiplier "
                       f"1 - lr·weight_decay reaches zero at 1): that leaves {left} of the range to test in a run "
                       f"this short.")
        else:
            suggestion = (f"--set {set_argument(capped)}",)
            tenth = f" (τ from the run down to {d.shortest_text})" if not d.epoch_bounds else ""
            detail += (f" Only the validation loss can tell whether it helps: test it in a new study, with "
                       f"{suggestion[0]}{tenth} and this study's other windows and fixed values"
                       f"{_lr_text(d, capped, narrowed, test_lr, test_lr_why)} (a study continued keeps its own "
                       f"search space).")
            if capped.high < test.high:
                detail += (f" Its top stops at {fmt(capped.high)}, not {fmt(test.high)}: that study searches lr up "
                           f"to {fmt(lr_top)}, where a larger weight_decay puts lr·weight_decay past "
                           f"{MAX_DECAY_PER_STEP:g} (AdamW's per-step multiplier 1 - lr·weight_decay reaches zero "
                           f"at 1, and turns negative past it).")
    return (Finding("decay_timescale", INFO, title, detail, (d.trial,), suggestion),)


def _lr_text(d: DecayTimescale, test: Dimension, narrowed: Dimension | None, within: Dimension | None,
             why: str) -> str:
    """The clause that says which lr window the study testing ``test`` searches where it is not
    the study's own, and why: ``", but lr ..."``, or ""."""
    if narrowed is None or within is None:  # lr fixed, at the best trial's lr: the window's own
        return ""
    cut = f"lr's window cut {why}, {window_text(within)}, as in the next search"
    if narrowed == within:
        return f", but {cut}" if why else ""
    share = share_in_range(narrowed, test, d.shortest, d.run)
    wide = share_in_range(within, test, d.shortest, d.run)
    over = cut if why else f"this study's lr window {window_text(within)}"
    return (f", but lr narrowed to {window_text(narrowed)}, within a factor of {d.lr_spread:.2g} of trial {d.trial}'s "
            f"lr: the window gives τ = {d.shortest:.0f}..{d.run} steps at that lr only (a trial at k times the lr "
            f"has a τ k times shorter), and about {share:.0%} of the trials land in that range there, against "
            f"{wide:.0%} over {over}")
