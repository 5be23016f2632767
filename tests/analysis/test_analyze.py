"""What the terminal's Next line and the report's next-search lead say, from ``analyze`` (the audit's
studies rebuilt as records: a fixed lr that learned nothing, every trial failed, lrs that failed,
digits-mlp-next and its weight-decay test)."""

import dataclasses
import html
import math
import re

from adamtune.analysis import analyze
from adamtune.report.findings import findings_lines
from adamtune.report.html import render_html
from adamtune.results import TuneResult
from adamtune.space import Dimension, parse_override, preset, with_overrides

URL = "sqlite:///runs/x.db"
STEPS = (100, 200, 300, 400)
RUN = {"steps": 400, "batch_size": 64, "train_examples": 1437}  # an epoch: 22.5 steps


def lines(analysis):
    return [line.plain for line in findings_lines(analysis)]


def next_lead(analysis):
    page = render_html(analysis)
    box = page[page.index('<section id="next"'):]
    return html.unescape(re.sub(r"<[^>]+>", "", box[box.index('<p class="lead">'):box.index("</p>")]))


def failed(syn, number, error, **params):
    tb = f'Traceback (most recent call last):\n  File "wl.py", line 7, in nanacc\n{error}\n'
    return dataclasses.replace(syn.trial(number, None, syn.S.FAILED, **params), error=tb)


def fixed_lr_study(syn, lr=1e-9):
    """The audit's nl study: --set lr=1e-9 --set beta1=0.5:0.99, every val_loss flat at 2.3."""
    beta1 = Dimension("beta1", 0.5, 0.99, "log1m")
    settings = syn.settings(syn.WD, beta1, budget=12, fixed=(("lr", lr),))
    flat = syn.curve(STEPS, val_loss=(2.31, 2.305, 2.302, 2.301))
    trials = tuple(syn.trial(i, 2.301 + 0.001 * i, curve=flat, config={"lr": lr}, weight_decay=syn.WD.from_unit(u),
                             beta1=beta1.from_unit(u)) for i, u in enumerate((0.1, 0.5, 0.9, 0.3, 0.7, 0.2)))
    return analyze(TuneResult("nl", settings, trials, None, None), storage=URL)


def test_a_fixed_lr_that_learned_nothing_is_named_and_tuned_not_blamed_on_failed_lrs(syn):
    """The audit's nl: lr fixed at 1e-9, no trial failed; the Next line said "the larger lrs failed"
    and offered the same study with twice the budget (every trial again at lr 1e-9)."""
    a = fixed_lr_study(syn)
    assert a.progress.nothing_learned and not a.failures.failed
    ns = a.next_space
    assert not ns.continues and ns.tuned_lr == Dimension("lr", 1e-5, 1e-2, "log") and ns.fixed_lr == 1e-9
    note = ("no trial learned anything with lr fixed at 1e-09, below 1e-05..0.01, the lr window adamtune searches "
            "for adamw: the next search tunes lr over that window and keeps the rest; a study continued would keep "
            "its fixed lr")
    assert lines(a)[-1] == (
        "Next search: adamtune tune --workload digits-mlp --optimizer adamw --task generic --budget 12 --pruner none "
        f"--storage {URL} --study nl-next --set lr=1e-05:0.01 --set weight_decay=1e-05:0.3 --set beta1=0.5:0.99"
        f"  ({note})")
    text = "\n".join(lines(a))
    assert "larger lrs failed" not in text and "--budget 24" not in text
    lead = next_lead(a)
    assert lead == f"{note[0].upper()}{note[1:]}."
    # what `adamtune tune --set ...` makes of it: lr tuned over that window, the rest as the study had it
    rebuilt = with_overrides(preset("adamw", "generic", 12), ns.set_arguments)
    assert rebuilt.dimension("lr") == ns.tuned_lr and "lr" not in dict(rebuilt.fixed)
    assert rebuilt.dimension("beta1") == a.result.settings.space.dimension("beta1")
    # a fixed lr inside that window: nothing learned at a usual lr points past lr too
    inside = fixed_lr_study(syn, lr=1e-3)
    assert inside.tuned_lr_text.startswith("no trial learned anything with lr fixed at 0.001: the next search tunes "
                                           "lr over 1e-05..0.01, the lr window adamtune searches for adamw")
    assert inside.tuned_lr_text.endswith("; if no lr there learns either, look at the model, the data and the loss")


