import pytest

from adamtune.analysis import boundary_check, boundary_findings, widen
from adamtune.space import Dimension, parse_override, preset

POSITIONS = (0.02, 0.15, 0.3, 0.45, 0.6, 0.75, 0.85, 0.95)  # 8 trials, as a quasi-random search spreads them


def study(syn, value_of, positions=POSITIONS, direction="minimize", states=None):
    """Trials at ``positions`` of the lr window, weight_decay scattered, objective ``value_of(position)``."""
    trials = []
    for i, u in enumerate(positions):
        state = (states or {}).get(i, syn.S.COMPLETE)
        value = None if state == syn.S.DIVERGED else value_of(u)
        trials.append(syn.trial(i, value, state, lr=syn.lr_at(u), weight_decay=syn.WD.from_unit((i * 0.37) % 1)))
    return trials, syn.settings(syn.LR, syn.WD, direction=direction)


def check_of(checks, name):
    return next(c for c in checks if c.name == name)


def test_best_trials_at_the_upper_edge_fire_and_propose_a_wider_window(syn):
    trials, settings = study(syn, lambda u: 1 - u)
    checks = boundary_check(trials, settings)
    lr = check_of(checks, "lr")
    assert lr.edge == "upper" and lr.band == pytest.approx(1 / 8)
    assert [n for n, _ in lr.top_positions] == [7, 6, 5]
    # extended by half the window's width on the log scale: 1e-5 * 1000 ** 1.5
    assert lr.proposal.low == pytest.approx(1e-5) and lr.proposal.high == pytest.approx(10 ** -0.5)
    assert lr.set_argument == "lr=1e-05:0.32"
    assert check_of(checks, "weight_decay").edge is None
    (finding,) = boundary_findings(checks)
    assert finding.kind == "boundary" and finding.severity == "warning"
    assert "lr: the best trials sit at the upper edge" in finding.title
    assert finding.suggestion == ("--set lr=1e-05:0.32",)
    assert "widen" in finding.action


def test_lower_edge_and_maximize(syn):
    trials, settings = study(syn, lambda u: u)
    lr = check_of(boundary_check(trials, settings), "lr")
    assert lr.edge == "lower" and lr.proposal.high == pytest.approx(1e-2)
    assert lr.proposal.low == pytest.approx(10 ** -6.5)
    trials, settings = study(syn, lambda u: u, direction="maximize")  # higher is better: best at the top
    assert check_of(boundary_check(trials, settings), "lr").edge == "upper"


def test_widened_down_the_window_leaves_out_the_lrs_where_every_trial_diverged(syn):
    # best at the lower edge; every trial from position 0.6 up diverged: the widened window
    # stops below the first diverged lr instead of keeping the window's top
    diverged = {4: syn.S.DIVERGED, 5: syn.S.DIVERGED, 6: syn.S.DIVERGED, 7: syn.S.DIVERGED}
    trials, settings = study(syn, lambda u: u, states=diverged)
    lr = check_of(boundary_check(trials, settings), "lr")
    assert lr.edge == "lower" and lr.proposal.low == pytest.approx(10 ** -6.5)
    first_diverged = syn.lr_at(0.6)  # 6.3e-4
    assert lr.proposal.high == pytest.approx(6e-4) and lr.proposal.high <= first_diverged
    # a diverged trial below a stable one (other hyperparameters at play): the top is kept
    trials, settings = study(syn, lambda u: u, states={1: syn.S.DIVERGED, 6: syn.S.DIVERGED})
    assert check_of(boundary_check(trials, settings), "lr").proposal.high == pytest.approx(1e-2)


def test_the_cut_below_divergence_never_leaves_out_an_lr_that_trained(syn):
    # a trial at lr 6.1e-4 trained to the end, the next one up (6.3e-4) diverged: rounded down to
    # one figure (6e-4) the top would leave out the trained one, so the top is the diverged lr itself
    positions = (0.02, 0.15, 0.3, 0.45, 0.595, 0.6, 0.75, 0.9)
    diverged = {5: syn.S.DIVERGED, 6: syn.S.DIVERGED, 7: syn.S.DIVERGED}
    trials, settings = study(syn, lambda u: u, positions=positions, states=diverged)
    lr = check_of(boundary_check(trials, settings), "lr")
    assert lr.edge == "lower"
    assert syn.lr_at(0.595) < lr.proposal.high <= syn.lr_at(0.6)
    assert lr.proposal.high == pytest.approx(syn.lr_at(0.6))


