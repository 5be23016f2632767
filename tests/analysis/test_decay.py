import dataclasses

import pytest

from adamtune.analysis import decay_findings, decay_timescale
from adamtune.space import Dimension

RUN = {"steps": 400, "batch_size": 64, "train_examples": 1437}  # an epoch: 22.5 steps


def best(syn, lr, wd, optimizer="adamw", info=RUN):
    settings = dataclasses.replace(syn.settings(syn.LR, syn.WD, optimizer=optimizer), workload_info=info)
    trials = [syn.trial(0, 0.1, config={"lr": lr, "weight_decay": wd}, steps=400, lr=lr, weight_decay=wd),
              syn.trial(1, 0.5, config={"lr": lr, "weight_decay": 0.0}, steps=400, lr=lr, weight_decay=0.0)]
    return decay_timescale(trials, settings)


def test_a_decay_far_slower_than_the_run_is_said_with_the_window_the_timescale_rule_gives(syn):
    d = best(syn, 0.007113, 0.002363)  # digits-mlp's default study: tau 59,495 steps
    assert d.timescale == pytest.approx(1 / (0.007113 * 0.002363)) and d.too_long and not d.too_short
    assert d.low == pytest.approx(1 / (0.007113 * 400)) and d.high == pytest.approx(1 / (0.007113 * 1437 / 64))
    (f,) = decay_findings(d)
    assert f.severity == "info" and f.trials == (0,)
    assert f.title == "weight decay barely acts: its timescale 1/(lr·weight_decay) is 59,500 steps, 149x the 400-step run"
    assert "in PyTorch's convention" in f.detail
    assert "at this lr, weight_decay from 0.3515 (τ = the run) to 6.261 (τ = one epoch, 22 steps)" in f.detail


def test_a_decay_that_forgets_within_an_epoch_is_said(syn):
    d = best(syn, 0.01, 20.0)  # tau 5 steps, an epoch 22
    assert d.too_short
    (f,) = decay_findings(d)
    assert f.title == "weight decay forgets within an epoch: its timescale 1/(lr·weight_decay) is 5 steps, an epoch 22"


@pytest.mark.parametrize("lr, wd, optimizer, info", [
    (0.005, 0.5, "adamw", RUN),  # tau 400 steps: the run
    (0.005, 4.0, "adamw", RUN),  # tau 50 steps: between an epoch and the run
    (0.007, 0.002, "adam", RUN),  # Adam's weight_decay is L2 in the gradient: no timescale
    (0.007, 0.0, "adamw", RUN),  # no decay: nothing to say (the paste line says it)
])
def test_nothing_to_say_inside_the_range_or_without_decoupled_decay(syn, lr, wd, optimizer, info):
    assert decay_findings(best(syn, lr, wd, optimizer, info)) == ()


def test_without_the_datas_size_the_run_alone_bounds_it(syn):
    d = best(syn, 0.007113, 0.002363, info={"steps": 400})
    assert d.epoch is None and d.high is None and d.too_long
    (f,) = decay_findings(d)
    assert "at this lr, weight_decay of about 0.3515 (τ = the run)" in f.detail


def test_a_range_above_the_window_searched_is_said_and_given_as_a_window_to_test(syn):
    # digits-mlp's 400 steps at lr 0.0071: tau = the run needs 0.35, above the searched 1e-5..0.3
    d = best(syn, 0.007113, 0.002363)
    assert d.searched == 0.3 and d.above_window and d.above_usual
    (f,) = decay_findings(d)
    assert f.suggestion == ("--set weight_decay=0.35:6.3",)
    assert ("That range starts above the top of the weight_decay window this study searched (0.3): a 400-step run "
            "at lr 0.007113 needs decay this strong for it to act at all. Only the validation loss can tell whether "
            "it helps: test it in a new study, with --set weight_decay=0.35:6.3 and this study's other windows and "
            "fixed values (a study continued keeps its own search space).") in f.detail


