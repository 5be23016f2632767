import math

import pytest

from adamtune.analysis import CurveDiagnosis, curve_findings, diagnose_best, diagnose_curve, stability, stability_findings
from adamtune.space import Dimension

STEPS = tuple(range(10, 101, 10))
HEALTHY = tuple(0.1 + 2 * math.exp(-s / 20) for s in STEPS)  # converges, flat only near the end
TRAIN = tuple(2.2 * math.exp(-s / 25) + 0.05 for s in STEPS)  # falls all the way
OVERFIT = (2.0, 1.0, 0.5, 0.35, 0.3, 0.32, 0.36, 0.42, 0.48, 0.55)
NOISY = (2.0, 1.0, 0.6, 0.45, 0.4, 0.55, 0.35, 0.6, 0.38, 0.36)
STRAIGHT = tuple(2.0 - 0.2 * i for i in range(10))
EARLY = (1.0, 0.3, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2)
KINDS = ("overfitting", "late_variance", "still_improving", "saturated_early")


def judge(syn, val, train=TRAIN, direction="minimize", metric="val_loss"):
    metrics = {metric: val}
    if train is not None:
        metrics["train_loss"] = train
    return diagnose_curve(syn.curve(STEPS, **metrics), metric, direction)


@pytest.mark.parametrize("val, kind", [
    (OVERFIT, "overfitting"), (NOISY, "late_variance"), (STRAIGHT, "still_improving"), (EARLY, "saturated_early"),
])
def test_each_finding_fires_on_a_curve_that_has_it_and_only_there(syn, val, kind):
    d = judge(syn, val)
    assert d.judged and getattr(d, kind), d
    assert d.kinds == (kind,)
    assert judge(syn, HEALTHY).kinds == ()  # a converging curve has none of them


def test_healthy_curve_numbers(syn):
    d = judge(syn, HEALTHY)
    assert d.best_step == 100 and d.final_step == 100
    assert d.late_gain < 0.05 and d.jitter == 0 and d.saturated_at > 50


def test_overfitting_needs_the_training_loss_to_keep_falling(syn):
    rising_train = tuple(0.5 + 0.01 * i for i in range(10))
    assert not judge(syn, OVERFIT, train=rising_train).overfitting
    assert not judge(syn, OVERFIT, train=None).overfitting
    slight = OVERFIT[:5] + (0.30, 0.301, 0.302, 0.303, 0.305)  # 0.3% of the improvement: noise, not overfitting
    assert not judge(syn, slight).overfitting


def test_overfitting_of_a_maximised_metric(syn):
    accuracy = tuple(1 - v / 2.2 for v in OVERFIT)  # rises, then falls
    d = judge(syn, accuracy, direction="maximize", metric="val_accuracy")
    assert d.overfitting and d.best == pytest.approx(max(accuracy))


def test_late_variance_is_seen_in_the_training_loss_too(syn):
    noisy_train = TRAIN[:5] + (0.3, 0.12, 0.35, 0.1, 0.33)
    assert judge(syn, HEALTHY, train=noisy_train).late_variance
    assert not judge(syn, HEALTHY).late_variance


def test_a_curve_that_never_learned_and_a_short_one_are_not_judged_for_progress(syn):
    flat = tuple(2.3026 - 1e-5 * i for i in range(10))
    assert judge(syn, flat, train=None).kinds == ()
    short = diagnose_curve(syn.curve((10, 20, 30), val_loss=(1.0, 0.5, 0.4)), "val_loss")
    assert not short.judged and short.kinds == ()


def test_findings_need_the_best_trial_or_half_of_the_best(syn):
    yes = CurveDiagnosis(1, 10, True, 30, 100, 0.2, 0.2, saturated_early=True, saturated_at=30, saturated_value=0.2)
    no = CurveDiagnosis(2, 10, True, 100, 100, 0.2, 0.2)
    assert curve_findings([no, yes, no], "val_loss") == ()
    (f,) = curve_findings([no, yes, yes], "val_loss")
    assert f.kind == "saturated_early" and f.trials == (1, 1)  # the trials it holds for
    (f,) = curve_findings([yes, no, no], "val_loss")
    assert f.title == "saturated early: train shorter" and f.severity == "info"
    assert "In trial 1: val_loss reached its best (0.2) at step 30 of 100 and was no better after." in f.detail
    later = CurveDiagnosis(1, 10, True, 60, 100, 0.19, 0.2, saturated_early=True, saturated_at=30, saturated_value=0.193)
    (f,) = curve_findings([later], "val_loss")
    assert "val_loss was 0.193 by step 30 of 100, within 2% of its best (0.19, at step 60)" in f.detail


