import math

from adamtune.analysis import importance


def test_the_hyperparameter_that_drives_the_objective_comes_first_under_adamtune_names(syn):
    settings = syn.settings(syn.LR, syn.BETA1)
    trials = []
    for i in range(16):
        u, w = (i * 0.5698) % 1, (i * 0.7549 + 0.1) % 1  # a 2-d low-discrepancy (R2) sequence
        lr, beta1 = syn.lr_at(u), syn.BETA1.from_unit(w)
        trials.append(syn.trial(i, (math.log10(lr) + 3) ** 2 + 0.01 * w, lr=lr, beta1=beta1))
    trials.append(syn.trial(16, None, syn.S.DIVERGED, lr=1e-2, beta1=0.9))  # counted at the worst value
    imp = importance(trials, settings)
    assert imp.reason is None and imp.completed == 16 and imp.diverged == 1
    names = [n for n, _ in imp.values]
    assert names == ["lr", "beta1"]  # not "1-beta1"
    assert imp.values[0][1] > 0.6 and abs(sum(v for _, v in imp.values) - 1) < 1e-6
    assert importance(trials, settings) == imp  # seeded: the same every time


def test_not_computed_with_one_dimension_or_few_trials(syn):
    one = importance([syn.trial(i, float(i), lr=syn.lr_at(i / 10)) for i in range(10)], syn.settings(syn.LR))
    assert one.values == () and one.reason == "only one hyperparameter was tuned"
    few = importance([syn.trial(i, float(i), lr=1e-3, weight_decay=1e-3) for i in range(3)], syn.settings(syn.LR, syn.WD))
    assert few.values == () and few.reason == "needs at least 5 completed trials, the study has 3"
    same = importance([syn.trial(i, 1.0, lr=syn.lr_at(i / 9), weight_decay=1e-3) for i in range(8)],
                      syn.settings(syn.LR, syn.WD))
    assert same.reason == "every completed trial has the same objective"


def test_diverged_trials_count_at_the_worst_value_so_what_decides_divergence_matters(syn):
    # the audit's case: lr alone decides whether a trial diverges (8 of 16); among those that
    # completed, the objective follows weight_decay. Without the diverged trials lr looked idle.
    settings = syn.settings(syn.LR, syn.WD)
    trials = []
    for i in range(16):
        u, w = (i * 0.5698) % 1, (i * 0.7549 + 0.1) % 1
        diverged = u > 0.55
        trials.append(syn.trial(i, None if diverged else 0.5 + 0.1 * w, syn.S.DIVERGED if diverged else syn.S.COMPLETE,
                                lr=syn.lr_at(u), weight_decay=syn.WD.from_unit(w)))
    imp = importance(trials, settings)
    assert imp.diverged == 8 and imp.values[0][0] == "lr" and imp.values[0][1] > 0.6