@pytest.mark.parametrize("lr_top, lr_text", [
    (1e-2, "lr narrowed to 0.0017..0.01"),  # the window's own top is below 4.2 x 0.007113
    (0.1, "lr narrowed to 0.0017..0.03"),
    (10.0, "lr narrowed to 0.0017..0.03"),
])
def test_the_study_testing_the_window_searches_lr_around_the_lr_it_is_computed_at(syn, lr_top, lr_text):
    """The window puts τ between an epoch and the run at the best trial's lr only: the audit's test study
    searched lr over 4.5 decades and put 7 of its 32 trials there. Within a factor √(run/epoch) of that
    lr, 3/4 of them land there, and lr·weight_decay stays far from AdamW's 1 at the top."""
    from adamtune.analysis._decay import share_in_range
    from adamtune.space import parse_override

    d = best(syn, 0.007113, 0.002363)
    within = Dimension("lr", 1e-5, lr_top, "log")
    lr = d.lr_window_to_try(within)
    assert d.lr_spread == pytest.approx((400 / (1437 / 64)) ** 0.5)  # 4.2
    assert lr.low == pytest.approx(0.007113 / d.lr_spread) and lr.high == pytest.approx(min(lr_top, 0.007113 * d.lr_spread))
    (f,) = decay_findings(d, test_lr=within)
    assert f.suggestion == ("--set weight_decay=0.35:6.3",) and "Its top stops" not in f.detail
    assert (f"and this study's other windows and fixed values, but {lr_text}, within a factor of 4.2 of trial 0's lr: "
            f"the window gives τ = 22..400 steps at that lr only (a trial at k times the lr has a τ k times shorter), "
            f"and about ") in f.detail
    test = parse_override(f.suggestion[0].removeprefix("--set "))[1]
    assert share_in_range(lr, test, d.shortest, d.run) >= 0.74
    assert share_in_range(within, test, d.shortest, d.run) < 0.5 or lr_top == 1e-2
    assert lr.high * test.high <= 0.5


def test_the_share_of_trials_in_the_range_is_what_a_search_draws():
    from adamtune.analysis._decay import share_in_range

    # the audit's test study: lr 1e-05..0.32, weight_decay 0.43..7.6, τ = 22..400 steps: 7 of its 32 trials
    lr, wd = Dimension("lr", 1e-5, 0.32, "log"), Dimension("weight_decay", 0.43, 7.6, "log")
    assert share_in_range(lr, wd, 1438 / 64, 400) == pytest.approx(0.28, abs=0.01)
    # by sampling: 200 x 200 points evenly spread on both log scales
    import math
    grid = [(lr.from_unit((i + 0.5) / 200), wd.from_unit((j + 0.5) / 200)) for i in range(200) for j in range(200)]
    inside = sum(1438 / 64 <= 1 / (x * y) <= 400 for x, y in grid) / len(grid)
    assert inside == pytest.approx(share_in_range(lr, wd, 1438 / 64, 400), abs=0.01)
    assert math.isclose(share_in_range(lr, Dimension("weight_decay", 1e6, 1e7, "log"), 22, 400), 0.0, abs_tol=1e-12)


def test_a_run_too_short_for_lr_times_weight_decay_to_stay_within_a_half_gets_the_window_cut_or_none(syn):
    """Around the best trial's lr, lr·weight_decay at the top passes 0.5 only in very short runs."""
    d = best(syn, 0.007113, 0.002363, info={"steps": 20})  # τ down to 2 steps; lr up to 3.2 x 0.007113
    (f,) = decay_findings(d, test_lr=Dimension("lr", 1e-5, 1.0, "log"))
    assert f.suggestion == ("--set weight_decay=7:22",)
    assert ("Its top stops at 22.23, not 70.29: that study searches lr up to 0.02249, where a larger weight_decay puts "
            "lr·weight_decay past 0.5") in f.detail
    d = best(syn, 0.007113, 0.002363, info={"steps": 5})  # τ down to 1 step: 28..63 would barely differ
    (f,) = decay_findings(d, test_lr=Dimension("lr", 1e-5, 1.0, "log"))
    assert f.suggestion == ()
    assert ("where a weight_decay above 31.44 puts lr·weight_decay past 0.5 (AdamW's per-step multiplier 1 - "
            "lr·weight_decay reaches zero at 1): that leaves too little of the range to test in a run this short.") in f.detail
    # lr fixed (not tuned): every trial at the best trial's lr itself, which leaves more of the range
    (f,) = decay_findings(d)
    assert f.suggestion == ("--set weight_decay=28:70",)


