import pytest

from adamtune.analysis import next_space
from adamtune.space import Dimension, parse_override, preset, with_overrides


def trials_at(syn, lr_positions, wd_positions, values):
    return [
        syn.trial(i, v, lr=syn.lr_at(u), weight_decay=syn.WD.from_unit(w))
        for i, (u, w, v) in enumerate(zip(lr_positions, wd_positions, values))
    ]


def test_narrows_around_the_best_trials_and_round_trips_through_set(syn):
    settings = syn.settings(syn.LR, syn.WD, budget=8)
    lr_u = (0.05, 0.2, 0.35, 0.5, 0.55, 0.6, 0.8, 0.95)
    wd_u = (0.3, 0.4, 0.6, 0.1, 0.9, 0.5, 0.7, 0.2)
    values = (0.9, 0.7, 0.5, 0.2, 0.1, 0.15, 0.6, 0.8)  # best around lr position 0.55
    ns = next_space(trials_at(syn, lr_u, wd_u, values), settings, study_name="s")
    lr, wd = ns.dimensions
    assert lr.change == "narrow" and lr.previous == syn.LR
    assert syn.LR.to_unit(lr.window.low) == pytest.approx(0.5 - 0.15)  # best trials 0.5..0.6, padded
    assert syn.LR.to_unit(lr.window.high) == pytest.approx(0.6 + 0.15)
    assert wd.change == "keep"  # the best trials' weight decays spread over 0.1..0.9
    assert ns.changed
    # --set arguments applied to the preset of the same optimizer, task and budget give this space
    rebuilt = with_overrides(preset(settings.optimizer, settings.task, settings.budget), ns.set_arguments)
    assert rebuilt.tuned == ("lr", "weight_decay")
    for d in ns.dimensions:
        r = rebuilt.dimension(d.name)
        assert r.scale == d.window.scale
        assert d.window.to_unit(r.low) == pytest.approx(0, abs=0.01)
        assert d.window.to_unit(r.high) == pytest.approx(1, abs=0.01)
    assert ns.command.startswith("adamtune tune --workload digits-mlp --optimizer adamw --task generic --budget 8 ")
    assert "--study s-next --set lr=" in ns.command


def test_widens_where_the_boundary_check_fires(syn):
    settings = syn.settings(syn.LR, syn.WD, budget=8)
    lr_u = (0.02, 0.15, 0.3, 0.45, 0.6, 0.75, 0.85, 0.95)
    wd_u = (0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.6, 0.4)
    ns = next_space(trials_at(syn, lr_u, wd_u, [1 - u for u in lr_u]), settings)
    lr = ns.dimensions[0]
    assert lr.change == "widen" and lr.set_argument == "lr=1e-05:0.32" and "upper edge" in lr.reason
    assert ns.set_arguments[0] == "lr=1e-05:0.32"


def test_keeps_the_windows_with_too_few_completed_trials(syn):
    settings = syn.settings(syn.LR, syn.WD, budget=8)
    trials = trials_at(syn, (0.5, 0.55, 0.6), (0.5, 0.4, 0.3), (0.1, 0.2, 0.3))
    ns = next_space(trials, settings)
    assert [d.change for d in ns.dimensions] == ["keep", "keep"] and not ns.changed
    assert ns.set_arguments == ("lr=1e-05:0.01", "weight_decay=1e-05:0.3")


def test_betas_fixed_values_and_untuned_preset_dimensions_round_trip(syn):
    beta1 = Dimension("beta1", 0.8, 0.999, "log1m")
    settings = syn.settings(syn.LR, beta1, budget=16, fixed=(("max_grad_norm", None), ("schedule", "cosine")))
    trials = [syn.trial(i, abs(u - 0.97), lr=syn.lr_at(0.5), beta1=beta1.from_unit(u))
              for i, u in enumerate((0.1, 0.3, 0.5, 0.7, 0.9, 0.93, 0.97, 0.99))]
    ns = next_space(trials, settings)
    b = ns.dimensions[1]
    assert b.change == "widen" and 0.999 < b.window.high < 1
    _, parsed = parse_override(b.set_argument)
    assert parsed.high < 1 and parsed.scale == "log1m"
    # fixed values stay fixed; weight_decay (tuned by the preset at budget 16) is fixed at AdamW's default
    assert "max_grad_norm=none" in ns.set_arguments and "schedule=cosine" in ns.set_arguments
    assert "weight_decay=0.01" in ns.set_arguments
    rebuilt = with_overrides(preset("adamw", "generic", 16), ns.set_arguments)
    assert rebuilt.tuned == ("lr", "beta1")
    assert dict(rebuilt.fixed) == {"max_grad_norm": None, "schedule": "cosine", "weight_decay": 0.01}


