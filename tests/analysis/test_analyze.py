"""What the terminal's Next line and the report's next-search lead say, from ``analyze`` (the audit's
studies rebuilt as records: a fixed lr that learned nothing, every trial failed)."""

import dataclasses
import html
import re

from adamtune.analysis import analyze
from adamtune.report.findings import findings_lines
from adamtune.report.html import render_html
from adamtune.results import TuneResult
from adamtune.space import Dimension, preset, with_overrides

URL = "sqlite:///runs/x.db"
STEPS = (100, 200, 300, 400)


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
