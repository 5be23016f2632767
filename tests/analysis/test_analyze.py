"""What the terminal's Next line and the report's next-search lead say, from ``analyze`` (the audit's
studies rebuilt as records: a fixed lr that learned nothing, every trial failed, lrs that failed)."""

import dataclasses
import html
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
    lrs (the same seed, the same points); at lr 3 its weight_decay window reached lr·weight_decay = 7.2."""
    a = exploding(syn)
    assert a.failures.lr_ceiling == 0.098 and a.next_space.below_failed == 0.098
    cut = a.next_space.cut_lr
    assert cut is not None and cut.high < 0.098
    (f,) = a.of_kind("decay_timescale")
    test = f.new_study
    lr = parse_override(test.set_arguments[0])[1]
    assert test.set_arguments[0] == f"lr={cut.low:g}:{cut.high:g}" == "lr=0.0001:0.09" and lr == cut
    assert test.set_arguments[-1] == f.suggestion[0].removeprefix("--set ") == "weight_decay=0.135:2.4"
    assert (f"      → test in a new study: adamtune tune --workload explode.py:W --optimizer adamw --task generic "
            f"--budget 12 --pruner none --storage {URL} --study ex-weight_decay --set lr=0.0001:0.09 --set "
            "beta1=0.8:0.999 --set weight_decay=0.135:2.4") in lines(a)
    assert ("with --set weight_decay=0.135:2.4 and this study's other windows and fixed values, but lr's window cut below "
            "the lrs that failed, 0.0001..0.09, as in the next search") in f.detail
    # nowhere in the test's box does AdamW's multiplier 1 - lr·weight_decay reach zero
    top = parse_override(test.set_arguments[-1])[1].high
    assert lr.high * top < 1
    # a clipping threshold is tried at the study's own lrs: whether it lets them train is the test
    from adamtune.analysis import change_study

    clip = change_study(a.result.settings, "max_grad_norm=1.3", a.next_space, "ex")
    assert clip.set_arguments[0] == "lr=0.0001:3"


def test_a_weight_decay_test_over_a_wide_lr_window_stops_where_lr_times_weight_decay_reaches_a_half(syn):
    """Without the failures the test study searches lr up to 3: the window computed at the best trial's
    lr (0.135..2.4, τ from the run to an epoch at lr 0.0185) reached lr·weight_decay = 7.2 there."""
    window = Dimension("lr", 1e-4, 0.3, "log")
    a = exploding(syn, window)
    a = analyze(dataclasses.replace(a.result, trials=a.result.trials[:7]), storage=URL)  # no failures
    assert a.next_space.cut_lr is None
    (f,) = a.of_kind("decay_timescale")
    assert f.suggestion == ("--set weight_decay=0.135:1.7",)
    assert f.new_study.set_arguments[0] == "lr=0.0001:0.3"
    assert ("Its top stops at 1.667, not 2.407: that study searches lr up to 0.3, where a larger weight_decay puts "
            "lr·weight_decay past 0.5 (AdamW's per-step multiplier 1 - lr·weight_decay reaches zero at 1, and turns "
            "negative past it).") in f.detail
    assert 0.3 * parse_override(f.suggestion[0].removeprefix("--set "))[1].high <= 0.5 * 1.03
    # lr up to 3: what is left of the range under that cap is too little to test; narrow lr first
    a = exploding(syn)
    a = analyze(dataclasses.replace(a.result, trials=a.result.trials[:7]), storage=URL)
    (f,) = a.of_kind("decay_timescale")
    assert f.suggestion == () and f.new_study is None
    assert ("But a study testing it searches lr up to 3, where a weight_decay above 0.1667 puts lr·weight_decay past "
            "0.5 (AdamW's per-step multiplier 1 - lr·weight_decay reaches zero at 1): that leaves too little of the range "
            "to test. Narrow the lr window around trial 0's lr first, then test it.") in f.detail
    # the range from τ = the run (0.135) down: 0.135..0.167 would test decay barely faster than the run
    assert not any(line.startswith("      → test") for line in lines(a))