def test_a_python_workload_has_no_command_and_names_are_quoted(syn):
    import dataclasses

    settings = dataclasses.replace(syn.settings(syn.LR), workload=None)
    assert next_space([syn.trial(0, 0.1, lr=1e-3)], settings).command is None
    settings = dataclasses.replace(syn.settings(syn.LR, syn.WD, budget=8), workload="my dir/w.py:make")
    lr_u = (0.02, 0.15, 0.3, 0.45, 0.6, 0.75, 0.85, 0.95)  # the best at lr's upper edge: a new window
    trials = trials_at(syn, lr_u, (0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.6, 0.4), [1 - u for u in lr_u])
    cmd = next_space(trials, settings, study_name="a b", storage="sqlite:///x y.db").command
    assert "--workload 'my dir/w.py:make'" in cmd and "--storage 'sqlite:///x y.db'" in cmd and "--study 'a b-next'" in cmd
    cmd = next_space(trials, settings, storage="postgresql://me:hunter2@h/db").command
    assert "hunter2" not in cmd and "--storage 'postgresql://me:***@h/db'" in cmd  # the report may be shared
    kept = next_space([syn.trial(0, 0.1, lr=1e-3)], settings, study_name="a b", storage="postgresql://me:pw@h/db")
    assert kept.continues and not kept.changed
    assert kept.command == "adamtune tune --storage 'postgresql://me:***@h/db' --study 'a b' --budget 16"


def test_windows_kept_continue_the_study_instead_of_repeating_it(syn):
    """A new study of the same space and seed would draw the very same trials: nothing to learn."""
    settings = syn.settings(syn.LR, budget=16)
    ns = next_space([syn.trial(i, 0.1 + i / 10, lr=syn.lr_at(0.4 + i / 20)) for i in range(4)], settings,
                    study_name="s", storage="sqlite:///x.db")
    assert all(d.change == "keep" for d in ns.dimensions) and not ns.changed and ns.continues
    assert ns.study == "s" and ns.command == "adamtune tune --storage sqlite:///x.db --study s --budget 32"


def test_every_trial_diverged_moves_the_lr_window_below_the_smallest_that_did(syn):
    settings = syn.settings(Dimension("lr", 5.0, 10.0, "log"), syn.WD, budget=8)
    trials = [syn.trial(i, None, syn.S.DIVERGED, lr=lr, weight_decay=0.01)
              for i, lr in enumerate((5.05, 6.0, 7.5, 9.9))]
    ns = next_space(trials, settings, study_name="s")
    lr, wd = ns.dimensions
    assert lr.change == "lower" and ns.lowered and ns.changed
    assert lr.window.high == pytest.approx(0.5) and lr.window.low == pytest.approx(0.5e-3)
    assert "every trial diverged, from lr 5.05" in lr.reason
    assert wd.change == "keep"
    assert "--set lr=0.0005:0.5" in ns.command
    rebuilt = with_overrides(preset(settings.optimizer, settings.task, settings.budget), ns.set_arguments)
    assert rebuilt.dimension("lr").high == pytest.approx(0.5)
    # one pruned trial among them: most diverged, the window still moves down
    trials.append(syn.trial(4, 0.5, syn.S.PRUNED, lr=5.2, weight_decay=0.01))
    lr = next_space(trials, settings).dimensions[0]
    assert lr.change == "lower" and "most trials diverged, from lr 5.05" in lr.reason
    # more trials trained than diverged: the window is judged as usual, not moved
    trials += [syn.trial(5 + i, 0.5, syn.S.PRUNED, lr=lr, weight_decay=0.01) for i, lr in enumerate((5.3, 6.1, 8.0, 9.0))]
    assert next_space(trials, settings).dimensions[0].change == "keep"


