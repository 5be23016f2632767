"""The next search space: coarse to fine around the best trials, wider where they hit an edge.

Per tuned dimension, on the window's own scale (0 = low, 1 = high):

- **widen** where the boundary check fires: the window it proposes.
- **narrow** to the span of the best trials, padded by ``NARROW_PAD`` on each side and at
  least ``NARROW_MIN_WIDTH`` wide, when the study has ``NARROW_MIN_COMPLETED`` completed
  trials, the result is at most ``KEEP_ABOVE`` of the old width, and the best trials cluster
  more tightly than chance would place them: k points thrown at random over the window fall
  within their span ``s`` with probability ``k s^(k-1) - (k-1) s^k``, and that must be below
  ``NARROW_CHANCE``. In a dimension that does not matter the best trials sit anywhere; without
  this, such a dimension was narrowed around noise in about half of the studies.
- **lower** the lr window when it lies mostly where the model diverges
  (``Stability.window_too_high``: at least half of the trials diverged, fewer than 2 trained to
  the end): to ``LOWER_DECADES`` decades ending ``LOWER_BELOW`` times below the smallest lr
  that diverged -- or, when one trial trained to the end below it, ending at that lr -- rounded
  down to one figure (the playbook's first step: a diverging model needs a smaller learning rate).
- a narrowed lr window also stops below the smallest lr that diverged when every trial that
  trained to the end lies below it: the next budget is not spent where every trial diverged.
- **raise** the lr window when no trial learned anything (``_curves.Progress``): to
  ``RAISE_DECADES`` decades from the top of the old one; the other dimensions are kept, since
  the best trials are then best by noise. When the study did not tune lr (``--set lr=1e-9``),
  its fixed lr is the first suspect: the next search tunes lr over the window adamtune searches
  for the optimizer and task (``guide.search_window``), the rest kept.
- **keep** otherwise.
- the lr window's top also stops below the smallest lr that failed when the failed trials are
  the ones with the largest lrs (``_failures``: every lr above those that ran failed, which
  chance would rarely do -- a loss that raises when it explodes): as for divergence, the same
  seed would otherwise draw the same failing lrs again. A kept window is then narrowed to that,
  and lr is neither widened nor raised (no trial learned) up past them. Failures that do not
  sort by lr (a bug at random points) move no window.
- a weight_decay window widened at its top stops where lr·weight_decay at the top of the next lr
  window passes ``_decay.MAX_DECAY_PER_STEP`` (``_decay.next_lr_limit``; the boundary check bounds
  it at the best trial's lr only); with no room left, it is kept.

The study's fixed values are carried over, but a fixed ``max_grad_norm`` that the clipping
advice calls too aggressive (it clipped most steps) is replaced by the advised threshold.

The result is printed as ``--set`` arguments; applied by ``adamtune tune`` to the preset of
the same optimizer, task and budget they give exactly this space (a test holds it to that).
The command carries the study's sampler, pruner and seed where they are not ``adamtune
tune``'s defaults.

``change_study`` is the other kind of new study the findings propose: one change a finding
gives (``--set max_grad_norm=1.23``, a weight_decay window to test) tried against this study,
every other window and fixed value as this study had them, so what differs is that change --
but for lr's window where the next search cuts it below lrs that failed or diverged
(``NextSpace.cut_lr``): the same seed would draw the same failing lrs again. A clipping
threshold is tried at the study's own lrs: what it tests is whether clipping lets them train. A
change computed at one lr (a weight_decay window to test: τ = 1/(lr·weight_decay) is in range at
the best trial's lr only) comes with the lr window it needs (``change_study``'s ``lr``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from types import EllipsisType

from adamtune import guide
from adamtune.analysis._boundary import BoundaryCheck, below_divergence, boundary_check, round_down
from adamtune.analysis._format import set_argument
from adamtune.analysis._clipping import ClipAdvice, clip_advice
from adamtune.analysis._curves import Progress, Stability, progress, stability
from adamtune.analysis._decay import next_lr_limit
from adamtune.analysis._failures import Failures, failure_limited, failures
from adamtune.analysis._select import Study, top_trials, unit, unpack
from adamtune.commands import command_line
from adamtune.config import TORCH_DEFAULTS, Config
from adamtune.errors import AdamtuneError
from adamtune.space import Dimension, SearchSpace, parse_override, preset, with_overrides
from adamtune.results import DEFAULT_PRUNER, DEFAULT_SAMPLER, DEFAULT_SEED, MAX_BUDGET, StudySettings
from adamtune.trials import completed

NARROW_MIN_COMPLETED = 5
NARROW_PAD = 0.15
NARROW_MIN_WIDTH = 0.3
KEEP_ABOVE = 0.85
NARROW_CHANCE = 0.2

LOWER_BELOW = 10.0
LOWER_DECADES = 3.0
RAISE_DECADES = 3.0

NARROW, WIDEN, KEEP, LOWER, RAISE = "narrow", "widen", "keep", "lower", "raise"
TOO_FEW_REASON = f"fewer than {NARROW_MIN_COMPLETED} completed trials"

# What `adamtune tune` uses when not told (the one value study.py reads too): a command leaves these out.
_DEFAULT_OPTIONS = (("--sampler", "sampler", DEFAULT_SAMPLER), ("--pruner", "pruner", DEFAULT_PRUNER),
                    ("--seed", "seed", DEFAULT_SEED))
# The changes tried at the study's own lrs even where the next search cuts lr (``change_study``):
# clipping and warmup are for instability, so their tests keep the lrs that diverged or failed
# (and draw the study's very points).
AT_THE_STUDYS_LRS = ("max_grad_norm", "warmup")


@dataclasses.dataclass(frozen=True)
class NextDimension:
    """One dimension of the next search space.

    Attributes:
        name: the hyperparameter.
        change: ``"narrow"``, ``"widen"``, ``"lower"``, ``"raise"`` or ``"keep"``.
        window: the proposed window.
        previous: the study's window.
        reason: why, in a few words.
    """

    name: str
    change: str
    window: Dimension
    previous: Dimension
    reason: str

    @property
    def set_argument(self) -> str:
        return set_argument(self.window)


@dataclasses.dataclass(frozen=True)
class NextSpace:
    """The proposed next search space as ``--set`` arguments and a command line.

    Attributes:
        dimensions: per tuned dimension, what changes.
        set_arguments: every ``NAME=...`` to pass with ``--set``: the windows, the study's fixed
            values, and the preset's dimensions this study did not tune, fixed at their defaults.
        command: a ready-to-run ``adamtune tune`` line (None when the study's workload cannot be
            named on the command line, e.g. it was passed as a Python object).
        study: the new study's name (None without the study's name): ``NAME-next``, or
            ``NAME-next-2``, ... when a study of that name with another search space is in the
            storage already (one with this space is continued: the command can run twice).
            When nothing changes, the study itself (see ``continues``).
        replaced: the fixed values the next study sets otherwise (``max_grad_norm`` that
            clipped too often; ``lr``, tuned, when it was fixed and no trial learned).
        continues: nothing changes, so the command continues this study with twice its
            budget (new points of the same search) instead of making a new study that would
            run the very same trials again.
        below_failed: the lr the next lr window stays below because every trial from it up
            failed (None when the failures do not sort by lr, or it did not move the window).
        completed: how many of the study's trials completed (narrowing takes
            ``NARROW_MIN_COMPLETED``).
        below_diverged: the smallest lr that diverged, when the next lr window stops below it
            (lowered, or narrowed and cut); None otherwise.
        tuned_lr: the lr window the next search tunes where the study fixed lr and no trial
            learned (``replaced`` then names lr); None otherwise.
        fixed_lr: the lr the study trained at then (None: not known).
    """

    dimensions: tuple[NextDimension, ...]
    set_arguments: tuple[str, ...]
    command: str | None
    study: str | None = None
    replaced: tuple[str, ...] = ()
    continues: bool = False
    below_failed: float | None = None
    completed: int = 0
    below_diverged: float | None = None
    tuned_lr: Dimension | None = None
    fixed_lr: float | None = None

    @property
    def changed(self) -> bool:
        return bool(self.replaced) or any(d.change != KEEP for d in self.dimensions)

    @property
    def lowered(self) -> bool:
        """Whether the lr window moves down because most trials diverged."""
        return any(d.change == LOWER for d in self.dimensions)

    @property
    def raised(self) -> bool:
        """Whether the lr window moves up because no trial learned anything."""
        return any(d.change == RAISE for d in self.dimensions)

    @property
    def cut_lr(self) -> Dimension | None:
        """lr's next window where it stops below lrs that failed or diverged (None: not cut there)."""
        if self.below_failed is None and self.below_diverged is None:
            return None
        return next((d.window for d in self.dimensions if d.name == "lr"), None)

    @property
    def cut_lr_text(self) -> str:
        """Why ``cut_lr`` stops where it does, in a few words ("" when it does not)."""
        if self.cut_lr is None:
            return ""
        return "below the lrs that failed" if self.below_failed is not None else "below the lrs that diverged"

    @property
    def lr_window(self) -> Dimension | None:
        """lr's window in the next search (None: it does not tune lr)."""
        return self.tuned_lr or next((d.window for d in self.dimensions if d.name == "lr"), None)

    @property
    def too_few_to_narrow(self) -> bool:
        """Whether a window is kept only because fewer than ``NARROW_MIN_COMPLETED`` trials completed."""
        return self.completed < NARROW_MIN_COMPLETED and any(d.reason == TOO_FEW_REASON for d in self.dimensions)


