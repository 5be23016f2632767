"""Failed trials: the finding, the next search space and the boundary check they change."""

import dataclasses

import pytest

from adamtune.analysis import boundary_check, failure_findings, failures, next_space
from adamtune.analysis._failures import failure_limited
from adamtune.space import Dimension

LR = Dimension("lr", 1e-3, 3.0, "log")


def failed(syn, number, error="RuntimeError: loss exploded: 417", **params):
    tb = f'Traceback (most recent call last):\n  File "wl.py", line 7, in _loss\n{error}\n'
    return dataclasses.replace(syn.trial(number, None, syn.S.FAILED, **params), error=tb)


def exploding(syn):
    """The audit's study (lr=1e-3:3, a loss that raises above 4): the 5 largest lrs failed."""
    rows = [(0.907, None), (0.001547, 0.1003), (0.01454, 0.1278), (0.05801, 0.295), (0.3263, None), (0.03048, 0.2665),
            (0.005274, 0.2267), (1.152, None), (2.021, None), (0.003405, 0.3165), (0.05354, 0.09492), (0.2104, None)]
    pruned = {2, 3, 5, 6, 9}
    trials = []
    for i, (lr, v) in enumerate(rows):
        if v is None:
            trials.append(failed(syn, i, f"RuntimeError: loss exploded: {lr * 1000:.3g}", lr=lr, weight_decay=0.01))
        else:
            trials.append(syn.trial(i, v, syn.S.PRUNED if i in pruned else syn.S.COMPLETE, lr=lr, weight_decay=0.01))
    return trials, syn.settings(LR, syn.WD, budget=12)


def test_failures_at_the_largest_lrs_are_a_warning_that_names_the_error_and_the_lr(syn):
    trials, settings = exploding(syn)
    f = failures(trials, settings)
    assert f.failed == (0, 4, 7, 8, 11) and f.ran == 12
    # the messages differ by their numbers only: one error
    # named with the line of the user's code they came from
    assert f.error == "RuntimeError: loss exploded: 907 (wl.py, line 7)" and f.error_count == 5 and not f.error_same
    assert (f.sorted_by, f.side, f.bound, f.trained_bound) == ("lr", "above", 0.2104, 0.05801)
    assert f.lr_ceiling == 0.2104
    (finding,) = failure_findings(f, "fail", "sqlite:///b.db")
    assert finding.kind == "failed" and finding.severity == "warning" and finding.trials == (0, 4, 7, 8, 11)
    assert finding.title == ("5 of 12 trials failed, all like RuntimeError: loss exploded: 907 (wl.py, line 7); "
                             "all 5 at lr ≥ 0.2104, every lr below trained")
    assert "in all 5, numbers aside: RuntimeError: loss exploded: 907 (wl.py, line 7)." in finding.detail
    assert "They are the 5 trials with the largest lrs of the study" in finding.detail
    assert "The largest lr that trained is 0.05801." in finding.detail
    assert finding.detail.endswith("Every traceback: adamtune show --json --storage sqlite:///b.db --study fail")
    assert "largest lrs" in finding.action


def test_failures_at_random_points_are_counted_but_sort_by_nothing(syn):
    settings = syn.settings(syn.LR, syn.WD, budget=20)
    trials = [syn.trial(i, 0.5 + 0.01 * i, lr=syn.lr_at(i / 19), weight_decay=0.01) for i in range(20)]
    for i in (3, 11):  # a bug that strikes here and there
        trials[i] = failed(syn, i, "KeyError: 'label'", lr=trials[i].params["lr"], weight_decay=0.01)
    trials.append(dataclasses.replace(failed(syn, 20, "terminated by SIGTERM", lr=syn.lr_at(0.99), weight_decay=0.01),
                                      interrupted=True))  # cut short: not a failure of the code
    f = failures(trials, settings)
    assert f.failed == (3, 11) and f.ran == 20 and f.sorted_by is None and f.lr_ceiling is None
    (finding,) = failure_findings(f)
    assert finding.severity == "info"  # 2 of 20, at no particular lr
    assert finding.title == "2 of 20 trials failed, all with KeyError: 'label' (wl.py, line 7)"
    assert "sort" not in finding.detail and "Every traceback: adamtune show --json" in finding.detail
    # a large share is a warning even at random points, and unlike errors are told apart
    for i in (5, 7):
        trials[i] = failed(syn, i, f"ValueError: bad batch {i}", lr=trials[i].params["lr"], weight_decay=0.01)
    (finding,) = failure_findings(failures(trials, settings))
    assert finding.severity == "warning"
    assert finding.title == "4 of 20 trials failed, 2 with KeyError: 'label' (wl.py, line 7)"
    assert failure_findings(failures(trials[:3], settings)) == ()


def test_a_lone_failure_at_the_top_lr_of_a_small_study_is_not_called_a_pattern(syn):
    settings = syn.settings(syn.LR, budget=8)
    trials = [syn.trial(i, 0.5, lr=syn.lr_at(i / 8)) for i in range(7)] + [failed(syn, 7, lr=syn.lr_at(0.99))]
    f = failures(trials, settings)
    assert f.sorted_by is None  # 1 of 8 at the top: chance does that 2 times in 8
    (finding,) = failure_findings(f)
    assert finding.title == "1 of 8 trials failed: RuntimeError: loss exploded: 417 (wl.py, line 7)"
    assert finding.severity == "info"


