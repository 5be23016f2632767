import pytest

from adamtune import guide
from adamtune.analysis import clip_advice, clip_findings

STEADY = [1.0 + 0.01 * i for i in range(100)]  # 1.00 .. 1.99


def study(syn, *trials):
    return list(trials), syn.settings(syn.LR)


def test_threshold_is_the_90th_percentile_of_the_best_trial_and_clips_a_tenth(syn):
    trials, settings = study(
        syn,
        syn.trial(0, 0.1, grad_norms=syn.norms(STEADY), lr=1e-3),
        syn.trial(1, 0.2, grad_norms=syn.norms([2 * x for x in STEADY]), lr=2e-3),
    )
    a = clip_advice(trials, settings)
    assert a.trial == 0 and a.percentile == guide.CLIP_PERCENTILE == 90
    assert a.threshold == pytest.approx(1.891)
    would = dict(a.would_clip)
    assert would[0] == pytest.approx(0.10) and would[1] == pytest.approx(1.0)  # trial 1's norms are all above
    assert not a.too_often  # trial 1 ran with another lr: its norms are shown, not judged
    (f,) = clip_findings(a)
    assert f.kind == "clip" and f.severity == "info"
    assert "max_grad_norm=1.891 would clip 10% of its steps (trial 1: 100%)" in f.detail
    assert "Too aggressive" not in f.detail and f.suggestion == ("--set max_grad_norm=1.89",)
    assert f.action == guide.ACTIONS["clip"]


def test_the_best_trials_own_share_is_the_percentiles_not_an_estimate_from_its_samples(syn):
    import dataclasses

    # the percentile comes from every step, the samples are a few hundred of them: the best
    # trial's own 90th percentile clips a tenth of its steps, whatever the samples suggest
    g = dataclasses.replace(syn.norms(STEADY), p90=0.5)
    trials, settings = study(syn, syn.trial(0, 0.1, grad_norms=g, lr=1e-3))
    a = clip_advice(trials, settings)
    assert dict(a.would_clip)[0] == pytest.approx(0.1) and not a.too_often
    (f,) = clip_findings(a)
    assert f.severity == "info" and "max_grad_norm=0.5 would clip 10% of its steps" in f.detail


def test_one_steady_trial_is_advice_not_a_warning(syn):
    trials, settings = study(syn, syn.trial(0, 0.1, grad_norms=syn.norms(STEADY), lr=1e-3))
    a = clip_advice(trials, settings)
    assert not a.too_often and a.current is None and a.steps == 100
    (f,) = clip_findings(a)
    assert f.severity == "info" and "Too aggressive" not in f.detail
    assert f.title.startswith("clipping: max_grad_norm ≈ 1.891 (the 90th percentile of trial 0's")


def test_a_threshold_that_clipped_most_steps_is_too_aggressive(syn):
    norms = syn.norms(STEADY, max_grad_norm=1.2)  # clipped 79% of the steps (1.21 .. 1.99)
    trials, settings = study(syn, syn.trial(0, 0.1, grad_norms=norms, config={"max_grad_norm": 1.2}, lr=1e-3))
    a = clip_advice(trials, settings)
    assert a.current == 1.2 and a.current_clipped == pytest.approx(0.79) and a.too_often
    (f,) = clip_findings(a)
    assert f.severity == "warning" and "ran with max_grad_norm=1.2, which clipped 79% of its steps" in f.detail


def test_a_threshold_that_clipped_some_steps_is_said_without_a_warning(syn):
    norms = syn.norms(STEADY, max_grad_norm=1.8)  # clipped 19% of the steps (1.81 .. 1.99)
    trials, settings = study(syn, syn.trial(0, 0.1, grad_norms=norms, config={"max_grad_norm": 1.8}, lr=1e-3))
    (f,) = clip_findings(clip_advice(trials, settings))
    assert f.severity == "info" and "Too aggressive" not in f.detail
    assert "It ran with max_grad_norm=1.8, which clipped 19% of its steps." in f.detail


def test_no_recorded_norms_no_advice(syn):
    trials, settings = study(syn, syn.trial(0, 0.1, lr=1e-3))
    assert clip_advice(trials, settings) is None and clip_findings(None) == ()