def test_a_best_trial_at_the_edge_with_the_others_elsewhere_does_not_fire(syn):
    # best at 0.95, the next best at 0.15 and 0.3: the dimension does not pull towards the edge
    values = {0.95: 0.1, 0.15: 0.2, 0.3: 0.25}
    trials, settings = study(syn, lambda u: values.get(u, 1.0))
    assert boundary_check(trials, settings)[0].edge is None
    assert boundary_findings(boundary_check(trials, settings)) == ()


def test_a_best_trial_in_the_middle_does_not_fire(syn):
    trials, settings = study(syn, lambda u: (u - 0.5) ** 2)
    assert all(c.edge is None for c in boundary_check(trials, settings))


def test_the_band_is_ten_percent_or_one_over_n(syn):
    # 20 trials: band 10%, a best trial 12% from the top is not at the edge; with 8 trials it is.
    many = tuple(i / 20 for i in range(18)) + (0.88,)
    trials, settings = study(syn, lambda u: 1 - u, positions=many)
    lr = check_of(boundary_check(trials, settings), "lr")
    assert lr.band == pytest.approx(0.1) and lr.edge is None
    few = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.88)
    trials, settings = study(syn, lambda u: 1 - u, positions=few)
    assert check_of(boundary_check(trials, settings), "lr").edge == "upper"


def test_diverged_trials_beyond_the_best_make_the_edge_a_stability_limit(syn):
    positions = POSITIONS + (0.99,)
    trials, settings = study(syn, lambda u: 1 - u, positions=positions, states={8: syn.S.DIVERGED})
    lr = check_of(boundary_check(trials, settings), "lr")
    assert lr.edge is None and lr.proposal is None and lr.stability_limit == (8,)


def test_the_stability_limit_is_said_not_dropped(syn):
    positions = POSITIONS + (0.99,)
    trials, settings = study(syn, lambda u: 1 - u, positions=positions, states={8: syn.S.DIVERGED})
    findings = boundary_findings(boundary_check(trials, settings))
    (f,) = [f for f in findings if "lr" in f.title]
    assert f.severity == "info" and f.kind == "unstable" and f.trials == (8,) and not f.suggestion
    assert "upper edge" in f.title and "trial 8 diverged at or above it" in f.detail


def _decay_study(syn, diverged_lr_position):
    """The best weight_decay at the top edge of its window; trial 8 diverged with an even larger
    weight_decay and an lr at ``diverged_lr_position`` (the completed trials' lrs span 0.1-0.5)."""
    wd = (0.05, 0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.97)
    trials = [syn.trial(i, 1 - u, lr=syn.lr_at(0.1 + 0.05 * i), weight_decay=syn.WD.from_unit(u))
              for i, u in enumerate(wd)]
    trials.append(syn.trial(8, None, syn.S.DIVERGED, lr=syn.lr_at(diverged_lr_position),
                            weight_decay=syn.WD.from_unit(0.99)))
    return trials, syn.settings(syn.LR, syn.WD)


def test_a_trial_that_diverged_for_its_lr_does_not_hide_another_dimensions_edge(syn):
    # trial 8's lr is above every lr that trained to the end: its lr, not its decay, explains it
    trials, settings = _decay_study(syn, 0.9)
    wd = check_of(boundary_check(trials, settings), "weight_decay")
    assert wd.edge == "upper" and wd.stability_limit == () and wd.proposal is not None
    (f,) = [f for f in boundary_findings(boundary_check(trials, settings)) if "weight_decay" in f.title]
    assert f.severity == "warning" and f.suggestion == (f"--set {wd.set_argument}",)
    # with an lr among those that trained, the decay may be what made it diverge: the edge stands
    trials, settings = _decay_study(syn, 0.2)
    wd = check_of(boundary_check(trials, settings), "weight_decay")
    assert wd.edge is None and wd.stability_limit == (8,)


