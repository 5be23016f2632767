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
    assert "Too aggressive" not in f.detail
    assert f.action == guide.ACTIONS["clip"]
    assert not a.unstable and f.suggestion == ()  # nothing diverged: a threshold for when it is needed


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
    assert f.title == ("if you need clipping (loss spikes, divergence), use max_grad_norm ≈ 1.891 (the 90th "
                       "percentile of trial 0's gradient norms)")
    assert "No trial diverged where clipping could help, so nothing here calls for it" in f.detail
    assert f.suggestion == ()


def test_a_study_whose_trials_diverged_gets_the_threshold_to_set(syn):
    trials, settings = study(
        syn,
        syn.trial(0, 0.1, grad_norms=syn.norms(STEADY), lr=1e-3),
        syn.trial(1, 0.2, grad_norms=syn.norms(STEADY), lr=2e-3),
        syn.trial(2, None, state=syn.S.DIVERGED, lr=5e-3, steps=50),
    )
    a = clip_advice(trials, settings)
    assert a.unstable
    (f,) = clip_findings(a)
    assert f.title.startswith("clipping: max_grad_norm ≈ 1.891 (the 90th percentile of trial 0's")
    assert f.suggestion == ("--set max_grad_norm=1.89",) and "nothing here calls for it" not in f.detail


def test_an_lr_window_past_what_the_model_tolerates_gets_no_threshold_to_set(syn):
    # its finding says a smaller lr first: clipping helps at the edge of stability, not far past it
    from adamtune.analysis._curves import stability

    trials, settings = study(
        syn,
        syn.trial(0, 0.1, grad_norms=syn.norms(STEADY), lr=1e-5),
        syn.trial(1, None, state=syn.S.DIVERGED, lr=3e-3, steps=30),
        syn.trial(2, None, state=syn.S.DIVERGED, lr=5e-3, steps=30),
    )
    assert stability(trials, settings).window_too_high
    a = clip_advice(trials, settings)
    (f,) = clip_findings(a)
    assert not a.unstable and f.suggestion == () and f.title.startswith("if you need clipping")
    assert a.diverged == 2 and "No trial diverged" not in f.detail  # they did: the fix is elsewhere
    assert "2 trials diverged, where most of the lr window diverges: a smaller lr is the fix there" in f.detail


def test_a_threshold_that_clipped_most_steps_is_too_aggressive(syn):
    norms = syn.norms(STEADY, max_grad_norm=1.2)  # clipped 79% of the steps (1.21 .. 1.99)
    trials, settings = study(syn, syn.trial(0, 0.1, grad_norms=norms, config={"max_grad_norm": 1.2}, lr=1e-3))
    a = clip_advice(trials, settings)
    assert a.current == 1.2 and a.current_clipped == pytest.approx(0.79) and a.too_often
    (f,) = clip_findings(a)
    assert f.severity == "warning" and "ran with max_grad_norm=1.2, which clipped 79% of its steps" in f.detail
    # the next search replaces it with this one (tests/analysis/test_next.py): the finding gives it
    assert f.suggestion == ("--set max_grad_norm=1.89",) and f.title.startswith("clipping: max_grad_norm ≈ 1.891")


def test_a_threshold_that_clipped_some_steps_is_said_without_a_warning(syn):
    norms = syn.norms(STEADY, max_grad_norm=1.8)  # clipped 19% of the steps (1.81 .. 1.99)
    trials, settings = study(syn, syn.trial(0, 0.1, grad_norms=norms, config={"max_grad_norm": 1.8}, lr=1e-3))
    (f,) = clip_findings(clip_advice(trials, settings))
    assert f.severity == "info" and "Too aggressive" not in f.detail
    assert "It ran with max_grad_norm=1.8, which clipped 19% of its steps." in f.detail


def test_a_tuned_max_grad_norm_is_the_advice_and_the_percentile_only_a_measure(syn):
    """The paste line clips at what the search chose: the finding must not title another threshold."""
    norms = syn.norms(STEADY, max_grad_norm=1.8)
    from adamtune.space import Dimension

    settings = syn.settings(syn.LR, Dimension("max_grad_norm", 0.5, 5.0, "log"))
    trials = [syn.trial(0, 0.1, grad_norms=norms, config={"max_grad_norm": 1.8}, lr=1e-3, max_grad_norm=1.8),
              syn.trial(1, None, state=syn.S.DIVERGED, lr=5e-3, max_grad_norm=0.7, steps=50),
              syn.trial(2, 0.2, grad_norms=syn.norms(STEADY), lr=2e-3, max_grad_norm=3.0)]
    a = clip_advice(trials, settings)
    assert a.tuned and a.unstable and a.current == 1.8
    (f,) = clip_findings(a)
    assert f.title == ("clipping: the search chose max_grad_norm=1.8 for trial 0; the 90th percentile of its "
                       "gradient norms is 1.891")
    assert f.suggestion == () and f.severity == "info"  # nothing to replace: it clipped 19%


def test_no_recorded_norms_no_advice(syn):
    trials, settings = study(syn, syn.trial(0, 0.1, lr=1e-3))
    assert clip_advice(trials, settings) is None and clip_findings(None) == ()


def test_a_study_that_clipped_and_still_diverged_is_offered_no_other_threshold(syn):
    """The demo's next study run with the → clip line (max_grad_norm=1.23): the same lr diverged again, and
    the finding offered 1.13, a study named ...-max_grad_norm-max_grad_norm."""
    norms = syn.norms(STEADY, max_grad_norm=1.8)  # clipped 19% of the steps: not too often
    settings = syn.settings(syn.LR, fixed=(("max_grad_norm", 1.8),))
    trials = [syn.trial(0, 0.1, grad_norms=norms, config={"max_grad_norm": 1.8}, lr=1e-3),
              syn.trial(1, None, state=syn.S.DIVERGED, config={"max_grad_norm": 1.8}, lr=2e-3, steps=50),
              syn.trial(2, 0.2, grad_norms=norms, config={"max_grad_norm": 1.8}, lr=5e-4)]
    a = clip_advice(trials, settings)
    assert a.unstable and a.current == 1.8 and not a.tuned and not a.too_often
    (f,) = clip_findings(a)
    assert f.suggestion == ()
    assert ("The trials that diverged ran with max_grad_norm=1.8 too: clipping did not stop them, so another "
            "threshold is no fix (warmup or a smaller lr is).") in f.detail
    # the same study without clipping: the threshold, ready to set
    trials = [syn.trial(0, 0.1, grad_norms=syn.norms(STEADY), lr=1e-3),
              syn.trial(1, None, state=syn.S.DIVERGED, lr=2e-3, steps=50), syn.trial(2, 0.2, lr=5e-4)]
    (f,) = clip_findings(clip_advice(trials, syn.settings(syn.LR)))
    assert f.suggestion == ("--set max_grad_norm=1.89",) and "did not stop them" not in f.detail
