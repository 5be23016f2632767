"""The plot information, tested without drawing."""

import math

import pytest

from adamtune.analysis import axis_plot_info, curves_info, heatmap_info, isolation_info, log_axis


def mixed(syn, direction="minimize"):
    S = syn.S
    rows = [  # (lr position, wd position, state, value)
        (0.1, 0.2, S.COMPLETE, 0.5), (0.3, 0.8, S.COMPLETE, 0.3), (0.55, 0.55, S.COMPLETE, 0.2),
        (0.6, 0.1, S.PRUNED, 0.9), (0.9, 0.9, S.DIVERGED, None), (0.95, 0.3, S.DIVERGED, None),
        (0.4, 0.4, S.FAILED, None),
    ]
    trials = [
        syn.trial(i, v, st, curve=syn.curve((10, 20), val_loss=(1.0, v or math.nan), train_loss=(1.1, 0.9)),
                  lr=syn.lr_at(u), weight_decay=syn.WD.from_unit(w))
        for i, (u, w, st, v) in enumerate(rows)
    ]
    return trials, syn.settings(syn.LR, syn.WD, direction=direction)


def test_axis_plots_keep_every_trial_and_put_diverged_and_failed_ones_on_the_worse_edge(syn):
    trials, settings = mixed(syn)
    lr, wd = axis_plot_info(trials, settings)
    assert lr.dimension.name == "lr" and wd.dimension.name == "weight_decay"
    assert [p.number for p in lr.points] == [0, 1, 2, 3, 4, 5, 6]
    edge = {p.number: p for p in lr.points if p.at_edge}
    assert set(edge) == {4, 5, 6}
    assert edge[6].state == syn.S.FAILED and edge[6].x == syn.lr_at(0.4)  # its own state: its own marker
    assert lr.edge_y == pytest.approx(0.9 + 0.08 * 0.7)  # above the worst value when minimising
    assert all(p.y == lr.edge_y for p in edge.values())
    assert lr.y_range == (0.2, lr.edge_y)
    assert [p.number for p in lr.points if p.is_best] == [2]
    assert [p.state for p in lr.points if p.number == 3] == [syn.S.PRUNED]
    trials, settings = mixed(syn, "maximize")
    (lr, _) = axis_plot_info(trials, settings)
    assert lr.edge_y == pytest.approx(0.2 - 0.08 * 0.7)  # below the worst value when maximising
    assert [p.number for p in lr.points if p.is_best] == [0]


def test_failed_trials_alone_get_the_edge_and_trials_cut_short_are_on_no_plot(syn):
    import dataclasses

    S = syn.S
    trials = [syn.trial(i, float(i), lr=syn.lr_at(i / 4)) for i in range(3)]
    trials.append(syn.trial(3, None, S.FAILED, lr=syn.lr_at(0.9)))
    trials.append(dataclasses.replace(syn.trial(4, None, S.FAILED, lr=syn.lr_at(0.95)), interrupted=True))
    (info,) = axis_plot_info(trials, syn.settings(syn.LR))
    assert [p.number for p in info.points] == [0, 1, 2, 3]
    assert [p.number for p in info.points if p.at_edge] == [3] and info.edge_y == pytest.approx(2 + 0.08 * 2)
    # the other plots leave failed trials to the table
    assert sum(b.trials for b in isolation_info(trials, syn.settings(syn.LR))[0].buckets) == 3


def test_no_diverged_trials_no_edge(syn):
    trials = [syn.trial(i, float(i), lr=syn.lr_at(i / 4)) for i in range(4)]
    (info,) = axis_plot_info(trials, syn.settings(syn.LR))
    assert info.edge_y is None and not any(p.at_edge for p in info.points) and info.y_range == (0.0, 3.0)


def test_isolation_buckets_split_the_window_on_its_own_scale(syn):
    trials, settings = mixed(syn)
    lr, _ = isolation_info(trials, settings, buckets=4)
    edges = [b.low for b in lr.buckets] + [lr.buckets[-1].high]
    assert edges == pytest.approx([1e-5, 10 ** -4.25, 10 ** -3.5, 10 ** -2.75, 1e-2])  # equal on the log scale
    best = [(b.best, b.best_trial, b.trials, b.diverged, b.pruned) for b in lr.buckets]
    assert best == [(0.5, 0, 1, 0, 0), (0.3, 1, 1, 0, 0), (0.2, 2, 2, 0, 1), (None, None, 2, 2, 0)]