def test_every_trial_failing_says_fix_the_error_first_not_that_more_trials_give_them(syn):
    """The audit's nanb: the metric returned NaN in every trial; the Next line said "more trials of this
    study give them", and running it failed the same way."""
    settings = syn.settings(syn.LR, syn.WD, budget=8)
    error = "adamtune.errors.WorkloadError: the objective's metric 'nanacc' returned nan at step 25: check the metric"
    trials = tuple(failed(syn, i, error, lr=syn.lr_at(u), weight_decay=syn.WD.from_unit(u))
                   for i, u in enumerate((0.3, 0.7, 0.5)))
    a = analyze(TuneResult("nanb", settings, trials, None, None), storage=URL)
    note = ("fix the error first: every trial failed and none completed, so more trials of this study would fail the "
            "same way; the failed-trials finding gives the error, and every traceback: adamtune show --json --storage "
            f"{URL} --study nanb; once it is fixed, this command runs more trials")
    assert lines(a)[-1] == f"Next: adamtune tune --storage {URL} --study nanb --budget 16  ({note})"
    assert "more trials of this study give them" not in "\n".join(lines(a))
    assert next_lead(a).startswith("Fix the error first: every trial failed and none completed")
    # failures the most, none completed: the same; a failure among many pruned trials: more trials do give them
    pruned = [syn.trial(3 + i, 1.5, syn.S.PRUNED, lr=syn.lr_at(0.1 + 0.2 * i), weight_decay=0.01) for i in range(2)]
    a = analyze(TuneResult("nanb", settings, (*trials, *pruned), None, None), storage=URL)
    assert a.keep_text.startswith("fix the error first: 3 of 5 trials failed and none completed")
    pruned = [syn.trial(1 + i, 1.5, syn.S.PRUNED, lr=syn.lr_at(0.1 + 0.1 * i), weight_decay=0.01) for i in range(6)]
    a = analyze(TuneResult("nanb", settings, (trials[0], *pruned), None, None), storage=URL)
    assert a.keep_text.startswith("too few completed trials to move the windows") and "fix the error" not in a.keep_text


def exploding(syn, lr_window=Dimension("lr", 1e-4, 3.0, "log")):
    """The audit's ex (explode.py, --set lr=1e-4:3): a loss that raises above 5 failed the 5 largest lrs;
    the best trial's weight decay barely acts in its 400-step run."""
    settings = dataclasses.replace(syn.settings(lr_window, syn.WD, syn.BETA1, budget=12), workload="explode.py:W",
                                   workload_info=RUN)
    good = [(0.0185, 1e-3, 0.9, 0.1), (0.004, 0.03, 0.95, 0.2), (0.0007, 1e-4, 0.85, 0.25), (0.05, 0.1, 0.99, 0.3),
            (0.0003, 3e-5, 0.9, 0.4), (0.01, 0.003, 0.97, 0.35), (0.002, 0.2, 0.88, 0.45)]
    trials = [syn.trial(i, v, config={"lr": lr, "weight_decay": wd}, steps=400, lr=lr, weight_decay=wd, beta1=b1)
              for i, (lr, wd, b1, v) in enumerate(good)]
    trials += [failed(syn, 7 + i, f"RuntimeError: loss exploded: {1000 * lr:.3g}", lr=lr, weight_decay=0.01, beta1=0.9)
               for i, lr in enumerate((0.098, 0.3, 0.7, 1.4, 2.6))]
    return analyze(TuneResult("ex", settings, tuple(trials), None, None), storage=URL)