def test_most_trials_diverged_with_one_that_trained_below_them_lowers_the_window_to_keep_it(syn):
    # the audit's study: lr=0.12:12, one trial completed at 0.128, seven diverged from 0.2 up
    settings = syn.settings(Dimension("lr", 0.12, 12.0, "log"), syn.WD, budget=8)
    trials = [syn.trial(0, 0.58, lr=0.128, weight_decay=0.01)]
    trials += [syn.trial(1 + i, None, syn.S.DIVERGED, lr=lr, weight_decay=0.01)
               for i, lr in enumerate((0.2, 0.5, 0.9, 1.7, 3.0, 6.0, 11.0))]
    ns = next_space(trials, settings)
    lr = ns.dimensions[0]
    assert lr.change == "lower" and ns.lowered
    assert lr.window.high == pytest.approx(0.2) and lr.window.low == pytest.approx(0.2e-3)  # 0.128 stays inside
    assert "most trials diverged, from lr 0.2" in lr.reason


def diverged_above_the_best(syn):
    """The best trials sit at 1e-3..2e-3; everything from 3.4e-3 up diverged, nothing above it trained."""
    settings = syn.settings(Dimension("lr", 1e-5, 1e-1, "log"), syn.WD, budget=16)
    lrs = (1e-5, 3e-5, 1e-4, 3e-4, 6e-4, 1e-3, 1.5e-3, 2e-3, 2.5e-3)
    values = (2.0, 1.5, 1.0, 0.6, 0.4, 0.2, 0.15, 0.1, 0.3)
    trials = [syn.trial(i, v, lr=lr, weight_decay=0.01) for i, (lr, v) in enumerate(zip(lrs, values))]
    trials += [syn.trial(9 + i, None, syn.S.DIVERGED, lr=lr, weight_decay=0.01)
               for i, lr in enumerate((3.4e-3, 1e-2, 3e-2, 9e-2))]
    return trials, settings


def test_a_narrowed_lr_window_stops_below_the_lrs_where_every_trial_diverged(syn):
    trials, settings = diverged_above_the_best(syn)
    ns = next_space(trials, settings)
    lr = ns.dimensions[0]
    assert lr.change == "narrow" and lr.window.high == pytest.approx(3e-3) and lr.window.low < 1e-3
    assert ns.below_diverged == 3.4e-3 and ns.cut_lr == lr.window and ns.cut_lr_text == "below the lrs that diverged"


def test_a_change_to_try_takes_lr_from_the_next_search_where_it_stops_below_diverged_or_failed_lrs(syn):
    """A weight_decay window to test, run over the study's lr window, spent its budget on the lrs the
    next search had just cut off (the same seed draws the same points); a clipping threshold is tried
    at the study's own lrs: whether it lets them train is what it tests."""
    from adamtune.analysis import change_study

    trials, settings = diverged_above_the_best(syn)
    ns = next_space(trials, settings, study_name="s")
    test = change_study(settings, "--set weight_decay=0.5:9", ns, "s")
    assert test.set_arguments == (f"lr={ns.dimensions[0].window.low:.2g}:0.003", "beta1=0.9", "weight_decay=0.5:9")
    assert ns.dimensions[0].set_argument == test.set_arguments[0]
    assert "--study s-weight_decay --set lr=" in test.command
    assert change_study(settings, "max_grad_norm=1.2", ns, "s").set_arguments[0] == "lr=1e-05:0.1"
    # nothing cut (no divergence): the study's own lr window
    ok = next_space(trials[:9], settings, study_name="s")
    assert ok.cut_lr is None
    assert change_study(settings, "weight_decay=0.5:9", ok, "s").set_arguments[0] == "lr=1e-05:0.1"


def test_a_fixed_clipping_threshold_that_clipped_most_steps_is_replaced_by_the_advised_one(syn):
    steady = [1.0 + 0.01 * i for i in range(100)]
    settings = syn.settings(syn.LR, fixed=(("max_grad_norm", 0.05),))
    trials = [syn.trial(0, 0.1, grad_norms=syn.norms(steady, max_grad_norm=0.05), config={"max_grad_norm": 0.05}, lr=1e-3)]
    ns = next_space(trials, settings, study_name="s")
    assert "max_grad_norm=1.89" in ns.set_arguments and "max_grad_norm=0.05" not in ns.set_arguments
    # the windows are kept, but the threshold changes: a new study, which the terminal prints too
    assert ns.replaced == ("max_grad_norm",) and ns.changed and not ns.continues and ns.study == "s-next"
    # one that clipped a few steps is kept
    settings = syn.settings(syn.LR, fixed=(("max_grad_norm", 1.8),))
    trials = [syn.trial(0, 0.1, grad_norms=syn.norms(steady, max_grad_norm=1.8), config={"max_grad_norm": 1.8}, lr=1e-3)]
    ns = next_space(trials, settings, study_name="s")
    assert "max_grad_norm=1.8" in ns.set_arguments and not ns.changed and ns.continues