def test_two_best_trials_are_both(syn):
    trials = [syn.trial(0, 0.1, lr=syn.lr_at(0.97)), syn.trial(1, 0.2, lr=syn.lr_at(0.8))]
    (f,) = boundary_findings(boundary_check(trials, syn.settings(syn.LR)))
    assert "both best trials (trials 0 and 1) lie" in f.detail


def test_too_few_completed_trials_say_nothing(syn):
    states = {i: syn.S.PRUNED for i in range(7)}
    trials, settings = study(syn, lambda u: 1 - u, states=states)
    assert all(c.edge is None and c.best_position is None for c in boundary_check(trials, settings))


def test_trials_need_their_settings(syn):
    trials, settings = study(syn, lambda u: 1 - u)
    with pytest.raises(TypeError, match="StudySettings"):
        boundary_check(trials)


@pytest.mark.parametrize("dim, edge, expect", [
    (Dimension("beta1", 0.8, 0.999, "log1m"), "upper", lambda d: 0.999 < d.high < 1),
    (Dimension("beta1", 0.8, 0.999, "log1m"), "lower", lambda d: 0 < d.low < 0.8),
    (Dimension("lr", 1e-6, 1e-4, "log"), "lower", lambda d: d.low == pytest.approx(1e-7)),
    (Dimension("warmup", 0.0, 0.05, "linear"), "upper", lambda d: 0.05 < d.high <= 0.1),
    (Dimension("weight_decay", 0.01, 0.1, "linear"), "lower", lambda d: 0 <= d.low < 0.01),
])
def test_widening_respects_hard_limits(dim, edge, expect):
    space = preset("adamw", "generic", 16)
    wider = widen(dim, edge, space)
    assert expect(wider)
    from adamtune.analysis import set_argument

    name, parsed = parse_override(set_argument(wider))  # what is printed is what --set accepts
    assert name == dim.name and parsed.scale == dim.scale
    space.config_with({dim.name: parsed.low})
    space.config_with({dim.name: parsed.high})


def test_an_edge_at_a_hard_limit_proposes_nothing():
    assert widen(Dimension("weight_decay", 0.0, 0.1, "linear"), "lower", preset()) is None


def test_warmup_widens_no_further_than_the_playbooks_cap():
    from adamtune import guide

    assert widen(Dimension("warmup", 0.0, 0.1, "linear"), "upper", preset()) is None
    assert widen(Dimension("warmup", 0.0, 0.8, "linear"), "upper", preset()) is None  # never narrowed instead
    wider = widen(Dimension("warmup", 0.0, 0.08, "linear"), "upper", preset())
    assert wider.high == pytest.approx(guide.MAX_WARMUP_FRACTION)


def test_best_trials_crowding_the_edge_fire_though_the_best_is_just_outside_the_band(syn):
    # 20 trials, band 10%: the best at 0.88 with the next best at 0.99 and 0.93 crowd the top edge
    positions = tuple(i / 20 for i in range(17)) + (0.88, 0.93, 0.99)
    values = {0.88: 0.1, 0.99: 0.11, 0.93: 0.12}
    trials, settings = study(syn, lambda u: values.get(u, 1.0), positions=positions)
    lr = check_of(boundary_check(trials, settings), "lr")
    assert lr.band == pytest.approx(0.1) and lr.edge == "upper"
    (f,) = boundary_findings(boundary_check(trials, settings))
    assert "is 12% of the window's width from its top" in f.detail
    assert "(trial 19, lr=" in f.detail and "is 1%)" in f.detail
    # the best outside the outer quarter: the others at the edge do not make it one
    values = {0.7: 0.1, 0.99: 0.11, 0.93: 0.12}
    trials, settings = study(syn, lambda u: values.get(u, 1.0), positions=positions[:14] + (0.7, 0.93, 0.99))
    assert check_of(boundary_check(trials, settings), "lr").edge is None


RUN = {"steps": 400, "batch_size": 64, "train_examples": 1437}  # an epoch: 22.45 steps


def decay_study(syn, window, best_at, lr=0.0178, info=RUN, optimizer="adamw"):
    """AdamW trials spread over a weight_decay ``window`` (lr fixed), the best at ``best_at``'s edge."""
    from dataclasses import replace

    settings = replace(syn.settings(window, optimizer=optimizer), workload_info=info)
    trials = [syn.trial(i, u if best_at == "lower" else 1 - u, config={"lr": lr, "weight_decay": window.from_unit(u)},
                        steps=400, weight_decay=window.from_unit(u)) for i, u in enumerate(POSITIONS)]
    return trials, settings


