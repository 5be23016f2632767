import dataclasses

import pytest

from adamtune.analysis import decay_findings, decay_timescale

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
            "it helps: test it in a study of its own, with --set weight_decay=0.35:6.3 (a new --study name: a study "
            "continued keeps its own search space).") in f.detail


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
    assert "(τ from the run down to a tenth of it; a new --study name" in f.detail


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


def test_with_lr_at_the_top_of_its_window_lr_comes_first(syn):
    (f,) = decay_findings(best(syn, 0.007113, 0.002363), lr_at_upper_edge=True)
    assert f.suggestion == () and "test it" not in f.detail
    assert ("But the best trials sit at the upper edge of the lr window: settle lr first (a larger lr needs a smaller "
            "weight_decay for the same τ).") in f.detail


def test_the_window_to_test_waits_for_enough_completed_trials(syn):
    # from one completed trial (the others pruned) its lr is no settled value to compute a window at
    d = best(syn, 0.007113, 0.002363)
    (f,) = decay_findings(d, too_few=True)
    assert f.suggestion == () and "too few trials completed to settle the lr" in f.detail
    assert decay_findings(d)[0].suggestion  # with enough, the window to test is given