def test_a_weight_decay_test_takes_lr_below_the_failures_as_the_next_search_does(syn):
    """The audit's ex: the test study kept lr=0.0001:3 and spent 5 of its 12 trials on the same failing
    lrs (the same seed, the same points); at lr 3 its weight_decay window reached lr·weight_decay = 7.2.
    Its lr window is now the one around the best trial's lr, inside the next search's cut one."""
    a = exploding(syn)
    assert a.failures.lr_ceiling == 0.098 and a.next_space.below_failed == 0.098
    cut = a.next_space.cut_lr
    assert cut is not None and cut.high < 0.098
    (f,) = a.of_kind("decay_timescale")
    test = f.new_study
    lr = parse_override(test.set_arguments[0])[1]
    assert test.set_arguments[0] == "lr=0.0044:0.078" and cut.low < lr.low and lr.high < cut.high
    assert test.set_arguments[-1] == f.suggestion[0].removeprefix("--set ") == "weight_decay=0.135:2.4"
    assert (f"      → test in a new study: adamtune tune --workload explode.py:W --optimizer adamw --task generic "
            f"--budget 12 --pruner none --storage {URL} --study ex-weight_decay --set lr=0.0044:0.078 --set "
            "beta1=0.8:0.999 --set weight_decay=0.135:2.4") in lines(a)
    assert ("with --set weight_decay=0.135:2.4 and this study's other windows and fixed values, but lr narrowed to "
            "0.0044..0.078, within a factor of 4.2 of trial 0's lr: the window gives τ = 22..400 steps at that lr only "
            "(a trial at k times the lr has a τ k times shorter), and about 75% of the trials land in that range "
            "there, against 38% over lr's window cut below the lrs that failed, 0.0001..0.09, as in the next "
            "search") in f.detail
    # nowhere in the test's box does AdamW's multiplier 1 - lr·weight_decay come near zero
    top = parse_override(test.set_arguments[-1])[1].high
    assert lr.high * top <= 0.5
    # a clipping threshold is tried at the study's own lrs: whether it lets them train is the test
    from adamtune.analysis import change_study

    clip = change_study(a.result.settings, "max_grad_norm=1.3", a.next_space, "ex")
    assert clip.set_arguments[0] == "lr=0.0001:3"


def test_a_weight_decay_test_over_a_wide_lr_window_searches_lr_around_the_best_trials(syn):
    """Without the failures the test study searched the study's lr window up to 0.3 or 3: the window
    computed at the best trial's lr (0.135..2.4, τ from the run to an epoch at lr 0.0185) reached
    lr·weight_decay = 7.2 there, and most trials had τ outside the range; it was cut at its top, or
    not given at all. Around the best trial's lr, it is given whole."""
    for top, share in ((0.3, "36%"), (3.0, "28%")):
        a = exploding(syn, Dimension("lr", 1e-4, top, "log"))
        a = analyze(dataclasses.replace(a.result, trials=a.result.trials[:7]), storage=URL)  # no failures
        assert a.next_space.cut_lr is None
        (f,) = a.of_kind("decay_timescale")
        assert f.suggestion == ("--set weight_decay=0.135:2.4",) and "Its top stops" not in f.detail
        assert f.new_study.set_arguments[0] == "lr=0.0044:0.078"
        assert (f"about 75% of the trials land in that range there, against {share} over this study's lr window "
                f"0.0001..{top:g} (a study continued keeps its own search space).") in f.detail
        assert 0.078 * 2.4 <= 0.5

# The audit's digits-mlp-next at 32 trials (its mlp.db): (number, state, val_loss, lr, weight_decay, beta1, steps).
MLP_NEXT = (
    (0, "C", 0.07857, 0.06792, 0.1479, 0.9932, 400), (1, "P", 2.283, 1.76e-05, 0.0006534, 0.8883, 100),
    (2, "P", 1.803, 0.000321, 0.005428, 0.999, 100), (3, "P", 0.1979, 0.001927, 2.423e-05, 0.9489, 100),
    (4, "P", 0.1057, 0.01806, 0.02149, 0.9334, 300), (5, "P", 0.7164, 0.0008371, 9.226e-05, 0.9885, 100),
    (6, "P", 2.217, 8.623e-05, 0.03805, 0.9771, 100), (7, "P", 0.4875, 0.09262, 0.0001617, 0.9977, 100),
    (8, "D", None, 0.1919, 0.002363, 0.9847, 25), (9, "P", 2.266, 4.891e-05, 1.762e-05, 0.9965, 100),
    (10, "P", 0.2034, 0.001737, 0.1967, 0.9002, 100), (11, "C", 0.08472, 0.01023, 0.001482, 0.9925, 400),
    (12, "P", 0.3501, 0.003993, 0.05831, 0.9984, 100), (13, "P", 2.02, 0.0001821, 0.0004579, 0.9659, 100),
    (14, "P", 2.268, 3.651e-05, 0.007806, 0.9955, 100), (15, "P", 0.09883, 0.03847, 6.068e-05, 0.8328, 300),
    (16, "P", 0.2216, 0.02965, 0.01146, 0.9969, 100), (17, "P", 2.281, 1.994e-05, 4.87e-05, 0.9827, 100),
    (18, "P", 2.098, 0.000196, 0.07286, 0.9908, 100), (19, "C", 0.06535, 0.005826, 0.0003128, 0.9191, 400),
    (20, "P", 0.09733, 0.008337, 0.2773, 0.9722, 300), (21, "P", 0.5772, 0.001003, 0.001238, 0.9981, 100),
    (22, "P", 2.252, 5.455e-05, 0.002835, 0.8101, 100), (23, "D", None, 0.29, 1.253e-05, 0.996, 25),
    (24, "P", 2.32, 0.1645, 0.03045, 0.8733, 100), (25, "P", 2.198, 0.000113, 0.0002367, 0.994, 100),
    (26, "P", 0.9078, 0.000568, 0.01464, 0.9584, 100), (27, "P", 0.248, 0.01729, 0.000115, 0.9987, 100),
    (28, "P", 0.1361, 0.003304, 0.004524, 0.9859, 300), (29, "P", 1.275, 0.0004061, 3.408e-05, 0.9459, 100),
    (30, "P", 2.292, 1.13e-05, 0.1049, 0.998, 100), (31, "P", 0.3313, 0.06152, 0.0007823, 0.9742, 100),
)
MLP_INFO = {"steps": 400, "batch_size": 64, "train_examples": 1438}  # an epoch: 22.5 steps