def test_diagnose_best_takes_the_best_completed_trials(syn):
    settings = syn.settings(syn.LR)
    trials = [
        syn.trial(0, 0.55, curve=syn.curve(STEPS, val_loss=OVERFIT, train_loss=TRAIN), lr=1e-3),
        syn.trial(1, 0.2, curve=syn.curve(STEPS, val_loss=EARLY, train_loss=TRAIN), lr=2e-3),
        syn.trial(2, 0.1, state=syn.S.PRUNED, curve=syn.curve(STEPS, val_loss=NOISY), lr=3e-3),
    ]
    ds = diagnose_best(trials, settings)
    assert [d.number for d in ds] == [1, 0]
    kinds = {f.kind for f in curve_findings(ds, "val_loss")}
    assert kinds == {"saturated_early"}  # the best trial's; overfitting holds for one of two only
    titles = [f.title for f in curve_findings(ds[::-1], "val_loss")]  # now the overfitting one is "best"
    assert titles == ["overfitting: val_loss turns worse while the training loss falls"]


def stab_study(syn, rows, best_value_of=lambda lr: lr):
    trials = [
        syn.trial(i, None if state == syn.S.DIVERGED else abs(math.log10(lr) + 2.5), state, lr=lr)
        for i, (lr, state) in enumerate(rows)
    ]
    return trials, syn.settings(syn.LR)


def test_stability_reports_the_largest_stable_and_smallest_diverged_lr(syn):
    C, D, P = syn.S.COMPLETE, syn.S.DIVERGED, syn.S.PRUNED
    trials, settings = stab_study(syn, [(1e-4, C), (1e-3, C), (3e-3, C), (5e-3, P), (8e-3, D), (1e-2, D)])
    s = stability(trials, settings)
    # the pruned trial at 5e-3 may have stopped before it would have diverged: it proves nothing
    assert s.diverged == (4, 5) and s.largest_stable_lr == 3e-3 and s.smallest_diverged_lr == 8e-3
    assert s.best_lr == 3e-3 and s.limits_best and not s.overlap
    (f,) = stability_findings(s)
    assert f.kind == "unstable" and f.severity == "warning"
    assert f.title == "unstable: 2 of 6 trials diverged, from lr ≈ 0.008"
    assert "the largest that trained to the end without diverging 0.003" in f.detail


def test_divergence_far_above_the_best_lr_is_only_information(syn):
    C, D = syn.S.COMPLETE, syn.S.DIVERGED
    trials, settings = stab_study(syn, [(1e-5, C), (3e-5, C), (1e-4, C), (3e-3, C), (1e-2, D)])
    trials[2] = syn.trial(2, 0.0, lr=1e-4)  # the best, far below the unstable region
    s = stability(trials, settings)
    assert s.best_lr == 1e-4 and not s.limits_best
    (f,) = stability_findings(s)
    assert f.severity == "info" and "well below it" in f.detail


def test_overlap_and_no_divergence(syn):
    C, D = syn.S.COMPLETE, syn.S.DIVERGED
    trials, settings = stab_study(syn, [(1e-3, D), (3e-3, C)])
    s = stability(trials, settings)
    assert s.overlap and "depends on the other hyperparameters" in stability_findings(s)[0].detail
    trials, settings = stab_study(syn, [(1e-3, C), (3e-3, C)])
    assert stability_findings(stability(trials, settings)) == ()


def test_a_flat_curve_with_minibatch_noise_has_no_late_variance(syn):
    # lr far too low: val and train loss stay at 2.30, jittering by 0.001 (the audit's case)
    flat = tuple(2.30 + 0.001 * (-1) ** i for i in range(10))
    d = judge(syn, flat, train=tuple(2.301 + 0.0015 * (-1) ** i for i in range(10)))
    assert d.kinds == () and d.jitter > 0.1  # the jitter is large against no improvement: not judged