@dataclasses.dataclass(frozen=True)
class ChangeStudy:
    """A new study that tries one change a finding gives against this study: this study's
    windows and fixed values, that one changed (``change_study``), and lr's window the next
    search's where that cuts lr below lrs that failed or diverged (``change_lr``).

    Attributes:
        change: the ``NAME=...`` argument it tries (the finding's ``--set``).
        set_arguments: every ``--set`` argument of the new study, ``change`` last.
        study: its name (None without the study's name): ``NAME-PARAM``, or ``NAME-PARAM-2``,
            ... when a study of that name with another search space is in the storage already.
        command: a ready-to-run ``adamtune tune`` line (None when the study's workload cannot
            be named on the command line).
        in_next: the next search makes this very change already (a ``max_grad_norm`` that
            clipped too often, replaced): no study of its own; ``study`` and ``command`` are None.
    """

    change: str
    set_arguments: tuple[str, ...] = ()
    study: str | None = None
    command: str | None = None
    in_next: bool = False


def _fixed_text(name: str, value: object) -> str:
    if value is None:
        return f"{name}=none"
    if isinstance(value, float):
        return f"{name}={value:.10g}"
    return f"{name}={value}"


def next_space(
    study: Study, settings: StudySettings | None = None, checks: Sequence[BoundaryCheck] | None = None,
    study_name: str | None = None, storage: str | None = None, taken: Mapping[str, SearchSpace | None] | None = None,
    stab: Stability | None = None, learned: Progress | None = None, clip: ClipAdvice | None | EllipsisType = ...,
    failed: Failures | None = None,
) -> NextSpace:
    """Propose the next search space (see the module docstring for the rules).

    Args:
        study: a TuneResult, or TrialRecords with ``settings``.
        checks: the boundary checks, if already computed.
        study_name: the study's name, for the new study's name in the command.
        storage: the storage URL, for the command (omitted: the default storage).
        taken: the studies in the storage already, each with its search space (None: not
            adamtune's), so the new study's name is free or names a study of this space.
        stab, learned, clip, failed: the study's stability, progress, clipping advice and failed
            trials, if already computed (``clip`` may be None: no advice).
    """
    if study_name is None and hasattr(study, "study_name"):
        study_name = study.study_name
    trials, settings = unpack(study, settings)
    stab = stab if stab is not None else stability(trials, settings)  # most trials diverged: the lr window moves down
    failed = failed if failed is not None else failures(trials, settings)
    checks = {c.name: c for c in failure_limited(checks if checks is not None else boundary_check(trials, settings, stab),
                                                 failed)}
    top = top_trials(trials, settings.direction)
    enough = len(completed(trials)) >= NARROW_MIN_COMPLETED
    diverged_lr = stab.smallest_diverged_lr if stab.window_too_high else None
    learned = learned if learned is not None else progress(trials, settings)
    dims = []
    below_diverged = None
    for dim in settings.space.dimensions:
        if learned.nothing_learned:
            if dim.name == "lr" and failed.lr_ceiling is not None:  # up is where every trial failed
                dims.append(NextDimension(dim.name, KEEP, dim, dim, "no trial learned"))
            else:
                dims.append(_raise(dim, learned.largest_lr))
            continue
        check = checks.get(dim.name)
        if check is not None and check.proposal is not None:
            dims.append(NextDimension(dim.name, WIDEN, check.proposal, dim, f"the best trials sit at its {check.edge} edge"))
            continue
        if dim.name == "lr" and diverged_lr is not None:
            survivor = stab.largest_stable_lr is not None
            high = round_down(min(dim.high, diverged_lr if survivor else diverged_lr / LOWER_BELOW))
            why = stab.how_many_diverged
            with contextlib.suppress(AdamtuneError):
                window = Dimension(dim.name, high / 10 ** LOWER_DECADES, high, dim.scale)
                dims.append(NextDimension(dim.name, LOWER, window, dim, f"{why}, from lr {diverged_lr:.3g}: a smaller lr"))
                below_diverged = diverged_lr
                continue
        positions = [u for u in (unit(dim, t) for t in top) if u is not None]
        if not enough or not positions:
            why = TOO_FEW_REASON if not enough else "no completed trial"
            dims.append(NextDimension(dim.name, KEEP, dim, dim, why))
            continue
        span = max(positions) - min(positions)
        k = len(positions)
        chance = k * span ** (k - 1) - (k - 1) * span ** k if k > 1 else 1.0
        if chance >= NARROW_CHANCE:
            dims.append(NextDimension(dim.name, KEEP, dim, dim,
                                      f"the {k} best trials spread over {span:.0%} of the window, as trials in a "
                                      f"dimension that does not matter would ({chance:.0%} of the time)"))
            continue
        lo, hi = min(positions) - NARROW_PAD, max(positions) + NARROW_PAD
        if hi - lo < NARROW_MIN_WIDTH:
            mid = (lo + hi) / 2
            lo, hi = mid - NARROW_MIN_WIDTH / 2, mid + NARROW_MIN_WIDTH / 2
        if lo < 0:
            lo, hi = 0.0, min(1.0, hi - lo)
        if hi > 1:
            lo, hi = max(0.0, lo - (hi - 1)), 1.0
        if hi - lo > KEEP_ABOVE:
            dims.append(NextDimension(dim.name, KEEP, dim, dim, "the best trials spread over most of the window"))
            continue
        narrowed = _window(dim, lo, hi)
        window = below_divergence(narrowed, stab)
        if window != narrowed:
            below_diverged = stab.smallest_diverged_lr
        dims.append(NextDimension(dim.name, NARROW, window, dim, f"around the {len(positions)} best trials"))
    below_failed = None
    for i, d in enumerate(dims):
        moved = _below_failures(d, failed, stab) if d.name == "lr" and failed.lr_ceiling is not None else d
        if moved is not d:
            dims[i], below_failed = moved, failed.lr_ceiling
    dims = _decay_limited(dims, checks.get("weight_decay"))

    fixed = dict(settings.space.fixed)
    clip = clip_advice(trials, settings, stab) if clip is ... else clip
    replaced = ()
    if fixed.get("max_grad_norm") is not None and clip is not None and clip.too_often:
        fixed["max_grad_norm"] = float(f"{clip.threshold:.3g}")  # the clipping finding's, not one it condemns
        replaced = ("max_grad_norm",)
    windows = [d.window for d in dims]
    tuned_lr = _lr_to_tune(settings) if learned.nothing_learned and not any(d.name == "lr" for d in dims) else None
    fixed_lr = None
    if tuned_lr is not None:  # a fixed lr that learned nothing: more trials at it would learn nothing too
        fixed_lr = fixed.pop("lr", learned.largest_lr)
        windows.insert(0, tuned_lr)
        replaced = ("lr", *replaced)
    args = _arguments(settings, windows, fixed)
    n_completed = len(completed(trials))
    if study_name and not replaced and all(d.change == KEEP for d in dims):
        # The same space and seed in a new study would draw the same trials again.
        return NextSpace(tuple(dims), tuple(args), _continue_command(settings, study_name, storage), study_name,
                         continues=True, completed=n_completed)
    name = _new_name(study_name, settings, args, taken or {}) if study_name else None
    return NextSpace(tuple(dims), tuple(args), _command(settings, name, storage, args), name, replaced,
                     below_failed=below_failed, completed=n_completed, below_diverged=below_diverged,
                     tuned_lr=tuned_lr, fixed_lr=fixed_lr)


