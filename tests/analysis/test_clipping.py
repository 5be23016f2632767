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
        syn.trial(2, None, state=syn.S.DIVERGED, lr=2.5e-3, steps=50),  # 2.5x the best lr: near it
    )
    a = clip_advice(trials, settings)
    assert a.unstable
    (f,) = clip_findings(a)
    assert f.title.startswith("warmup first (--set warmup=0.05), then clipping: max_grad_norm ≈ 1.891 (the 90th "
                              "percentile of trial 0's")
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
              syn.trial(1, None, state=syn.S.DIVERGED, lr=2.5e-3, max_grad_norm=0.7, steps=50),
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


# The audit's studies, as they were stored: number, state, val_loss, steps, lr, weight_decay (beta1),
# gradient-norm summary (count, mean, p50, p90, p99, max), the val_loss curve (evaluated every eval_every steps).
CHARLM_NEXT_NEXT = (  # lr 1e-05..3.7, weight_decay 0.001..0.3, beta2 0.95; 250 steps, evaluated every 50
    (0, "C", 3.06785, 250, 0.544793, 0.202818, (250, 1.43217, 0.468959, 4.02323, 12.1907, 13.8159),
     (3.2326, 3.1272, 3.227, 3.0777, 3.0679)),
    (1, "C", 2.33755, 250, 0.00326892, 0.00259133, (250, 0.412119, 0.362682, 0.520705, 1.37878, 1.74855),
     (2.6747, 2.4594, 2.4193, 2.383, 2.3375)),
    (2, "P", 3.11242, 100, 0.000242668, 0.0292131, (100, 1.1043, 1.15871, 1.49985, 1.74425, 1.75178), (3.6189, 3.1124)),
    (3, "C", 2.26911, 250, 0.017893, 0.00644681, (250, 0.338453, 0.294672, 0.4398, 1.22396, 1.51223),
     (2.5349, 2.418, 2.3758, 2.3291, 2.2691)),
    (4, "P", 2.68878, 100, 0.0496077, 0.0578359, (100, 0.376575, 0.19911, 0.695641, 1.99829, 4.43432), (2.7642, 2.6888)),
    (5, "P", 5.1293, 100, 1.20691e-05, 0.0129108, (100, 1.42684, 1.41153, 1.69131, 1.81297, 1.83376), (5.1984, 5.1293)),
    (6, "P", 2.83829, 100, 0.000548509, 0.100738, (100, 0.881362, 0.7863, 1.46356, 1.69812, 1.71133), (3.1538, 2.8383)),
    (7, "D", None, 50, 0.997493, 0.00130197, (50, 47.6867, 47.7534, 75.2108, 85.8305, 89.4577), (151.96,)),
)
MLP_NEXT_16 = (  # digits-mlp-next at 16 trials (the README's demo): lr 1e-05..0.32, 400 steps, evaluated every 25
    (0, "C", 0.0785668, 400, 0.0679227, 0.147856, 0.993167, (400, 0.66393, 0.555005, 1.22585, 1.94552, 6.77308),
     (0.48434, 0.24806, 0.22187, 0.16618, 0.17438, 0.09328, 0.078567, 0.11655, 0.086173, 0.082145, 0.10648, 0.091365,
      0.10248, 0.12996, 0.12766, 0.098619)),
    (1, "P", 2.28348, 100, 1.76003e-05, 0.000653422, 0.888257, (100, 0.268509, 0.266262, 0.311337, 0.360048, 0.388906),
     (2.297, 2.2926, 2.2881, 2.2835)),
    (2, "P", 1.80273, 100, 0.000320968, 0.00542845, 0.998979, (100, 0.412107, 0.389429, 0.583968, 0.694306, 0.698516),
     (2.2232, 2.1214, 1.9803, 1.8027)),
    (3, "P", 0.197922, 100, 0.00192707, 2.42328e-05, 0.948942, (100, 0.924881, 0.903509, 1.35304, 1.97986, 2.82366),
     (1.4336, 0.46567, 0.28208, 0.19792)),
    (4, "P", 0.105716, 300, 0.0180592, 0.0214901, 0.933384, (300, 0.513155, 0.385302, 1.19724, 2.04354, 2.6732),
     (0.35424, 0.14848, 0.11419, 0.086612, 0.08263, 0.087062, 0.065688, 0.081968, 0.080939, 0.088178, 0.085453,
      0.10572)),
    (5, "P", 0.716404, 100, 0.000837115, 9.22619e-05, 0.988527, (100, 0.650952, 0.661255, 1.00555, 1.34983, 1.46885),
     (2.117, 1.7024, 1.1415, 0.7164)),
    (6, "P", 2.21715, 100, 8.62345e-05, 0.0380497, 0.97713, (100, 0.295199, 0.289208, 0.347292, 0.379871, 0.46008),
     (2.2868, 2.2656, 2.2429, 2.2172)),
    (7, "P", 0.487482, 100, 0.0926186, 0.00016172, 0.9977, (100, 1.59943, 1.23097, 2.21408, 7.00311, 26.4366),
     (1.0964, 0.72855, 0.64367, 0.48748)),
    (8, "D", None, 25, 0.191865, 0.00236269, 0.984736, (25, 11.4349, 2.20912, 31.0027, 71.1748, 77.551), (1.785,)),
    (9, "P", 2.26579, 100, 4.89063e-05, 1.76203e-05, 0.996487, (100, 0.261736, 0.259666, 0.301292, 0.333289, 0.375059),
     (2.301, 2.2892, 2.2776, 2.2658)),
    (10, "P", 0.203419, 100, 0.00173695, 0.196735, 0.900212, (100, 0.880748, 0.861412, 1.31459, 1.65565, 1.68373),
     (1.4558, 0.47412, 0.28206, 0.20342)),
    (11, "C", 0.0847161, 400, 0.0102318, 0.00148204, 0.992489, (400, 0.532731, 0.387426, 1.33968, 2.40545, 2.92196),
     (0.39891, 0.25822, 0.18359, 0.16577, 0.15196, 0.10457, 0.11184, 0.1284, 0.12683, 0.10649, 0.08651, 0.08698,
      0.084716, 0.11941, 0.1035, 0.095411)),
    (12, "P", 0.35012, 100, 0.00399327, 0.05831, 0.998438, (100, 1.52976, 1.52811, 2.44062, 3.0248, 3.60522),
     (0.63385, 0.3557, 0.25404, 0.35012)),
    (13, "P", 2.02048, 100, 0.000182089, 0.000457884, 0.965879, (100, 0.347839, 0.341289, 0.450186, 0.558618, 0.563304),
     (2.2566, 2.2, 2.1229, 2.0205)),
    (14, "P", 2.26767, 100, 3.65074e-05, 0.0078056, 0.995533, (100, 0.26335, 0.259623, 0.305292, 0.336733, 0.372235),
     (2.2934, 2.2848, 2.2763, 2.2677)),
    (15, "P", 0.0988253, 300, 0.0384711, 6.06802e-05, 0.832829, (300, 0.705116, 0.605359, 1.36995, 2.05294, 3.18454),
     (0.39966, 0.24551, 0.13386, 0.14724, 0.18866, 0.22196, 0.19835, 0.078877, 0.10392, 0.064478, 0.14841, 0.098825)),
)