def test_a_dimension_whose_best_trials_sit_as_chance_would_is_kept_not_narrowed(syn):
    # the objective follows lr alone; the 3 best trials' weight_decay lies at 0.3, 0.5 and 0.7
    # of its window (a span of 40%: 3 random points spread that little 35% of the time)
    settings = syn.settings(syn.LR, syn.WD)
    lr_u = (0.5, 0.52, 0.48, 0.1, 0.2, 0.3, 0.7, 0.8, 0.9, 0.95)
    wd_u = (0.3, 0.5, 0.7, 0.2, 0.1, 0.45, 0.6, 0.8, 0.9, 0.0)
    trials = [syn.trial(i, abs(u - 0.5), lr=syn.lr_at(u), weight_decay=syn.WD.from_unit(w))
              for i, (u, w) in enumerate(zip(lr_u, wd_u))]
    lr, wd = next_space(trials, settings).dimensions
    assert lr.change == "narrow"  # 0.48..0.52: a 4% span, 0.5% likely by chance
    assert wd.change == "keep" and wd.window == syn.WD
    assert wd.reason == "the 3 best trials spread over 40% of the window, as trials in a dimension that does not matter would (35% of the time)"


def test_an_llm_study_that_trained_with_torchs_beta2_keeps_it_in_the_next_search(syn):
    # A study made before the llm preset fixed beta2 at 0.95 (or from Python with a SearchSpace of
    # its own) trained at PyTorch's 0.999: the next search must not switch it silently.
    import dataclasses

    settings = dataclasses.replace(syn.settings(syn.LR, budget=6), task="llm")
    lr_u = (0.05, 0.2, 0.35, 0.5, 0.55, 0.6, 0.8, 0.95)
    trials = [syn.trial(i, abs(u - 0.55), lr=syn.lr_at(u)) for i, u in enumerate(lr_u)]
    ns = next_space(trials, settings, study_name="old")
    assert "beta2=0.999" in ns.set_arguments and "weight_decay=0.01" in ns.set_arguments
    rebuilt = with_overrides(preset("adamw", "llm", 6), ns.set_arguments)
    assert dict(rebuilt.fixed)["beta2"] == 0.999
    # one that trained with the preset's 0.95 keeps that
    fixed = dataclasses.replace(settings, space=dataclasses.replace(settings.space, fixed=(("beta2", 0.95),)))
    assert "beta2=0.95" in next_space(trials, fixed, study_name="new").set_arguments


def test_a_change_to_try_is_a_new_study_of_this_studys_windows_with_that_one_change(syn):
    """A finding's --set (a clipping threshold, a weight_decay window) cannot join a continued study
    (it keeps its own space), and a study built from the --set alone gets the preset's windows for
    the rest: a confounded test. The study it proposes keeps every other window and fixed value."""
    import dataclasses

    from adamtune.analysis import change_study

    lr = Dimension("lr", 1e-3, 1.0, "log")
    settings = dataclasses.replace(syn.settings(lr, syn.WD, syn.BETA1, budget=16, fixed=(("warmup", 0.05),)),
                                   pruner="none", seed=3)
    new = change_study(settings, "--set max_grad_norm=1.28", study_name="div", storage="sqlite:///x.db")
    assert new.change == "max_grad_norm=1.28" and not new.in_next and new.study == "div-max_grad_norm"
    assert new.set_arguments == ("lr=0.001:1", "weight_decay=1e-05:0.3", "beta1=0.8:0.999", "warmup=0.05",
                                 "max_grad_norm=1.28")
    assert new.command == ("adamtune tune --workload digits-mlp --optimizer adamw --task generic --budget 16 "
                           "--pruner none --seed 3 --storage sqlite:///x.db --study div-max_grad_norm "
                           "--set lr=0.001:1 --set weight_decay=1e-05:0.3 --set beta1=0.8:0.999 --set warmup=0.05 "
                           "--set max_grad_norm=1.28")
    # what `adamtune tune --set ...` makes of it: this study's space, that one value added
    rebuilt = with_overrides(preset("adamw", "generic", 16), new.set_arguments)
    assert rebuilt.dimensions == settings.space.dimensions
    assert dict(rebuilt.fixed) == {"warmup": 0.05, "max_grad_norm": 1.28}
    # a window for a dimension the study tuned replaces that window, in its place among the others
    new = change_study(settings, "--set weight_decay=0.36:6.4", study_name="div")
    assert new.study == "div-weight_decay" and new.set_arguments[-1] == "weight_decay=0.36:6.4"
    rebuilt = with_overrides(preset("adamw", "generic", 16), new.set_arguments)
    assert rebuilt.dimension("weight_decay") == Dimension("weight_decay", 0.36, 6.4, "log")
    assert rebuilt.dimension("lr") == lr and rebuilt.dimension("beta1") == syn.BETA1