def change_study(
    settings: StudySettings, change: str, next_search: NextSpace | None = None, study_name: str | None = None,
    storage: str | None = None, taken: Mapping[str, SearchSpace | None] | None = None, lr: Dimension | None = None,
) -> ChangeStudy | None:
    """The new study that tries ``change`` against this study (see ``ChangeStudy``).

    Args:
        settings: the study's settings.
        change: one ``--set`` argument, ``NAME=VALUE`` or ``NAME=LOW:HIGH`` (``--set `` before it is dropped).
        next_search: the study's next search: a change it makes already gets no study of its own,
            and lr's window is its where it cuts lr below lrs that failed or diverged (``change_lr``).
        study_name, storage, taken: as for ``next_space``.
        lr: lr's window where the change needs one of its own (a weight_decay window to test, in
            range at the best trial's lr only: ``DecayTimescale.lr_window_to_try``); None: the
            study's, or the next search's where that cuts lr (``change_lr``). Where the study
            does not tune lr, its fixed lr stays.

    Returns:
        None when ``change`` does not apply to the study's optimizer (it then makes no valid space).
    """
    change = change.removeprefix("--set ").strip()
    try:
        wanted = parse_override(change)
    except AdamtuneError:
        return None
    if next_search is not None and not next_search.continues and wanted in map(parse_override, next_search.set_arguments):
        return ChangeStudy(change, in_next=True)
    param = change.split("=", 1)[0]
    fixed = {k: v for k, v in settings.space.fixed if k != param}
    own = lr or change_lr(next_search, param)
    windows = [own if d.name == "lr" and own is not None else d for d in settings.space.dimensions if d.name != param]
    args = [*_arguments(settings, windows, fixed, leave_out=param), change]
    try:
        with_overrides(preset(settings.optimizer, settings.task, settings.budget), args)
    except AdamtuneError:
        return None
    name = _new_name(study_name, settings, args, taken or {}, suffix=param) if study_name else None
    return ChangeStudy(change, tuple(args), name, _command(settings, name, storage, args))