def test_a_range_above_the_rule_of_thumb_is_said_when_weight_decay_was_not_searched(syn):
    settings = dataclasses.replace(syn.settings(syn.LR), workload_info=RUN)  # weight_decay not tuned
    trials = [syn.trial(0, 0.1, config={"lr": 0.02, "weight_decay": 1e-4}, steps=400, lr=0.02)]
    d = decay_timescale(trials, settings)
    assert d.searched is None and not d.above_window and d.above_usual  # 0.125 > 0.1
    (f,) = decay_findings(d)
    assert f.suggestion == ("--set weight_decay=0.125:2.2",)
    assert "starts above 0.1, above which the guide calls AdamW's weight_decay over-regularising" in f.detail


def test_without_an_epoch_the_window_to_test_runs_down_to_a_tenth_of_the_run(syn):
    (f,) = decay_findings(best(syn, 0.007113, 0.002363, info={"steps": 400}))
    assert f.suggestion == ("--set weight_decay=0.35:3.5",)
    assert "--set weight_decay=0.35:3.5 (τ from the run down to 10% of the 400-step run (40 steps)) and this" in f.detail


def test_a_range_the_window_covers_needs_no_window_to_test(syn):
    d = best(syn, 0.05, 1e-5)  # from 0.05 (tau = the run): inside 1e-5..0.3 and below 0.1
    assert d.too_long and not d.above_usual
    (f,) = decay_findings(d)
    assert f.suggestion == () and "validation loss" not in f.detail


def test_the_window_to_test_is_what_tune_accepts(syn):
    from adamtune.space import preset, with_overrides

    (f,) = decay_findings(best(syn, 0.007113, 0.002363))
    space = with_overrides(preset("adamw", "generic", 16), [f.suggestion[0].removeprefix("--set ")])
    assert (space.dimension("weight_decay").low, space.dimension("weight_decay").high) == (0.35, 6.3)


def lr_check(syn, edge):
    from adamtune.analysis import BoundaryCheck

    return BoundaryCheck("lr", syn.LR, 0.1, 0.95 if edge == "upper" else 0.05, ((0, 0.95),), edge)


def test_with_lr_at_the_top_of_its_window_lr_comes_first(syn):
    (f,) = decay_findings(best(syn, 0.007113, 0.002363), [lr_check(syn, "upper")])
    assert f.suggestion == () and "test it" not in f.detail
    assert ("But the best trials sit at the upper edge of the lr window: settle lr first (a larger lr needs a smaller "
            "weight_decay for the same τ).") in f.detail


def test_the_window_to_test_waits_for_enough_completed_trials(syn):
    # from one completed trial (the others pruned) its lr is no settled value to compute a window at
    d = best(syn, 0.007113, 0.002363)
    (f,) = decay_findings(d, too_few=(3, 5))
    assert f.suggestion == ()
    assert ("But too few trials completed to settle the lr it is computed at (3 of the 5 the next search takes to "
            "narrow the windows): run more trials of this study first") in f.detail
    assert decay_findings(d)[0].suggestion  # with enough, the window to test is given


CHARLM = {"steps": 250, "batch_size": 16, "train_examples": 3956}  # an epoch: 247.25 steps of the 250


def test_an_epoch_nearly_as_long_as_the_run_gives_the_no_epoch_range_not_a_collapsed_one(syn):
    """The audit's charlm-next-next: trial 3 (lr 0.01789, weight_decay 0.006447) was offered
    --set weight_decay=0.22355:0.22604, τ from 250 down to 247 steps: a tuned dimension at a fixed value."""
    d = best(syn, 0.017893034701671112, 0.006446808129295142, info=CHARLM)
    (f,) = decay_findings(d, test_lr=Dimension("lr", 1e-5, 3.7, "log"))  # the study's lr window
    assert f.title == "weight decay barely acts: its timescale 1/(lr·weight_decay) is 8,670 steps, 35x the 250-step run"
    assert ("puts a good τ between one epoch and the whole run; an epoch of 247 steps is most of the 250-step run, so "
            "adamtune takes τ down to 10% of the run instead, as without the data's size: at this lr, weight_decay "
            "from 0.2236 (τ = the run) to 2.236 (τ = 25 steps).") in f.detail
    assert f.suggestion == ("--set weight_decay=0.22:2.2",)
    assert "(τ from the run down to 10% of the 250-step run (25 steps))" in f.detail
    assert "but lr narrowed to 0.0057..0.057, within a factor of 3.2 of trial 0's lr" in f.detail
    assert d.too_long and not d.epoch_bounds and d.shortest == pytest.approx(25)
    # a τ of 100 steps lies in that range: not "forgets within an epoch"
    assert decay_findings(best(syn, 0.01, 1.0, info=CHARLM)) == ()