def stored_study(syn, name, rows, windows, every, fixed=(), workload="charlm", task="llm", info=None):
    """``rows`` as ``analyze`` reads them back from the audit's storage (``STATE`` C, P or D)."""
    from dataclasses import replace

    from adamtune.analysis import analyze
    from adamtune.results import TuneResult
    from adamtune.trials import GradNorms

    states = {"C": syn.S.COMPLETE, "P": syn.S.PRUNED, "D": syn.S.DIVERGED}
    names = [w.name for w in windows]
    trials = []
    for number, state, value, steps, *params, norms, val_loss in rows:
        p = dict(zip(names, params))
        config = {"optimizer": "adamw", "beta1": 0.9, "max_grad_norm": None, **dict(fixed), **p, "warmup": 0.0}
        curve = syn.curve([every * (i + 1) for i in range(len(val_loss))], val_loss=val_loss)
        trials.append(syn.trial(number, value, states[state], curve=curve, config=config, steps=steps,
                                grad_norms=GradNorms(*norms, 0.0), **p))
    settings = replace(syn.settings(*windows, fixed=fixed), workload=workload, workload_name=workload, task=task,
                       budget=len(rows), pruner="asha", workload_info=info or {})
    return analyze(TuneResult(name, settings, tuple(trials), None, None), storage="sqlite:///runs.db")


def the(analysis, kind):
    (f,) = [f for f in analysis.findings if f.kind == kind]
    return f


def test_divergence_far_above_the_best_lr_offers_no_clipping_study(syn):
    """The audit's charlm-next-next: trial 7 diverged at lr 0.9975, 56x the best trial's 0.01789, and the
    unstable finding said "this only marks where the window's unstable end begins"; the clipping finding
    beside it offered "→ clip in a new study: ... --set max_grad_norm=0.44", a threshold that clipped 53% of
    trial 0's steps."""
    from adamtune.space import Dimension
    from adamtune.report.findings import findings_lines

    a = stored_study(syn, "charlm-next-next", CHARLM_NEXT_NEXT,
                     (Dimension("lr", 1e-05, 3.7, "log"), Dimension("weight_decay", 0.001, 0.3, "log")), 50,
                     fixed=(("beta2", 0.95),), info={"steps": 250, "batch_size": 16, "train_examples": 3956})
    unstable = the(a, "unstable")
    assert unstable.severity == "info" and "only marks where the window's unstable end begins" in unstable.detail
    clip = the(a, "clip")
    assert clip.suggestion == () and clip.new_study is None
    assert clip.title == ("if you need clipping (loss spikes, divergence), use max_grad_norm ≈ 0.4398 (the 90th "
                          "percentile of trial 3's gradient norms)")
    assert ("1 trial diverged, from lr ≈ 0.9975, 56x the best trial's lr (0.01789): that only marks where the lr "
            "window's unstable end begins, so nothing here calls for clipping") in clip.detail
    text = "\n".join(line.plain for line in findings_lines(a))
    assert "→ clip" not in text and "max_grad_norm=0.44" not in text


