"""Clipping advice from the unclipped gradient norms the best trials recorded.

The playbook sets the clipping threshold at about the ``guide.CLIP_PERCENTILE`` (90th)
percentile of the unclipped gradient norms and calls clipping more than
``guide.CLIP_TOO_OFTEN`` (half) of the steps too aggressive.

That percentile says which threshold to use once clipping is needed, not that it is: clipping is
for instability (loss spikes, divergence; after warmup), and turned on in a stable run it clips
a tenth of the steps. So the ready ``--set max_grad_norm=...`` comes only when trials diverged
near the best trial's lr (``_curves.stability_findings``' ``unstable`` warning: within
``UNSTABLE_NEAR`` x of it; not the info finding whose divergence, far above the best lr, only marks
where the window's unstable end begins, nor ``lr_too_high``, the lr window past what the model
tolerates, whose advice is a smaller lr first) in a study that did not clip (one that clipped at
a threshold of its own diverged with it), or when a threshold the study set clipped too often
(the next search replaces it). Otherwise the finding says "if you need clipping, use about X".

The playbook's fix for instability is warmup first, then clipping: where the threshold is offered
for instability and the best trial ran without warmup (and the study did not tune it), the
finding's title puts ``--set warmup=0.05`` (``WARMUP_FIRST``) before it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from adamtune import guide
from adamtune.analysis._curves import Stability, stability
from adamtune.analysis._finding import INFO, WARNING, Finding, fmt
from adamtune.analysis._select import Study, top_trials, unpack
from adamtune.results import StudySettings

# The warmup to try before clipping: AlgoPerf's AdamW baseline (the guide's warmup entry), within
# the playbook's guide.MAX_WARMUP_FRACTION.
WARMUP_FIRST = 0.05

# Where trials diverged, as the stability finding judges it (``ClipAdvice.divergence``).
NEAR = "near"  # within UNSTABLE_NEAR x of the best trial's lr (or lr not tuned): the unstable warning
FAR = "far"  # far above the best trial's lr: only where the window's unstable end begins
WINDOW = "window"  # most of the lr window diverged: lr_too_high, a smaller lr first


@dataclasses.dataclass(frozen=True)
class ClipAdvice:
    """A clipping threshold taken from the best trial's gradient norms, and what it would clip.

    Attributes:
        trial: the trial the threshold comes from (the best one that recorded norms).
        percentile: ``guide.CLIP_PERCENTILE``.
        threshold: that percentile of the trial's unclipped gradient norms.
        would_clip: ``(trial, fraction)``: the share of each best trial's recorded steps
            (from ``GradNorms.samples``) whose norm exceeds ``threshold``.
        p50, p99, max: the trial's norm percentiles, for scale.
        samples: the trial's recorded norm history (downsampled), for the histogram.
        current: the max_grad_norm the trial ran with (None = no clipping).
        current_clipped: the share of its steps that ``current`` clipped.
        steps: how many steps the trial's norms cover (the samples are spread evenly over them).
        divergence: where trials diverged: ``NEAR`` the best trial's lr (the ``unstable`` warning,
            where clipping may help), ``FAR`` above it, over most of the lr ``WINDOW``; "" when none did.
        diverged: how many trials diverged.
        tuned: max_grad_norm was tuned: ``current`` is what the search chose.
        diverged_lr: the smallest lr that diverged (None: none did, or lr is unknown).
        best_lr: the best trial's lr.
        warmup: the warmup the trial ran with (0: none).
        warmup_tuned: warmup was tuned: the search tried it.
    """

    trial: int
    percentile: float
    threshold: float
    would_clip: tuple[tuple[int, float], ...]
    p50: float
    p99: float
    max: float
    samples: tuple[float, ...]
    current: float | None = None
    current_clipped: float | None = None
    steps: int = 0
    divergence: str = ""
    diverged: int = 0
    tuned: bool = False
    diverged_lr: float | None = None
    best_lr: float | None = None
    warmup: float = 0.0
    warmup_tuned: bool = False

    @property
    def unstable(self) -> bool:
        """Trials diverged where clipping may help: near the best trial's lr (the ``unstable`` warning)."""
        return self.divergence == NEAR

    @property
    def warmup_first(self) -> bool:
        """Whether warmup, the first fix for instability, is still to try: unstable, and the trial ran
        without it in a study that did not tune it."""
        return self.unstable and not self.warmup and not self.warmup_tuned

    @property
    def too_often(self) -> bool:
        """Whether the trial's own threshold, or this one on its own norms, clips more than CLIP_TOO_OFTEN.

        The other best trials' shares are shown, not judged: they ran with other hyperparameters,
        so their norms say little about a threshold for this one.
        """
        fractions = [f for n, f in self.would_clip if n == self.trial]
        if self.current_clipped is not None:
            fractions.append(self.current_clipped)
        return any(f > guide.CLIP_TOO_OFTEN for f in fractions)