def test_saturated_early_means_close_to_the_best_value_not_only_to_the_whole_drop(syn):
    # from an evaluation at the start (2.303) the drop is large; at mid-training the loss (0.141)
    # is within 2% of that drop of its best (0.098) but 44% above it: not saturated
    falling = (2.303, 0.5, 0.2, 0.16, 0.141, 0.13, 0.12, 0.11, 0.104, 0.098)
    d = judge(syn, falling)
    assert not d.saturated_early and d.saturated_at == 100
    d = judge(syn, EARLY)
    assert d.saturated_early and d.saturated_at == 30 and d.saturated_value == 0.2


def _flat_study(syn, values=(2.3009, 2.3012, 2.2995, 2.3004)):
    """lr far too low: every trial's val_loss stays at 2.30, jittering by 0.001."""
    settings = syn.settings(syn.LR)
    trials = [syn.trial(i, v, curve=syn.curve(STEPS, val_loss=tuple(v + 0.001 * (-1) ** k for k in range(10))),
                        lr=10 ** (-8 + i / 4)) for i, v in enumerate(values)]
    return trials, settings


def test_a_study_where_no_trial_moved_has_learned_nothing(syn):
    from adamtune.analysis import progress, progress_findings

    trials, settings = _flat_study(syn)
    p = progress(trials, settings)
    assert p.nothing_learned and p.trained == (0, 1, 2, 3) and p.moved == ()
    assert p.largest_lr == pytest.approx(10 ** -7.25)
    (f,) = progress_findings(p, "val_loss")
    assert f.kind == "no_learning" and f.severity == "warning" and "larger" in f.action
    assert f.title == "nothing learned: no trial moved val_loss by 1% from its first evaluation"
    assert f.detail.startswith("All 4 trials that trained stayed at val_loss ≈ 2.30") and "lr up to 5.623e-08" in f.detail
    # one trial that learned, or trials that ended far apart (they learned before their first
    # evaluation), and something was learned
    trials.append(syn.trial(4, 0.3, curve=syn.curve(STEPS, val_loss=HEALTHY), lr=1e-3))
    assert not progress(trials, settings).nothing_learned
    trials, settings = _flat_study(syn, values=(2.3, 1.1, 0.4, 0.2))
    assert not progress(trials, settings).nothing_learned and progress_findings(progress(trials, settings), "x") == ()


def test_nothing_learned_replaces_the_boundary_check_and_raises_the_lr_window(syn):
    from adamtune.analysis import analyze, next_space
    from adamtune.results import TuneResult

    trials, settings = _flat_study(syn)
    trials[3] = syn.trial(3, 2.2985, curve=trials[3].curve, lr=syn.lr_at(0.01))  # best by noise, at the bottom
    a = analyze(TuneResult("s", settings, tuple(trials), None, None))
    kinds = [f.kind for f in a.findings]
    assert kinds[0] == "no_learning" and "boundary" not in kinds and "late_variance" not in kinds
    lr = next_space(trials, settings).dimensions[0]
    assert lr.change == "raise" and lr.window.low == pytest.approx(syn.LR.high)
    assert lr.window.high == pytest.approx(syn.LR.high * 1000) and "no trial learned" in lr.reason


def _diverged_early(syn, lrs, step):
    settings = syn.settings(Dimension("lr", min(lrs), max(lrs), "log"), budget=len(lrs))
    return [syn.trial(i, None, syn.S.DIVERGED, steps=step, lr=lr) for i, lr in enumerate(lrs)], settings