def mlp_next(syn, completed=()):
    """The audit's digits-mlp-next at 32 trials (3 completed); the trials in ``completed`` (pruned at
    300 steps) taken as completed, for a study whose lr is settled."""
    lr = Dimension("lr", 1e-5, 0.32, "log")
    settings = dataclasses.replace(syn.settings(lr, syn.WD, syn.BETA1, budget=32), pruner="asha",
                                   workload_info=MLP_INFO)
    states = {"C": syn.S.COMPLETE, "P": syn.S.PRUNED, "D": syn.S.DIVERGED}
    trials = tuple(
        syn.trial(n, v, states["C" if n in completed else s], config={"lr": lr, "weight_decay": wd, "beta1": b1},
                  steps=400 if n in completed else steps, lr=lr, weight_decay=wd, beta1=b1)
        for n, s, v, lr, wd, b1, steps in MLP_NEXT)
    return analyze(TuneResult("digits-mlp-next", settings, trials, None, None), storage=URL)


def test_a_weight_decay_test_waits_for_lr_to_settle_as_the_next_line_does(syn):
    """The audit's digits-mlp-next at 32 trials offered --set weight_decay=0.43:7.6, computed at trial 19's
    lr, 1 of 3 completed trials in 4.5 decades of lr, while the Next line of the same block said the
    windows could not be narrowed: "too few completed trials to narrow the windows, 3 of the 5"."""
    a = mlp_next(syn)
    text = lines(a)
    assert "  · weight decay barely acts: its timescale 1/(lr·weight_decay) is 549,000 steps, 1,370x the 400-step run" in text
    assert not any(line.startswith("      → test") for line in text)
    assert text[-1].startswith(f"Next: adamtune tune --storage {URL} --study digits-mlp-next --budget 64  (too few "
                               "completed trials to narrow the windows, 3 of the 5 it takes")
    (f,) = a.of_kind("decay_timescale")
    assert f.suggestion == () and f.new_study is None
    assert ("But too few trials completed to settle the lr it is computed at (3 of the 5 the next search takes to "
            "narrow the windows): run more trials of this study first") in f.detail


def test_a_weight_decay_test_searches_lr_around_the_lr_its_window_is_computed_at(syn):
    """The audit ran the test as printed, lr=1e-05:0.32 with weight_decay=0.43:7.6 (τ from the run to an
    epoch at trial 19's lr 0.0058): 7 of its 32 trials had τ in 22..400 steps, 16 barely decayed, 9
    decayed within an epoch. With lr settled (7 completed), the test searches lr within a factor of
    √(400/22.5) = 4.2 of 0.0058: 3/4 of the trials land in that range."""
    a = mlp_next(syn, completed=(4, 15, 20, 28))
    (f,) = a.of_kind("decay_timescale")
    assert (f"      → test in a new study: adamtune tune --workload digits-mlp --optimizer adamw --task generic --budget 32 "
            f"--storage {URL} --study digits-mlp-next-weight_decay --set lr=0.0014:0.025 --set beta1=0.8:0.999 "
            "--set eps=1e-08 --set weight_decay=0.43:7.6") in lines(a)
    assert ("test it in a new study, with --set weight_decay=0.43:7.6 and this study's other windows and fixed values, "
            "but lr narrowed to 0.0014..0.025, within a factor of 4.2 of trial 19's lr: the window gives τ = 22..400 "
            "steps at that lr only (a trial at k times the lr has a τ k times shorter), and about 75% of the trials "
            "land in that range there, against 59% over lr's window cut below the lrs that diverged, 0.0012..0.1, as "
            "in the next search") in f.detail
    from adamtune.analysis._decay import share_in_range

    lr, wd = (parse_override(x)[1] for x in (f.new_study.set_arguments[0], f.new_study.set_arguments[-1]))
    assert share_in_range(lr, wd, 1438 / 64, 400) > 0.7
    assert share_in_range(Dimension("lr", 1e-5, 0.32, "log"), wd, 1438 / 64, 400) < 0.3  # the audit's: 7 of 32
    # what `adamtune tune --set ...` makes of it: that lr window, the rest as the study had it
    rebuilt = with_overrides(preset("adamw", "generic", 32), f.new_study.set_arguments)
    assert rebuilt.dimension("lr") == lr and rebuilt.dimension("beta1") == syn.BETA1