def test_weight_decay_is_not_widened_down_where_decay_barely_acts(syn):
    # the audit's case: best at 1e-5 of 1e-5..0.3, where tau = 1/(lr·λ) is millions of steps (a
    # 400-step run); the boundary check said "widen down to 5.8e-08" while the decay finding said
    # "test higher" -- smaller values act even less, so the edge is kept and an info finding says why
    from adamtune.analysis import next_space

    trials, settings = decay_study(syn, syn.WD, "lower")
    wd = check_of(boundary_check(trials, settings), "weight_decay")
    assert wd.edge == "lower" and wd.proposal is None and "decay barely acts at these values" in wd.note
    (f,) = boundary_findings(boundary_check(trials, settings))
    assert f.kind == "decay_timescale" and f.severity == "info" and f.suggestion == ()
    assert f.title == ("weight_decay: the best trials sit at the lower edge of its window 1e-05..0.3, where decay "
                       "barely acts: not widened down")
    assert ("At the best trial's lr (0.0178), weight_decay 1e-05 gives a decay timescale 1/(lr·weight_decay) of "
            "5,620,000 steps, 14,000x the 400-step run") in f.detail
    assert next_space(trials, settings).dimensions[0].change != "widen"


def test_weight_decay_is_widened_down_where_decay_acts_or_is_coupled(syn):
    # at lr 0.0178 a window from 0.5 has tau = 112 steps at its bottom: decay acts, the edge is real
    window = Dimension("weight_decay", 0.5, 50.0, "log")
    trials, settings = decay_study(syn, window, "lower")
    wd = check_of(boundary_check(trials, settings), "weight_decay")
    assert wd.proposal is not None and wd.proposal.low < 0.5 and wd.note == ""
    # Adam's weight_decay is L2 added to the gradient: no timescale, widened as any dimension
    trials, settings = decay_study(syn, syn.WD, "lower", optimizer="adam")
    wd = check_of(boundary_check(trials, settings), "weight_decay")
    assert wd.proposal is not None and wd.proposal.low < 1e-5


def test_weight_decay_widened_up_stops_where_tau_would_drop_under_an_epoch(syn):
    # the audit's alldiv-next: 1e-5..0.3 widened by half its width reached 52, where lr·λ = 0.93 at
    # the best lr (0.0178) and up to 2.6 at the window's lr 0.05; now it stops at tau = one epoch
    from adamtune import guide
    from adamtune.analysis import next_space

    trials, settings = decay_study(syn, syn.WD, "upper")
    wd = check_of(boundary_check(trials, settings), "weight_decay")
    epoch = 1437 / 64
    assert wd.edge == "upper" and wd.proposal.high == pytest.approx(1 / (0.0178 * epoch))
    assert guide.decay_timescale(0.0178, wd.proposal.high) == pytest.approx(epoch)
    assert wd.set_argument == "weight_decay=1e-05:2.5"
    (f,) = boundary_findings(boundary_check(trials, settings))
    assert f.kind == "boundary" and f.suggestion == ("--set weight_decay=1e-05:2.5",)
    assert ("It stops at 2.502, not at 51.96 (half the window's width): at the best trial's lr (0.0178), a larger "
            "weight_decay makes the decay timescale 1/(lr·weight_decay) shorter than one epoch (22 steps)") in f.detail
    ns = next_space(trials, settings)  # the next search takes the bounded window
    assert ns.dimensions[0].change == "widen" and ns.dimensions[0].window == wd.proposal


def test_without_an_epoch_weight_decay_widened_up_stops_at_a_tenth_of_the_run(syn):
    trials, settings = decay_study(syn, syn.WD, "upper", info={"steps": 400})
    wd = check_of(boundary_check(trials, settings), "weight_decay")
    assert wd.proposal.high == pytest.approx(1 / (0.0178 * 40))
    assert "shorter than 10% of the 400-step run (40 steps)" in wd.note