def test_every_trial_diverged_in_its_first_steps_at_lrs_decades_apart_points_to_the_data(syn):
    from adamtune.analysis import analyze, next_space
    from adamtune.results import TuneResult

    # the audit's case: NaN in the inputs, every trial "diverged @2" at lrs from 1.1e-5 to 3.6e-3
    trials, settings = _diverged_early(syn, (1.1e-5, 4e-5, 1.5e-4, 6e-4, 1.2e-3, 3.6e-3), 2)
    s = stability(trials, settings)
    assert s.from_the_start and not s.window_too_high
    (f,) = stability_findings(s)
    assert f.kind == "nonfinite_start" and "data" in f.action and "set_detect_anomaly" in f.action
    assert f.title == "every trial diverged in its first steps, at lrs from 1.1e-05 to 0.0036: look at the data and the loss, not the lr"
    ns = next_space(trials, settings)
    assert not ns.lowered and ns.dimensions[0].window == settings.space.dimensions[0]  # not sent 3 decades down
    a = analyze(TuneResult("s", settings, tuple(trials), None, None))
    assert a.too_few_text.endswith("every trial diverged in its first steps: look at the data and the loss first")
    # a loss non-finite at step 1 (the initial weights' loss), even within one decade
    trials, settings = _diverged_early(syn, (1e-3, 2e-3, 5e-3), 1)
    (f,) = stability_findings(stability(trials, settings))
    assert f.kind == "nonfinite_start" and "before any update" in f.detail


def test_an_lr_window_far_too_high_diverging_early_is_still_the_lrs_doing(syn):
    # AdamW at lr 5-50: every trial blows up at step 2 or 3, within one decade: lower the lr
    trials, settings = _diverged_early(syn, (5.0, 9.0, 20.0, 50.0), 2)
    s = stability(trials, settings)
    assert not s.from_the_start and s.window_too_high
    (f,) = stability_findings(s)
    assert f.kind == "lr_too_high" and f.action.startswith("Half or more of the trials diverged")  # all did here


def test_an_lr_window_too_high_is_not_said_to_only_mark_where_instability_begins(syn):
    """One trial trained at a low lr, most diverged above: the window moves down, so 'this only
    marks where the window's unstable end begins' (the info wording of a stable best) is not said."""
    trials = [syn.trial(0, 0.5, lr=1e-5), syn.trial(1, None, syn.S.DIVERGED, lr=3e-3, steps=30),
              syn.trial(2, None, syn.S.DIVERGED, lr=5e-3, steps=30)]
    s = stability(trials, syn.settings(syn.LR))
    assert s.window_too_high and not s.limits_best
    (f,) = stability_findings(s)
    assert f.kind == "lr_too_high" and "only marks" not in f.detail


# An early best (0.2 at step 40), a spike, and back down: the second half is mostly the way down.
SPIKE = (1.0, 0.5, 0.3, 0.2, 0.4, 0.38, 0.3, 0.22, 0.215, 0.21)


def test_a_spike_after_an_early_best_that_comes_back_down_is_a_dip_not_saturation(syn):
    d = judge(syn, SPIKE)
    assert not d.late_variance  # the second half alone swings little: 0.38, 0.3, 0.22, 0.215, 0.21
    assert d.within_noise and d.swing == pytest.approx(0.19 / 0.8)
    assert not d.saturated_early and not d.overfitting and d.kinds == ()


@pytest.mark.parametrize("val", [
    SPIKE[:-3] + (0.36, 0.37, 0.36),  # the spike came back down less than the end lies above the best
    SPIKE[:4] + (0.9, 0.6, 0.5, 0.45, 0.42, 0.42),  # a loss spike not recovered from: 28% of the improvement
])
def test_an_end_that_stays_well_above_an_early_best_is_a_length_to_keep(syn, val):
    d = judge(syn, val)
    assert not d.within_noise and d.kinds == ("overfitting",)  # the training loss kept falling


def test_a_curve_climbing_beyond_its_jitter_is_still_overfitting(syn):
    jittery = OVERFIT[:5] + (0.33, 0.31, 0.42, 0.4, 0.52)  # up 0.22, down 0.02 twice on the way
    d = judge(syn, jittery)
    assert d.overfitting and not d.within_noise and d.swing < d.rise


def test_an_end_within_one_percent_of_its_best_keeps_its_saturation(syn):
    flat_noise = EARLY[:2] + (0.2, 0.2005, 0.1998, 0.2004, 0.2001, 0.2003, 0.1999, 0.2002)
    d = judge(syn, flat_noise)
    assert d.saturated_early and not d.within_noise