def test_isolation_of_a_beta_uses_log_of_one_minus_beta(syn):
    trials = [syn.trial(i, float(i), beta1=syn.BETA1.from_unit(u)) for i, u in enumerate((0.1, 0.6, 0.9))]
    (info,) = isolation_info(trials, syn.settings(syn.BETA1), buckets=2)
    mid = info.buckets[0].high
    assert 1 - mid == pytest.approx(math.sqrt(0.2 * 0.001))  # the geometric middle of 1-beta
    assert [b.best_trial for b in info.buckets] == [0, 1]


def test_heatmaps_for_the_pairs_the_study_tuned(syn):
    trials, settings = mixed(syn)
    (h,) = heatmap_info(trials, settings, bins=2)
    assert (h.x.name, h.y.name) == ("lr", "weight_decay")
    assert len(h.cells) == 2 and len(h.cells[0]) == 2
    # rows: weight_decay low/high; columns: lr low/high
    assert (h.cells[0][0].best, h.cells[0][0].trials) == (0.5, 1)  # trial 0
    assert (h.cells[1][0].best, h.cells[1][0].trials) == (0.3, 1)  # trial 1
    assert (h.cells[1][1].best, h.cells[1][1].diverged) == (0.2, 1)  # trial 2, and trial 4 diverged
    assert (h.cells[0][1].best, h.cells[0][1].trials, h.cells[0][1].diverged) == (None, 2, 1)  # pruned 3, diverged 5
    assert len(h.points) == 6
    assert h.best_trial == 2  # drawn as the star
    assert heatmap_info(trials, syn.settings(syn.LR, syn.BETA1)) == ()  # beta1 not in these trials: no cell
    assert heatmap_info(trials, syn.settings(syn.LR)) == ()


def test_curves_for_every_metric_objective_first(syn):
    trials, settings = mixed(syn)
    val, train = curves_info(trials, settings)
    assert val.metric == "val_loss" and val.is_objective and train.metric == "train_loss"
    assert [s.number for s in val.series] == [0, 1, 2, 3, 4, 5]
    ranks = {s.number: s.rank for s in val.series}
    assert ranks[2] == 0 and ranks[1] == 1 and ranks[0] == 2 and ranks[3] is None
    assert math.isnan(val.series[4].values[1])  # diverged: kept, with its NaN


def test_a_score_in_zero_one_keeps_a_linear_axis_a_loss_goes_log(syn):
    # Good accuracies (0.93-0.98) crowd into one line at the top of a log axis.
    spread = [0.03, 0.5, 0.93, 0.98]
    for name in ("val_accuracy", "val_acc", "top1_acc", "f1_macro", "precision", "val_recall", "auc", "<b>acc</b>"):
        assert not log_axis(name, spread), name
    assert log_axis("val_loss", spread) and log_axis("train_loss", [0.01, 5.0])
    assert log_axis("val_accuracy", [0.5, 30.0, 99.0])  # a percentage is not bounded by 1: the name alone does not decide
    assert not log_axis("val_loss", [0.5, 0.9]) and not log_axis("val_loss", [-1.0, 30.0]) and not log_axis("val_loss", [])
    trials = [
        syn.trial(i, v, curve=syn.curve((10, 20), val_loss=(5.0, v), val_accuracy=(0.02, a)), lr=syn.lr_at(i / 3))
        for i, (v, a) in enumerate(((0.1, 0.98), (0.12, 0.95), (0.2, 0.93)))
    ]
    curves = {c.metric: c for c in curves_info(trials, syn.settings(syn.LR))}
    assert curves["val_loss"].log_y and not curves["val_accuracy"].log_y
    trials = [syn.trial(i, v, lr=syn.lr_at(i / 3)) for i, v in enumerate(spread)]
    (accuracy,) = axis_plot_info(trials, syn.settings(syn.LR, metric="val_accuracy", direction="maximize"))
    (loss,) = axis_plot_info(trials, syn.settings(syn.LR))
    assert not accuracy.log_y and loss.log_y