def change_lr(next_search: NextSpace | None, param: str) -> Dimension | None:
    """lr's window in the study that tries a change to ``param`` where it is not the study's own:
    the next search's, where that is cut below lrs that failed or diverged (``NextSpace.cut_lr``;
    not for ``AT_THE_STUDYS_LRS``). None: the study's lr window (or fixed lr) stays."""
    if next_search is None or param == "lr" or param in AT_THE_STUDYS_LRS:
        return None
    return next_search.cut_lr


def _lr_to_tune(settings: StudySettings) -> Dimension | None:
    """The lr window a next search tunes when the study did not tune lr: the one adamtune searches
    for the study's optimizer and task (None if that is no valid window)."""
    try:
        return Dimension("lr", *guide.search_window(settings.optimizer, settings.task, "lr"))
    except (AdamtuneError, KeyError, TypeError):
        return None


def _arguments(settings: StudySettings, windows: Sequence[Dimension], fixed: Mapping[str, object],
               leave_out: str | None = None) -> list[str]:
    """The ``--set`` arguments of a study of ``settings``'s optimizer, task and budget with these
    windows and fixed values: what the preset of that budget would tune or fix besides (llm's
    beta2 = 0.95) pinned at the value this study trained with, PyTorch's default (but ``leave_out``)."""
    args = [set_argument(w) for w in windows]
    args += [_fixed_text(k, v) for k, v in sorted(fixed.items())]
    tuned = {w.name for w in windows}
    defaults = Config(optimizer=settings.optimizer)
    nxt = preset(settings.optimizer, settings.task, settings.budget)
    for name in (*nxt.tuned, *(k for k, _ in nxt.fixed)):
        if name not in tuned and name not in fixed and name != leave_out:
            value = TORCH_DEFAULTS[settings.optimizer].get(name, getattr(defaults, name))
            args.append(_fixed_text(name, value))
    return args