def clip_advice(study: Study, settings: StudySettings | None = None, stab: Stability | None = None) -> ClipAdvice | None:
    """The clipping threshold for the best trial, or None when no best trial recorded norms.

    ``stab``: the study's stability, if already computed (whether anything was unstable).
    """
    trials, settings = unpack(study, settings)
    top = [t for t in top_trials(trials, settings.direction) if t.grad_norms is not None]
    if not top:
        return None
    best = top[0]
    g = best.grad_norms
    samples = np.asarray([x for x in g.samples if np.isfinite(x)], dtype=float)
    if guide.CLIP_PERCENTILE == 90.0 or samples.size == 0:
        threshold = g.p90
    else:
        threshold = float(np.percentile(samples, guide.CLIP_PERCENTILE))
    would = []
    for t in top:
        if t is best and threshold == g.p90:
            # Its own 90th percentile over every step clips a tenth of them; the samples (a few
            # hundred of its steps) would only estimate that.
            would.append((t.number, 1 - guide.CLIP_PERCENTILE / 100))
            continue
        s = np.asarray([x for x in t.grad_norms.samples if np.isfinite(x)], dtype=float)
        if s.size:
            would.append((t.number, float((s > threshold).mean())))
    current = (best.config or {}).get("max_grad_norm")
    stab = stab if stab is not None else stability(trials, settings)
    # (Diverged from the start, no trial trained: there is no best trial, so no advice at all.)
    divergence = ("" if not stab.diverged else WINDOW if stab.window_too_high else NEAR if stab.limits_best else FAR)
    return ClipAdvice(
        trial=best.number, percentile=guide.CLIP_PERCENTILE, threshold=float(threshold), would_clip=tuple(would),
        p50=g.p50, p99=g.p99, max=g.max, samples=tuple(float(x) for x in samples),
        current=current, current_clipped=g.clipped_fraction if current is not None else None, steps=g.count,
        divergence=divergence, diverged=len(stab.diverged),
        tuned="max_grad_norm" in settings.space.tuned and current is not None,
        diverged_lr=stab.smallest_diverged_lr, best_lr=stab.best_lr,
        warmup=(best.config or {}).get("warmup") or 0.0, warmup_tuned="warmup" in settings.space.tuned,
    )


def clip_findings(advice: ClipAdvice | None) -> tuple[Finding, ...]:
    """The clipping advice as a finding: a warning when something clips too often."""
    if advice is None:
        return ()
    a = advice
    own = dict(a.would_clip).get(a.trial)
    detail = (
        f"Trial {a.trial}'s unclipped gradient norms: median {fmt(a.p50)}, {a.percentile:.0f}th percentile "
        f"{fmt(a.threshold)}, 99th {fmt(a.p99)}, max {fmt(a.max)}."
    )
    if own is not None:
        detail += f" max_grad_norm={fmt(a.threshold)} would clip {own:.0%} of its steps"
        others = [(n, f) for n, f in a.would_clip if n != a.trial]
        if others:
            detail += " (" + ", ".join(f"trial {n}: {f:.0%}" for n, f in others) + ")"
        detail += "."
    warn = []
    if a.current is not None and a.current_clipped is not None:
        ran = f"it ran with max_grad_norm={fmt(a.current)}, which clipped {a.current_clipped:.0%} of its steps"
        if a.current_clipped > guide.CLIP_TOO_OFTEN:
            warn.append(ran)
        else:
            detail += f" {ran[0].upper()}{ran[1:]}."
    if own is not None and own > guide.CLIP_TOO_OFTEN:
        warn.append(f"this threshold would clip {own:.0%} of its steps")
    if warn:
        detail += " Too aggressive: " + "; ".join(warn) + "."
    where = f"(the {a.percentile:.0f}th percentile of trial {a.trial}'s gradient norms)"
    if a.tuned:  # the search's own choice is the advice; the percentile only says how hard it clips
        title = (f"clipping: the search chose max_grad_norm={fmt(a.current)} for trial {a.trial}; the "
                 f"{a.percentile:.0f}th percentile of its gradient norms is {fmt(a.threshold)}")
    elif a.unstable or a.current is not None:
        title = f"clipping: max_grad_norm ≈ {fmt(a.threshold)} {where}"
    else:
        title = f"if you need clipping (loss spikes, divergence), use max_grad_norm ≈ {fmt(a.threshold)} {where}"
    diverged = f"{a.diverged} trial{'s' if a.diverged > 1 else ''} diverged"
    stable_run = "in a stable run this threshold clips a tenth of the steps."
    if a.divergence == WINDOW:
        detail += f" {diverged}, where most of the lr window diverges: a smaller lr is the fix there, not clipping; {stable_run}"
    elif a.divergence == FAR:
        far = (f", from lr ≈ {fmt(a.diverged_lr)}, {a.diverged_lr / a.best_lr:.0f}x the best trial's lr ({fmt(a.best_lr)})"
               if a.diverged_lr is not None and a.best_lr else "")
        detail += (f" {diverged}{far}: that only marks where the lr window's unstable end begins, so nothing here "
                   f"calls for clipping; {stable_run}")
    elif not a.unstable:
        detail += (" No trial diverged where clipping could help, so nothing here calls for it: clipping is for "
                   "loss spikes and divergence, and in a stable run this threshold clips a tenth of the steps.")
    clipped = a.current is not None and not a.tuned  # the study fixed it: every trial clipped
    if a.unstable and clipped and not warn:
        detail += (f" The trials that diverged ran with max_grad_norm={fmt(a.current)} too: clipping did not stop "
                   "them, so another threshold is no fix (warmup or a smaller lr is).")
    offered = a.unstable and a.current is None
    if offered and a.warmup_first:  # the playbook's order: warmup, then clipping
        warmup = f"--set warmup={WARMUP_FIRST:g}"
        title = f"warmup first ({warmup}), then {title}"
        detail += (f" Warmup comes first: trial {a.trial} ran without it. Try {warmup} ({WARMUP_FIRST:.0%} of the "
                   "steps) before clipping, in the study the unstable finding gives; clip if trials still diverge "
                   "with it.")
    elif offered:
        ran = f"ran with warmup={fmt(a.warmup)} already" if a.warmup else "ran without warmup, which the search tuned"
        detail += f" Trial {a.trial} {ran}: clipping is the next step."
    suggestion = (f"--set max_grad_norm={a.threshold:.3g}",) if offered or warn else ()
    return (Finding("clip", WARNING if warn else INFO, title, detail, tuple(n for n, _ in a.would_clip),
                    suggestion),)