def test_divergence_near_the_best_lr_offers_clipping_after_warmup(syn):
    """The README's demo, digits-mlp-next at 16 trials: trial 8 diverged at lr 0.1919, 2.8x the best trial's
    0.06792: the unstable finding is a warning, and the clipping study is offered; warmup, the advice's
    first step, comes first in its title."""
    from adamtune.space import Dimension
    from adamtune.report.findings import findings_lines

    a = stored_study(syn, "digits-mlp-next", MLP_NEXT_16,
                     (Dimension("lr", 1e-05, 0.32, "log"), syn.WD, syn.BETA1), 25, workload="digits-mlp",
                     task="generic", info={"steps": 400, "batch_size": 64, "train_examples": 1438})
    assert the(a, "unstable").severity == "warning"
    clip = the(a, "clip")
    assert clip.suggestion == ("--set max_grad_norm=1.23",) and clip.new_study is not None
    assert clip.title == ("warmup first (--set warmup=0.05), then clipping: max_grad_norm ≈ 1.226 (the 90th "
                          "percentile of trial 0's gradient norms)")
    assert ("Warmup comes first: trial 0 ran without it. Try --set warmup=0.05 (5% of the steps) before clipping, "
            "in the study the unstable finding gives; clip if trials still diverge with it.") in clip.detail
    lines = [line.plain for line in findings_lines(a)]
    i = lines.index("  · " + clip.title)
    assert lines[i + 1].startswith("      → clip in a new study: adamtune tune --workload digits-mlp ")
    assert lines[i + 1].endswith(" --set max_grad_norm=1.23")
    # warmup, the first step, has a study of its own too, under the unstable warning (listed first)
    unstable = the(a, "unstable")
    j = lines.index("  ! " + unstable.title)
    assert j < i and lines[j + 1].startswith("      → warm up in a new study: adamtune tune --workload digits-mlp ")
    assert lines[j + 1].endswith(" --study digits-mlp-next-warmup --set lr=1e-05:0.32 --set weight_decay=1e-05:0.3 "
                                 "--set beta1=0.8:0.999 --set warmup=0.05")


def test_a_study_that_warmed_up_and_still_diverged_gets_clipping_as_the_next_step(syn):
    trials, settings = study(
        syn,
        syn.trial(0, 0.1, grad_norms=syn.norms(STEADY), config={"warmup": 0.05}, lr=1e-3),
        syn.trial(1, 0.2, grad_norms=syn.norms(STEADY), config={"warmup": 0.05}, lr=2e-3),
        syn.trial(2, None, state=syn.S.DIVERGED, config={"warmup": 0.05}, lr=2.5e-3, steps=50),
    )
    (f,) = clip_findings(clip_advice(trials, settings))
    assert f.title.startswith("clipping: max_grad_norm ≈ 1.891") and f.suggestion == ("--set max_grad_norm=1.89",)
    assert "Trial 0 ran with warmup=0.05 already: clipping is the next step." in f.detail


def test_a_study_that_clipped_and_still_diverged_is_offered_warmup_at_its_own_lrs(syn):
    """It was told 'another threshold is no fix (warmup or a smaller lr is)' with no warmup study to run; a
    warmup study took the next search's lr window, cut below the lrs that diverged, so it tested nothing."""
    from adamtune.space import Dimension
    from adamtune.report.findings import findings_lines

    a = stored_study(syn, "digits-mlp-next", MLP_NEXT_16,
                     (Dimension("lr", 1e-05, 0.32, "log"), syn.WD, syn.BETA1), 25, workload="digits-mlp",
                     task="generic", info={"steps": 400, "batch_size": 64, "train_examples": 1438},
                     fixed=(("max_grad_norm", 1.2),))
    unstable = the(a, "unstable")
    assert unstable.severity == "warning" and unstable.suggestion == ("--set warmup=0.05",)
    assert "another threshold is no fix (warmup or a smaller lr is)" in the(a, "clip").detail
    lines = [line.plain for line in findings_lines(a)]
    (warm,) = [line for line in lines if line.startswith("      → warm up in a new study: ")]
    assert " --set lr=1e-05:0.32 " in warm and warm.endswith(" --set max_grad_norm=1.2 --set warmup=0.05")