def _new_name(study_name: str, settings: StudySettings, args: Sequence[str], taken: Mapping[str, SearchSpace | None],
              suffix: str = "next") -> str:
    """``NAME-SUFFIX``, or the first ``NAME-SUFFIX-N`` that is free or holds this very search space."""
    try:  # what `adamtune tune --set ...` makes of the arguments (a test holds it to that)
        space: SearchSpace | None = with_overrides(preset(settings.optimizer, settings.task, settings.budget), args)
    except AdamtuneError:
        space = None
    name, n = f"{study_name}-{suffix}", 2
    while name in taken and (space is None or taken[name] != space):
        name, n = f"{study_name}-{suffix}-{n}", n + 1
    return name


def _raise(dim: Dimension, largest_lr: float | None) -> NextDimension:
    """The next window of ``dim`` when no trial learned: lr moved up, anything else kept."""
    if dim.name == "lr":
        with contextlib.suppress(AdamtuneError):
            window = Dimension(dim.name, dim.high, dim.high * 10 ** RAISE_DECADES, dim.scale)
            tried = f"lr up to {largest_lr:.3g}" if largest_lr is not None else "the lrs tried"
            return NextDimension(dim.name, RAISE, window, dim, f"no trial learned, with {tried}: a larger lr")
    return NextDimension(dim.name, KEEP, dim, dim, "no trial learned: nothing to narrow around")