def test_with_lr_at_the_bottom_of_its_window_lr_comes_first_too(syn):
    # a smaller lr needs a larger weight_decay for the same tau: the window is just as unsettled
    (f,) = decay_findings(best(syn, 0.007113, 0.002363), [lr_check(syn, "lower")])
    assert f.suggestion == () and "test it" not in f.detail
    assert ("But the best trials sit at the lower edge of the lr window: settle lr first (a smaller lr needs a larger "
            "weight_decay for the same τ).") in f.detail


STEPS = tuple(range(40, 401, 40))
TRAIN = tuple(2.2 * 0.7 ** k + 0.05 for k in range(10))  # falls all the way
OVERFIT = (2.0, 1.0, 0.5, 0.35, 0.3, 0.32, 0.36, 0.42, 0.48, 0.55)


def analysed(syn, lr_window, wd_window, points, curve=None, info=RUN):
    """``analyze`` over AdamW trials at ``points``: (lr, weight_decay, val_loss) each."""
    from adamtune.analysis import analyze
    from adamtune.results import TuneResult

    settings = dataclasses.replace(syn.settings(lr_window, wd_window), workload_info=info)
    trials = tuple(syn.trial(i, v, config={"lr": lr, "weight_decay": wd}, steps=400, curve=curve, lr=lr,
                             weight_decay=wd) for i, (lr, wd, v) in enumerate(points))
    return analyze(TuneResult("s", settings, trials, None, None))


def test_nothing_learned_gives_no_decay_finding(syn):
    # the audit's flat study: lr 1e-8..1e-7, every val_loss at 2.30; its best trial (by noise) had
    # tau of 1e10 steps, and the finding offered --set weight_decay=140000:2.5e+06 at lr 1.8e-8
    flat = syn.curve(STEPS, val_loss=tuple(2.3 + 0.001 * (-1) ** k for k in range(10)))
    lr_window = Dimension("lr", 1e-8, 1e-7, "log")
    points = [(10 ** (-8 + i / 8), syn.WD.from_unit(i / 8), 2.3 + 0.0003 * ((i * 5) % 8)) for i in range(8)]
    a = analysed(syn, lr_window, syn.WD, points, curve=flat)
    assert a.progress.nothing_learned
    assert a.of_kind("decay_timescale") == () and not any("weight_decay=" in s for f in a.findings for s in f.suggestion)


def test_lr_at_its_lower_edge_holds_back_the_window_to_test(syn):
    # the audit's fail-next: lr best at the bottom of 0.001..3; the decay finding offered
    # --set weight_decay=0.47:8.4, computed at an lr the boundary check says to move
    lr_window = Dimension("lr", 1e-3, 3.0, "log")
    lrs = [lr_window.from_unit(u) for u in (0.02, 0.08, 0.3, 0.45, 0.6, 0.75, 0.85, 0.95)]
    points = [(lr, 0.03, 0.1 + i) for i, lr in enumerate(lrs)]
    a = analysed(syn, lr_window, syn.WD, points)
    assert [c.edge for c in a.boundary if c.name == "lr"] == ["lower"]
    (f,) = a.of_kind("decay_timescale")
    assert f.suggestion == () and "But the best trials sit at the lower edge of the lr window: settle lr first" in f.detail