def test_weight_decay_whose_top_already_forgets_within_an_epoch_is_not_widened_up(syn):
    # 1e-5..3 at lr 0.0178: the top's tau is 19 steps, under an epoch (22): nothing stronger to propose
    window = Dimension("weight_decay", 1e-5, 3.0, "log")
    trials, settings = decay_study(syn, window, "upper")
    wd = check_of(boundary_check(trials, settings), "weight_decay")
    assert wd.edge == "upper" and wd.proposal is None
    (f,) = boundary_findings(boundary_check(trials, settings))
    assert f.kind == "decay_timescale" and f.severity == "info" and f.suggestion == ()
    assert "where decay is already as strong as adamtune proposes: not widened up" in f.title
    assert ("the window's top 3 already gives a decay timescale 1/(lr·weight_decay) of 19 steps, no more than one "
            "epoch (22 steps), the shortest adamtune proposes") in f.detail


# The audit's digits-cnn loop (tests record its trials: number, state, val_loss, lr, weight_decay, beta1).
CNN_NEXT = (  # digits-cnn-next: 16 trials, 4 complete, ASHA pruned the rest
    (0, "C", 0.0687958, 0.0490639, 0.147856, 0.988963), (1, "P", 2.2658, 4.81972e-05, 0.000653422, 0.637603),
    (2, "P", 1.63407, 0.000550154, 0.00542845, 0.998973), (3, "C", 0.0494139, 0.00247345, 2.42328e-05, 0.863802),
    (4, "C", 0.0414912, 0.0161542, 0.0214901, 0.810111), (5, "P", 0.415784, 0.00122921, 9.22619e-05, 0.978911),
    (6, "P", 2.22928, 0.00018273, 0.0380497, 0.95007), (7, "P", 0.778859, 0.0636372, 0.00016172, 0.997169),
    (8, "P", 0.369983, 0.117211, 0.00236269, 0.969874), (9, "P", 2.23859, 0.000113565, 1.76203e-05, 0.995194),
    (10, "P", 0.0876126, 0.00226711, 0.196735, 0.685382), (11, "P", 0.192053, 0.0100313, 0.00148204, 0.987579),
    (12, "P", 0.301357, 0.00455693, 0.05831, 0.998254), (13, "P", 1.89424, 0.000342006, 0.000457884, 0.917689),
    (14, "P", 2.23923, 8.88691e-05, 0.0078056, 0.99351), (15, "C", 0.0632514, 0.0304593, 6.06802e-05, 0.400531),
)
CNN_FIRST = (  # digits-cnn, the study before it: 16 trials, 5 complete
    (0, "C", 0.105135, 0.00419803, 0.147856, 0.993167), (1, "P", 2.27138, 4.1173e-05, 0.000653422, 0.888257),
    (2, "P", 2.15456, 0.000209285, 0.00542845, 0.998979), (3, "P", 1.2911, 0.000571033, 2.42328e-05, 0.948942),
    (4, "C", 0.0670451, 0.00199926, 0.0214901, 0.933384), (5, "P", 1.96522, 0.000357996, 9.22619e-05, 0.988527),
    (6, "P", 2.27704, 0.000100254, 0.0380497, 0.97713), (7, "C", 0.0931648, 0.00499422, 0.00016172, 0.9977),
    (8, "C", 0.0724114, 0.0075092, 0.00236269, 0.984736), (9, "P", 2.25972, 7.29735e-05, 1.76203e-05, 0.996487),
    (10, "P", 1.05697, 0.000538764, 0.196735, 0.900212), (11, "P", 0.367054, 0.00145443, 0.00148204, 0.992489),
    (12, "P", 1.19943, 0.000858742, 0.05831, 0.998438), (13, "P", 2.21599, 0.000152363, 0.000457884, 0.965879),
    (14, "P", 2.25932, 6.19518e-05, 0.0078056, 0.995533), (15, "C", 0.058287, 0.00305346, 6.06802e-05, 0.832829),
)