def wd_at_the_top(syn, lr_window):
    """8 completed trials: the 3 best at the top of weight_decay's 1e-05..0.3, lr spread around 0.03."""
    settings = dataclasses.replace(syn.settings(lr_window, syn.WD, budget=8), workload_info=RUN)
    points = [(0.5, 0.95, 0.1), (0.1, 0.9, 0.2), (0.9, 0.85, 0.3), (0.3, 0.1, 1.0), (0.2, 0.3, 1.1), (0.6, 0.2, 1.2),
              (0.8, 0.5, 1.3), (0.7, 0.4, 1.4)]
    trials = []
    for i, (u, w, v) in enumerate(points):
        lr = 10 ** (math.log10(0.03) + (u - 0.5) * 2)  # 0.03 at the middle, a decade either side
        trials.append(syn.trial(i, v, config={"lr": lr, "weight_decay": syn.WD.from_unit(w)}, steps=400, lr=lr,
                                weight_decay=syn.WD.from_unit(w)))
    return analyze(TuneResult("wd", settings, tuple(trials), None, None), storage=URL)


def test_weight_decay_widened_up_keeps_lr_times_weight_decay_within_a_half_at_the_top_of_the_next_lr_window(syn):
    """The boundary check bounds weight_decay's widening at the best trial's lr (τ = one epoch: 1.5 at
    lr 0.03), but the next search draws every lr of its window with it: up to 1 x 1.5 here, where
    AdamW's per-step multiplier 1 - lr·weight_decay is negative."""
    a = wd_at_the_top(syn, Dimension("lr", 1e-3, 1.0, "log"))
    text = lines(a)
    assert "      → widen: --set weight_decay=1e-05:0.5" in text
    assert "--set lr=0.001:1 --set weight_decay=1e-05:0.5" in text[-1]
    (wd,) = [c for c in a.boundary if c.name == "weight_decay"]
    assert wd.edge == "upper" and wd.set_argument == "weight_decay=1e-05:0.5"
    assert a.next_space.lr_window.high == 1.0 and "weight_decay=1e-05:0.5" in a.next_space.set_arguments
    (f,) = [f for f in a.of_kind("boundary") if f.title.startswith("weight_decay")]
    assert f.detail.endswith("widen the window to 1e-05..0.5. It stops at 0.5: the next search searches lr up to 1, "
                             "where a larger weight_decay puts lr·weight_decay past 0.5 (AdamW's per-step multiplier "
                             "1 - lr·weight_decay reaches zero at 1, and turns negative past it).")
    # an lr window up to 3.7 (charlm's): 0.3 x 3.7 is past 0.5 already: not widened up, and said so
    a = wd_at_the_top(syn, Dimension("lr", 1e-3, 3.7, "log"))
    (held,) = [f for f in a.of_kind("decay_timescale") if f.title.startswith("weight_decay")]
    assert held.detail.endswith("At the top of the next search's lr window (3.7), the window's top 0.3 already gives "
                                "lr·weight_decay = 1.1, past the 0.5 adamtune proposes at most (AdamW's per-step "
                                "multiplier 1 - lr·weight_decay reaches zero at 1, and turns negative past it), so the "
                                "window is not widened up.")
    assert not any("→ widen: --set weight_decay" in line for line in lines(a))
    (wd,) = [c for c in a.boundary if c.name == "weight_decay"]
    assert wd.proposal is None
    assert [d.change for d in a.next_space.dimensions if d.name == "weight_decay"] == ["keep"]
    assert "weight_decay=1e-05:0.3" in a.next_space.set_arguments