def test_a_decay_test_the_study_already_searched_and_lost_is_not_offered_again(syn):
    # the audit's loop: a study of --set weight_decay=0.33:5.9 (the test a decay finding gave) put its
    # best trials at 0.33, and then said both "widen down to 0.078" and "test 1.3:23"
    wd_window = Dimension("weight_decay", 0.33, 5.9, "log")
    lr = 0.001927
    points = [(syn.LR.from_unit(0.45 + 0.02 * i), wd_window.from_unit(u), 0.1 + u)
              for i, u in enumerate((0.02, 0.15, 0.3, 0.45, 0.6, 0.75, 0.85, 0.95))]
    points[0] = (lr, points[0][1], points[0][2])
    a = analysed(syn, syn.LR, wd_window, points)
    wd = next(c for c in a.boundary if c.name == "weight_decay")
    assert wd.edge == "lower" and wd.proposal is None  # decay barely acts there: not widened down
    assert a.next_space.dimensions[1].change != "widen"
    (held, timescale) = a.of_kind("decay_timescale")
    assert "not widened down" in held.title and timescale.suggestion == ()
    assert ("But this study searched weight_decay up to 5.9, into that range, and its best trials sit at the lower "
            "edge of the window 0.33..5.9: the validation loss preferred the weaker decay, so there is no stronger "
            "one to test.") in timescale.detail
    assert not any(s.startswith("--set weight_decay") for f in a.findings for s in f.suggestion)


LR_AROUND = Dimension("lr", 1e-3, 0.1, "log")  # 0.0178 at 63%


def overfit(syn):
    return syn.curve(STEPS, val_loss=OVERFIT, train_loss=TRAIN)


def test_overfitting_names_the_weight_decay_window_the_boundary_check_proposes(syn):
    lr = 0.0178  # in the middle of the lr window: lr is settled
    points = [(lr, syn.WD.from_unit(u), 1.0 - u) for u in (0.02, 0.15, 0.3, 0.45, 0.6, 0.75, 0.85, 0.95)]
    a = analysed(syn, LR_AROUND, syn.WD, points, curve=overfit(syn))
    assert all(c.edge is None for c in a.boundary if c.name == "lr")
    (boundary,) = [f for f in a.of_kind("boundary") if f.title.startswith("weight_decay")]
    (over,) = a.of_kind("overfitting")
    assert boundary.suggestion == ("--set weight_decay=1e-05:2.5",)  # stops at tau = one epoch at lr 0.0178
    assert over.detail.endswith("A larger weight_decay is what the boundary check proposes too: "
                                "--set weight_decay=1e-05:2.5, in the next search.")


def test_overfitting_names_the_decay_window_to_test(syn):
    # decay barely acts at the best trial and its range lies above the window: the window to test
    lr = 0.007113
    points = [(syn.LR.from_unit(0.3 + 0.05 * i), syn.WD.from_unit(u), 0.2 + i)
              for i, u in enumerate((0.4, 0.2, 0.7, 0.5, 0.1, 0.9, 0.6, 0.3))]
    points[0] = (lr, 0.002363, 0.1)
    a = analysed(syn, syn.LR, syn.WD, points, curve=overfit(syn))
    (timescale,) = a.of_kind("decay_timescale")
    (over,) = a.of_kind("overfitting")
    assert timescale.suggestion == ("--set weight_decay=0.35:6.3",)
    assert over.detail.endswith("To raise weight_decay, test the window the weight-decay timescale finding gives: "
                                "--set weight_decay=0.35:6.3.")


def test_overfitting_with_weaker_decay_doing_better_says_so_instead_of_raise(syn):
    # best at the bottom of 0.5..50, where decay acts (tau 112 steps at lr 0.0178): the study itself
    # found weaker decay better, so "raise weight_decay" would pull against the widening down
    wd_window = Dimension("weight_decay", 0.5, 50.0, "log")
    points = [(0.0178, wd_window.from_unit(u), 0.1 + u) for u in (0.02, 0.15, 0.3, 0.45, 0.6, 0.75, 0.85, 0.95)]
    a = analysed(syn, LR_AROUND, wd_window, points, curve=overfit(syn))
    (boundary,) = [f for f in a.of_kind("boundary") if f.title.startswith("weight_decay")]
    assert "lower edge" in boundary.title
    (over,) = a.of_kind("overfitting")
    assert ("But weaker decay did better in this study: its best trials sit at the lower edge of weight_decay's "
            "window 0.5..50, so a larger weight_decay goes against its trials") in over.detail