def test_a_change_to_try_pins_what_the_preset_would_tune_and_names_a_free_study(syn):
    from adamtune.analysis import change_study

    # a study that began at budget 6 (lr, weight_decay), continued to 16: the preset of 16 tunes beta1
    # too, which this study trained at PyTorch's 0.9 -- so does the test
    settings = syn.settings(syn.LR, syn.WD, budget=16)
    new = change_study(settings, "max_grad_norm=1.5", study_name="s",
                       taken={"s-max_grad_norm": with_overrides(preset("adamw", "generic", 16), ["lr=1:2"])})
    assert "beta1=0.9" in new.set_arguments and new.set_arguments[-1] == "max_grad_norm=1.5"
    assert new.study == "s-max_grad_norm-2"  # that name holds another space
    space = with_overrides(preset("adamw", "generic", 16), new.set_arguments)
    assert change_study(settings, "max_grad_norm=1.5", study_name="s", taken={"s-max_grad_norm": space}).study == \
        "s-max_grad_norm"  # one of this very space: run twice, it continues
    # no study name (records from Python): the arguments, no name; a Python workload: no command line
    import dataclasses

    bare = change_study(dataclasses.replace(settings, workload=None), "max_grad_norm=1.5")
    assert bare.study is None and bare.command is None and bare.set_arguments[-1] == "max_grad_norm=1.5"
    # a change the next search makes already is no study of its own
    steady = [1.0 + 0.01 * i for i in range(100)]
    clipped = syn.settings(syn.LR, fixed=(("max_grad_norm", 0.05),))
    trials = [syn.trial(0, 0.1, grad_norms=syn.norms(steady, max_grad_norm=0.05), config={"max_grad_norm": 0.05},
                        lr=1e-3)]
    ns = next_space(trials, clipped, study_name="s")
    new = change_study(clipped, "--set max_grad_norm=1.89", ns, "s")
    assert new.in_next and new.study is None and new.command is None
    # what does not apply to the optimizer makes no study
    assert change_study(syn.settings(syn.LR, optimizer="adadelta"), "beta1=0.9", study_name="s") is None


def test_the_next_search_keeps_the_studys_sampler_pruner_and_seed(syn):
    import dataclasses

    lr_u = (0.02, 0.15, 0.3, 0.45, 0.6, 0.75, 0.85, 0.95)  # the best at lr's upper edge: a new study
    trials = trials_at(syn, lr_u, (0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.6, 0.4), [1 - u for u in lr_u])
    settings = syn.settings(syn.LR, syn.WD, budget=8)
    defaults = dataclasses.replace(settings, pruner="asha")
    assert next_space(trials, defaults, study_name="s").command == (
        "adamtune tune --workload digits-mlp --optimizer adamw --task generic --budget 8 --study s-next "
        "--set lr=1e-05:0.32 --set weight_decay=1e-05:0.3")
    other = dataclasses.replace(settings, sampler="tpe", pruner="median", seed=7)
    assert ("--budget 8 --sampler tpe --pruner median --seed 7 --study s-next"
            in next_space(trials, other, study_name="s").command)