def _decay_limited(dims: list[NextDimension], check: BoundaryCheck | None) -> list[NextDimension]:
    """``dims`` with weight_decay's window widened up no further than lr·weight_decay =
    ``MAX_DECAY_PER_STEP`` at the top of lr's next window (``next_lr_limit``), or kept."""
    lr = next((d.window for d in dims if d.name == "lr"), None)
    if check is None or lr is None:
        return dims
    limited = next_lr_limit(check, lr.high)
    if limited is check:
        return dims
    out = []
    for d in dims:
        if d.name == limited.name and d.change == WIDEN:
            d = (dataclasses.replace(d, window=limited.proposal) if limited.proposal is not None else
                 NextDimension(d.name, KEEP, d.previous, d.previous,
                               f"the best trials sit at its upper edge, but at the top of the lr window "
                               f"({lr.high:.3g}) its top gives lr·weight_decay = {lr.high * d.previous.high:.2g} "
                               f"already: not widened up"))
        out.append(d)
    return out


def _below_failures(d: NextDimension, failed: Failures, stab: Stability) -> NextDimension:
    """``d`` (lr's) with its top below the smallest lr that failed, by the rule for divergence
    (``below_divergence``: every lr that trained is kept), and the reason saying so."""
    # The failed trials stand for the diverged ones; every lr that trained, pruned ones too, is kept.
    trained = [x for x in (failed.trained_bound, stab.largest_stable_lr) if x is not None]
    as_diverged = dataclasses.replace(stab, smallest_diverged_lr=failed.lr_ceiling,
                                      largest_stable_lr=max(trained) if trained else None)
    window = below_divergence(d.window, as_diverged)
    if window == d.window:
        return d
    k = len(failed.failed)
    why = f"{'the only trial' if k == 1 else f'all {k} trials'} from lr {failed.lr_ceiling:.3g} up failed: below it"
    return dataclasses.replace(d, change=NARROW if d.change == KEEP else d.change, window=window,
                               reason=f"{d.reason}; {why}")


def _window(dim: Dimension, lo: float, hi: float) -> Dimension:
    """``dim`` cut to ``lo..hi`` (positions on its scale), or ``dim`` itself if that is no valid window."""
    try:
        return Dimension(dim.name, dim.from_unit(lo), dim.from_unit(hi), dim.scale)
    except AdamtuneError:
        return dim


def _continue_command(settings: StudySettings, study_name: str, storage: str | None) -> str | None:
    """The ``adamtune tune`` line that continues the study with twice its budget."""
    if settings.workload is None:
        return None
    return command_line("tune", storage=storage, study=study_name,
                        then=["--budget", str(min(2 * settings.budget, MAX_BUDGET))])


def _command(settings: StudySettings, study_name: str | None, storage: str | None, args: Sequence[str]) -> str | None:
    """The ``adamtune tune`` line of a new study, ``study_name`` its name, with the study's
    sampler, pruner and seed where they are not the defaults."""
    if settings.workload is None:
        return None
    options = [w for flag, attr, default in _DEFAULT_OPTIONS if getattr(settings, attr) != default
               for w in (flag, str(getattr(settings, attr)))]
    return command_line("tune", "--workload", settings.workload, "--optimizer", settings.optimizer,
                        "--task", settings.task, "--budget", str(settings.budget), *options, storage=storage,
                        study=study_name or None, then=[w for a in args for w in ("--set", a)])
