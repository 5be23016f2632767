"""Clipping advice from the unclipped gradient norms the best trials recorded.

The playbook sets the clipping threshold at about the ``guide.CLIP_PERCENTILE`` (90th)
percentile of the unclipped gradient norms and calls clipping more than
``guide.CLIP_TOO_OFTEN`` (half) of the steps too aggressive.

That percentile says which threshold to use once clipping is needed, not that it is: clipping is
for instability (loss spikes, divergence; after warmup), and turned on in a stable run it clips
a tenth of the steps. So the ready ``--set max_grad_norm=...`` comes only when trials diverged
(``_curves.stability_findings`` of kind ``unstable``; not ``lr_too_high``, the lr window past
what the model tolerates, whose advice is a smaller lr first) in a study that did not clip (one
that clipped at a threshold of its own diverged with it), or when a threshold the study set
clipped too often (the next search replaces it). Otherwise the finding says "if you need
clipping, use about X".
"""

from __future__ import annotations

import dataclasses

import numpy as np

from adamtune import guide
from adamtune.analysis._curves import Stability, stability
from adamtune.analysis._finding import INFO, WARNING, Finding, fmt
from adamtune.analysis._select import Study, top_trials, unpack
from adamtune.results import StudySettings


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
        unstable: trials diverged where clipping may help (the study has an ``unstable`` finding).
        diverged: how many trials diverged (where most of the lr window diverged, ``unstable`` is
            False: a smaller lr is the fix there, not clipping).
        tuned: max_grad_norm was tuned: ``current`` is what the search chose.
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
    unstable: bool = False
    diverged: int = 0
    tuned: bool = False

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
    return ClipAdvice(
        trial=best.number, percentile=guide.CLIP_PERCENTILE, threshold=float(threshold), would_clip=tuple(would),
        p50=g.p50, p99=g.p99, max=g.max, samples=tuple(float(x) for x in samples),
        current=current, current_clipped=g.clipped_fraction if current is not None else None, steps=g.count,
        unstable=bool(stab.diverged) and not stab.window_too_high, diverged=len(stab.diverged),
        tuned="max_grad_norm" in settings.space.tuned and current is not None,
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
    if not a.unstable and a.diverged:
        detail += (f" {a.diverged} trial{'s' if a.diverged > 1 else ''} diverged, where most of the lr window "
                   "diverges: a smaller lr is the fix there, not clipping; in a stable run this threshold clips a "
                   "tenth of the steps.")
    elif not a.unstable:
        detail += (" No trial diverged where clipping could help, so nothing here calls for it: clipping is for "
                   "loss spikes and divergence, and in a stable run this threshold clips a tenth of the steps.")
    clipped = a.current is not None and not a.tuned  # the study fixed it: every trial clipped
    if a.unstable and clipped and not warn:
        detail += (f" The trials that diverged ran with max_grad_norm={fmt(a.current)} too: clipping did not stop "
                   "them, so another threshold is no fix (warmup or a smaller lr is).")
    suggestion = (f"--set max_grad_norm={a.threshold:.3g}",) if (a.unstable and a.current is None) or warn else ()
    return (Finding("clip", WARNING if warn else INFO, title, detail, tuple(n for n, _ in a.would_clip),
                    suggestion),)