def test_the_next_study_leaves_out_exactly_what_tune_uses_when_not_told(syn):
    """One value for what `adamtune tune` uses when not told (results.DEFAULT_*), read by study.py and by
    the commands the analysis prints: changed in one of them alone, a command dropped a flag it needed."""
    import dataclasses

    from adamtune import results, study

    assert (study.DEFAULT_SAMPLER, study.DEFAULT_PRUNER, study.DEFAULT_SEED) == (
        results.DEFAULT_SAMPLER, results.DEFAULT_PRUNER, results.DEFAULT_SEED) == ("quasi-random", "asha", 0)
    lr_u = (0.02, 0.15, 0.3, 0.45, 0.6, 0.75, 0.85, 0.95)  # the best at lr's upper edge: a new study
    trials = trials_at(syn, lr_u, (0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.6, 0.4), [1 - u for u in lr_u])
    settings = syn.settings(syn.LR, syn.WD, budget=8)
    told = dataclasses.replace(settings, sampler=results.DEFAULT_SAMPLER, pruner=results.DEFAULT_PRUNER,
                               seed=results.DEFAULT_SEED)
    assert "--budget 8 --study s-next" in next_space(trials, told, study_name="s").command


def test_a_window_kept_for_too_few_completed_trials_says_so(syn):
    settings = syn.settings(syn.LR, syn.WD, budget=8)
    trials = trials_at(syn, (0.5, 0.55, 0.6, 0.1), (0.5, 0.4, 0.3, 0.9), (0.1, 0.2, 0.3, 0.5))
    pruned = syn.trial(4, 0.9, syn.S.PRUNED, lr=syn.lr_at(0.9), weight_decay=0.01)
    ns = next_space([*trials[:3], pruned], settings, study_name="s")
    assert ns.continues and ns.completed == 3 and ns.too_few_to_narrow
    assert {d.reason for d in ns.dimensions} == {"fewer than 5 completed trials"}
    # five completed: what keeps a window now is where the best trials sit
    ns = next_space([*trials, pruned, syn.trial(5, 0.6, lr=syn.lr_at(0.9), weight_decay=0.1)], settings)
    assert ns.completed == 5 and not ns.too_few_to_narrow


def test_a_change_computed_at_one_lr_comes_with_the_lr_window_it_needs(syn):
    """A weight_decay window to test is in range at the best trial's lr only: its study gets the lr
    window the decay finding gives, not the study's (nor the next search's cut one)."""
    from adamtune.analysis import change_study

    trials, settings = diverged_above_the_best(syn)
    ns = next_space(trials, settings, study_name="s")
    test = change_study(settings, "weight_decay=0.5:9", ns, "s", lr=Dimension("lr", 5e-4, 4e-3, "log"))
    assert test.set_arguments == ("lr=0.0005:0.004", "beta1=0.9", "weight_decay=0.5:9")
    assert with_overrides(preset("adamw", "generic", 16), test.set_arguments).dimension("lr") == \
        Dimension("lr", 5e-4, 4e-3, "log")


def test_weight_decay_widened_up_stops_where_lr_times_weight_decay_passes_a_half_at_the_next_lr_windows_top(syn):
    import dataclasses
    import math

    settings = dataclasses.replace(syn.settings(Dimension("lr", 1e-3, 1.0, "log"), syn.WD, budget=8),
                                   workload_info={"steps": 400, "batch_size": 64, "train_examples": 1437})
    points = [(0.5, 0.95, 0.1), (0.1, 0.9, 0.2), (0.9, 0.85, 0.3), (0.3, 0.1, 1.0), (0.2, 0.3, 1.1), (0.6, 0.2, 1.2),
              (0.8, 0.5, 1.3), (0.7, 0.4, 1.4)]
    trials = []
    for i, (u, w, v) in enumerate(points):
        lr, wd = 10 ** (math.log10(0.03) + (u - 0.5) * 2), syn.WD.from_unit(w)
        trials.append(syn.trial(i, v, config={"lr": lr, "weight_decay": wd}, steps=400, lr=lr, weight_decay=wd))
    lr, wd = next_space(trials, settings).dimensions
    assert lr.change == "keep" and lr.window.high == 1.0
    # τ = one epoch at the best trial's lr (0.03) allows 1.5; at lr 1 that is lr·weight_decay 1.5
    assert wd.change == "widen" and wd.window == Dimension("weight_decay", 1e-5, 0.5, "log")