def cnn_study(syn, rows, lr_high, beta1_low):
    from dataclasses import replace

    states = {"C": syn.S.COMPLETE, "P": syn.S.PRUNED}
    trials = [syn.trial(n, v, states[s], config={"lr": lr, "weight_decay": wd, "beta1": b1, "warmup": 0.0}, steps=300,
                        lr=lr, weight_decay=wd, beta1=b1) for n, s, v, lr, wd, b1 in rows]
    settings = replace(
        syn.settings(Dimension("lr", 3e-05, lr_high, "log"), syn.WD, Dimension("beta1", beta1_low, 0.999, "log1m")),
        workload="digits-cnn", workload_name="digits-cnn", task="cnn", pruner="asha",
        workload_info={"steps": 300, "batch_size": 64, "eval_every": 25, "train_examples": 1438})
    return trials, settings


def test_the_worst_of_three_best_of_four_completed_trials_does_not_widen_beta1(syn):
    # The audit's digits-cnn-next: the best trial (4, beta1 0.81) is 21% from the bottom of 0.25..0.999, outside
    # the band; only trial 15 (beta1 0.40, val_loss 0.0633) sits in it, the worst of the "3 best", which are 3 of
    # the 4 completed trials (the 4th: 0.0688). It widened beta1 again, to 0.078..0.999 (no momentum to speak of),
    # and the next study's best was no better. Trial 15 lies in the worse half of the completed trials' values:
    # it says no more about where the good beta1s are than the worst trial does.
    from adamtune.analysis import next_space

    trials, settings = cnn_study(syn, CNN_NEXT, 0.18, 0.25)
    beta1 = check_of(boundary_check(trials, settings), "beta1")
    assert [n for n, _ in beta1.top_positions] == [4, 3, 15] and beta1.top_positions[2][1] < beta1.band
    assert beta1.edge is None and beta1.proposal is None
    assert not [f for f in boundary_findings(boundary_check(trials, settings)) if "beta1" in f.title]
    ns = next_space(trials, settings)
    assert not any(a.startswith("beta1=") and a != "beta1=0.25:0.999" for a in ns.set_arguments)
    assert "beta1=0.078:0.999" not in (ns.command or "")


def test_a_best_trial_in_the_band_widens_though_the_top_set_is_most_of_the_completed_trials(syn):
    # The study before it, digits-cnn: 5 completed; the best trial itself (15, beta1 0.83) is 3% from the
    # bottom of 0.8..0.999: widened down, as before. Its lr: the best (15) is in the outer quarter and trial 8,
    # in the band at the top, is 0.0724 against the best's 0.0583 and the worst's 0.105: the better half.
    trials, settings = cnn_study(syn, CNN_FIRST, 0.01, 0.8)
    checks = boundary_check(trials, settings)
    assert check_of(checks, "beta1").edge == "lower" and check_of(checks, "beta1").set_argument == "beta1=0.25:0.999"
    assert check_of(checks, "lr").edge == "upper" and check_of(checks, "lr").set_argument == "lr=3e-05:0.18"
    titles = [f.title for f in boundary_findings(checks)]
    assert "beta1: the best trials sit at the lower edge of its window 0.8..0.999" in titles
    assert "lr: the best trials sit at the upper edge of its window 3e-05..0.01" in titles


def test_few_completed_trials_all_crowding_the_edge_still_widen(syn):
    # 4 completed, the best just outside the band and the next best inside it, close in value: a clear edge
    positions = (0.05, 0.2, 0.4, 0.5, 0.8, 0.95, 0.7, 0.6)  # 8 trials: the band is 1/8
    states = {i: syn.S.PRUNED for i in range(4)}
    values = {0.8: 0.10, 0.95: 0.11, 0.7: 0.13, 0.6: 0.30}
    trials, settings = study(syn, lambda u: values.get(u, 1.0), positions=positions, states=states)
    lr = check_of(boundary_check(trials, settings), "lr")
    assert lr.edge == "upper" and lr.best_position == pytest.approx(0.8)
    (f,) = boundary_findings(boundary_check(trials, settings))
    assert "lr: the best trials sit at the upper edge" in f.title and f.suggestion
    # the same, the trial in the band now the second worst of the four: no edge
    values = {0.8: 0.10, 0.95: 0.25, 0.7: 0.13, 0.6: 0.30}
    trials, settings = study(syn, lambda u: values.get(u, 1.0), positions=positions, states=states)
    assert check_of(boundary_check(trials, settings), "lr").edge is None