def test_failures_that_sort_by_another_dimension_say_so_without_moving_lr(syn):
    settings = syn.settings(syn.LR, syn.WD, budget=24)
    trials = [syn.trial(i, 0.5 + 0.01 * i, lr=syn.lr_at((i * 7 % 20) / 20), weight_decay=syn.WD.from_unit(i / 40))
              for i in range(20)]
    trials += [failed(syn, 20 + i, "RuntimeError: decayed to nothing", lr=syn.lr_at(u),
                      weight_decay=syn.WD.from_unit(0.9 + 0.03 * i)) for i, u in enumerate((0.1, 0.5, 0.9))]
    f = failures(trials, settings)
    assert (f.sorted_by, f.side) == ("weight_decay", "above") and f.lr_ceiling is None
    (finding,) = failure_findings(f)
    assert finding.severity == "info"  # 3 of 23, and not lr's doing
    assert finding.title.endswith(f"; all 3 at weight_decay ≥ {syn.WD.from_unit(0.9):.4g}, every weight_decay below trained")
    assert next_space(trials, settings).dimensions == next_space(trials[:20], settings).dimensions


def test_the_next_lr_window_stops_below_the_failures_and_keeps_every_lr_that_trained(syn):
    trials, settings = exploding(syn)
    ns = next_space(trials, settings, study_name="fail")
    lr = ns.dimensions[0]
    # too few completed trials to narrow: kept before, now cut below the failures
    assert lr.change == "narrow" and lr.set_argument == "lr=0.001:0.2"
    assert lr.reason == "fewer than 5 completed trials; all 5 trials from lr 0.21 up failed: below it"
    assert ns.changed and not ns.continues and "--study fail-next --set lr=0.001:0.2" in ns.command
    assert ns.below_failed == 0.2104
    assert ns.dimensions[1].change == "keep"
    # without the failures the same study would run again, the same seed drawing the same lrs
    ok = [t for t in trials if t.state != syn.S.FAILED]
    assert next_space(ok, settings, study_name="fail").continues
    assert next_space(ok, settings, study_name="fail").below_failed is None
    # a pruned trial between the rounded-down top and the smallest failed lr stays inside
    trials.append(syn.trial(12, 0.3, syn.S.PRUNED, lr=0.205, weight_decay=0.01))
    assert next_space(trials, settings).dimensions[0].window.high == pytest.approx(0.2104)


def test_a_widened_lr_window_stops_below_the_failures_too(syn):
    # the best trials at lr's lower edge, the top lrs failed: widened down, cut at the top
    settings = syn.settings(LR, syn.WD, budget=12)
    lrs = (1.1e-3, 1.5e-3, 3e-3, 1e-2, 3e-2, 0.1)
    trials = [syn.trial(i, 0.1 + i / 10, lr=lr, weight_decay=0.01) for i, lr in enumerate(lrs)]
    trials += [failed(syn, 6 + i, lr=lr, weight_decay=0.01) for i, lr in enumerate((0.5, 1.0, 2.0, 2.9))]
    lr = next_space(trials, settings).dimensions[0]
    assert lr.change == "widen" and lr.window.low < 1e-3 and lr.window.high == pytest.approx(0.5)
    assert lr.reason == "the best trials sit at its lower edge; all 4 trials from lr 0.5 up failed: below it"


def test_best_trials_under_failed_lrs_at_the_top_are_not_a_missed_optimum(syn):
    # the best lrs are the largest that trained; every lr above them failed: nothing to widen into
    settings = syn.settings(LR, syn.WD, budget=12)
    lrs = (1.2e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 0.9, 1.3)
    trials = [syn.trial(i, 2 - lr, lr=lr, weight_decay=0.01) for i, lr in enumerate(lrs)]
    trials += [failed(syn, 8 + i, lr=lr, weight_decay=0.01) for i, lr in enumerate((1.6, 2.0, 2.4, 2.9))]
    checks = boundary_check(trials, settings)
    assert checks[0].edge == "upper" and checks[0].proposal is not None  # the check alone sees no failure
    f = failures(trials, settings)
    limited = failure_limited(checks, f)
    assert limited[0].edge is None and limited[0].proposal is None and limited[1] == checks[1]
    lr = next_space(trials, settings).dimensions[0]
    assert lr.change != "widen" and lr.window.high == pytest.approx(1.6)


def test_nothing_learned_below_lrs_that_failed_does_not_raise_lr_into_them(syn):
    # every trial that trained stayed flat, the largest lrs raised: raising lr 3 decades goes where all failed
    settings = syn.settings(LR, syn.WD, budget=12)
    flat = syn.curve((10, 20, 30), val_loss=(2.3, 2.3, 2.3))
    lrs = (1.1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3e-2, 6e-2, 0.1)
    trials = [syn.trial(i, 2.3, curve=flat, lr=lr, weight_decay=0.01) for i, lr in enumerate(lrs)]
    trials += [failed(syn, 8 + i, lr=lr, weight_decay=0.01) for i, lr in enumerate((0.3, 0.8, 1.5, 2.5))]
    ns = next_space(trials, settings)
    lr, wd = ns.dimensions
    assert lr.change == "narrow" and lr.window.high == pytest.approx(0.3) and lr.window.low == LR.low
    assert lr.reason == "no trial learned; all 4 trials from lr 0.3 up failed: below it"
    assert wd.change == "keep"
    # without the failures the lr window moves up, as it does when nothing is learned
    assert next_space(trials[:8], settings).dimensions[0].change == "raise"
