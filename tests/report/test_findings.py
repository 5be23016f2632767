import html

import pytest
from rich.console import Console

from adamtune.report.findings import findings_lines, print_findings


def plain(analysis):
    return "\n".join(line.plain for line in findings_lines(analysis))


def test_the_terminal_says_the_lr_window_is_too_low_and_how_to_widen_it(low_analysis):
    text = plain(low_analysis)
    assert "! lr: the best trials sit at the upper edge of its window 1e-06..0.0001" in text
    assert "→ widen: --set lr=1e-06:0.001" in text
    assert "Next search: " in text and "lr=1e-06:0.001" in text.split("Next search: ")[1]
    # slow progress at the top of a window set too low is the lr's doing before the run's length
    assert ("! still improving at the end: a larger lr first (the best trials sit at lr's upper edge), then train "
            "longer") in text


def test_the_terminal_says_nothing_of_the_kind_on_a_normal_study(normal_analysis):
    text = plain(normal_analysis)
    assert "edge" not in text and "widen" not in text
    assert text.startswith("Findings")


def test_a_study_whose_windows_hold_is_told_to_continue_not_to_repeat_itself(normal_analysis):
    import dataclasses

    ns = normal_analysis.next_space  # every window kept, as next_space continues a study (tests/analysis)
    ns = dataclasses.replace(ns, dimensions=tuple(dataclasses.replace(d, change="keep") for d in ns.dimensions),
                             continues=True, command="adamtune tune --study s --budget 32")
    assert ns.completed >= 5  # enough to narrow: where the best trials sit kept the windows
    text = plain(dataclasses.replace(normal_analysis, next_space=ns))
    assert "Next search" not in text
    assert (f"Next: {ns.command}  (the windows hold: where the best trials sit gives no reason to move them; more "
            "trials of this study try new points of the same search; add --sampler tpe to exploit what it found)"
            ) in text.splitlines()


@pytest.mark.parametrize("complete, pruned, pruner, note", [
    (3, 13, "asha", "too few completed trials to narrow the windows, 3 of the 5 it takes: more trials of this study "
                    "give them, or --pruner none, which completes every trial"),
    (4, 0, "none", "too few completed trials to narrow the windows, 4 of the 5 it takes: more trials of this study "
                   "give them"),
    (1, 7, "asha", "too few completed trials to move the windows, 1 of the 2 it takes to widen one and 5 to narrow: "
                   "more trials of this study give them, or --pruner none, which completes every trial"),
])
def test_windows_kept_for_too_few_completed_trials_say_so_not_that_they_hold(records, complete, pruned, pruner, note):
    """The audit's loop: with ASHA most trials are pruned, and budgets 16-64 completed 2-4 trials, fewer than
    narrowing takes; the terminal said "the windows hold", the report "the study gives no reason to move them"."""
    from adamtune.report.html import render_html

    analysis = records(complete, pruned, pruner)
    ns = analysis.next_space
    assert ns.continues and ns.too_few_to_narrow and analysis.keep_text == note
    lines = plain(analysis).splitlines()
    assert lines[-1] == f"Next: {ns.command}  ({note})"
    page = render_html(analysis)
    assert html.escape(f"{note[0].upper()}{note[1:]}. A new study of the same space and seed") in page
    assert "windows hold" not in page + lines[-1] and "no reason to move" not in page


def test_the_reports_next_box_does_not_say_nothing_to_do_under_warnings(records):
    import dataclasses

    from adamtune.report.html import render_html

    analysis = records(3, 13)
    assert analysis.warnings  # still improving at the end
    page = render_html(analysis)
    lead = page[page.index('<section id="next"'):]
    lead = lead[:lead.index("</p>")]
    assert "What the findings advise besides is not in this command" in lead
    # a study with no warnings and no change to try: nothing added
    quiet = dataclasses.replace(analysis, findings=())
    assert "What the findings advise besides" not in render_html(quiet)


def test_markup_in_user_text_is_printed_as_it_is(hostile_analysis):
    console = Console(record=True, width=200)
    print_findings(console, hostile_analysis)
    out = console.export_text()
    assert "unstable: 2 of 11 trials diverged" in out
    assert "clipping: max_grad_norm" in out


def test_too_few_completed_trials_are_counted_in_plain_words(normal_analysis):
    import dataclasses

    for n, words in ((0, "no trial completed"), (1, "only 1 trial completed")):
        text = plain(dataclasses.replace(normal_analysis, completed=n))
        assert words in text and "trial(s)" not in text


def test_a_study_whose_trials_failed_says_so_not_budget(normal_analysis):
    import dataclasses

    from adamtune.trials import TrialState

    r = normal_analysis.result
    failed = tuple(dataclasses.replace(t, state=TrialState.FAILED, value=None, error="Traceback\nRuntimeError: x")
                   for t in r.trials[:3])
    result = dataclasses.replace(r, trials=failed, best=None, settings=dataclasses.replace(r.settings, budget=6))
    text = dataclasses.replace(normal_analysis, result=result, completed=0).too_few_text
    show = f"adamtune show --storage {normal_analysis.storage} --study {r.study_name}"  # the storage it was read from
    assert normal_analysis.storage.startswith("sqlite:///")
    assert text == ("no trial completed (3 failed): the boundary check needs at least 2. The study stopped after "
                    f"3 trials of its budget of 6; the errors: {show}")


def test_nothing_tuned_and_nothing_completed_is_no_all_clear(normal_analysis):
    """Every value fixed (no window to check) and every trial failed: no ✓, the failures instead."""
    import dataclasses

    from adamtune.space import SearchSpace
    from adamtune.trials import TrialState

    r = normal_analysis.result
    failed = tuple(dataclasses.replace(t, state=TrialState.FAILED, value=None, error="Traceback\nRuntimeError: x")
                   for t in r.trials[:3])
    fixed = SearchSpace(r.settings.optimizer, (), (("lr", 1.0),))
    settings = dataclasses.replace(r.settings, space=fixed, budget=3)
    analysis = dataclasses.replace(normal_analysis, completed=0,
                                   result=dataclasses.replace(r, trials=failed, best=None, settings=settings))
    text = plain(analysis)
    assert "✓" not in text and "no warnings" not in text
    assert f"no trial completed (3 failed); the errors: adamtune show --storage {analysis.storage} --study {r.study_name}" in text
    from adamtune.report.html import render_html

    page = render_html(analysis)
    assert "Nothing to fix" not in page and "<h3>No trial completed</h3>" in page


def test_the_report_at_the_end_of_a_study_never_overwrites_a_database(normal_analysis, tmp_path):
    """A SQLite file where the report would go (another study's storage): a warning, the file kept."""
    import sqlite3

    from adamtune.cli import finish_study
    from adamtune.report.html import default_report_path

    storage = f"sqlite:///{tmp_path / 'runs.db'}"
    result = normal_analysis.result
    target = default_report_path(storage, result.study_name)
    with sqlite3.connect(target) as con:
        con.execute("create table studies (name text)")
    before = target.read_bytes()
    out, errors = Console(record=True, width=300), Console(record=True, width=300)
    assert finish_study(out, result, storage, errors=errors) is None
    assert errors.export_text().strip() == (
        f"adamtune: warning: '{target}' is a SQLite database, which the report must not overwrite; name another "
        "file, e.g. report.html")
    assert "Findings" in out.export_text() and target.read_bytes() == before


def test_the_terminal_gives_the_window_that_tests_a_strong_weight_decay(normal_analysis, low_analysis):
    # 100 steps at lr ~1e-2: tau = the run needs weight_decay ~1 and more, above the searched 0.3
    (f,) = normal_analysis.of_kind("decay_timescale")
    assert f.suggestion and f.suggestion[0].startswith("--set weight_decay=")
    # in a new study of this study's windows, lr narrowed around the best trial's lr, where the window puts
    # τ between an epoch and the run (a workload passed from Python: its --set arguments)
    from adamtune.analysis import decay_timescale
    from adamtune.analysis._format import set_argument
    from adamtune.space import Dimension

    d = decay_timescale(normal_analysis.result)
    lr = d.lr_window_to_try(Dimension("lr", 1e-4, 0.1, "log"))
    assert 1e-4 < lr.low < d.lr < lr.high < 0.1
    assert f.new_study.set_arguments == (set_argument(lr), f.suggestion[0].removeprefix("--set "))
    assert f"      → test in a new study: --set {set_argument(lr)} {f.suggestion[0]}" in plain(normal_analysis).splitlines()
    # lr at the top of a window set too low: the lr comes first, the decay it needs falls as it rises
    (f,) = low_analysis.of_kind("decay_timescale")
    assert f.suggestion == () and "settle lr first" in f.detail and "→ test" not in plain(low_analysis)


def test_clipping_is_offered_ready_to_set_only_where_trials_diverged(normal_analysis, hostile_analysis):
    from adamtune.report.html import render_html

    # nothing diverged: a threshold for when clipping is needed, nothing to paste, nothing in the next search
    stable = plain(normal_analysis)
    assert "· if you need clipping (loss spikes, divergence), use max_grad_norm ≈ " in stable
    assert "→ clip" not in stable and "max_grad_norm" not in " ".join(normal_analysis.next_space.set_arguments)
    assert "--set max_grad_norm" not in render_html(normal_analysis)
    # a trial diverged: the same threshold, ready to set, in the terminal and in the report alike
    (f,) = hostile_analysis.of_kind("clip")
    assert f.title.startswith("warmup first (--set warmup=0.05), then clipping: max_grad_norm ≈ ")  # warmup first
    assert f.suggestion[0].startswith("--set max_grad_norm=")
    args = f.new_study.set_arguments
    assert args == ("lr=1e-05:0.01", "weight_decay=1e-05:0.3", "beta1=0.8:0.999", f.suggestion[0].removeprefix("--set "))
    assert f"      → clip in a new study: {' '.join('--set ' + a for a in args)}" in plain(hostile_analysis).splitlines()
    # the report in the same words, with the Python call of a study of its own (objective mode)
    page = render_html(hostile_analysis)
    assert "<b>→ clip in a new study:</b>" in page
    s = hostile_analysis.result.settings
    assert html.escape(f"adamtune.tune(objective, study={f.new_study.study!r}, budget=12,\n"
                       f"              optimizer='adamw', task='generic', seed={s.seed}, sampler={s.sampler!r}, "
                       f"pruner={s.pruner!r}, direction='minimize',\n"
                       f"              space={list(args)!r})") in page


def _exploding(config, trial):
    """A loss that raises when it explodes (the audit's workload): every lr above 0.1 fails."""
    import math

    value = math.nan
    for step in range(10, 101, 10):
        value = 0.2 + config.weight_decay + math.exp(-step / 30)  # lr does not matter below 0.1
        if config.lr > 0.1 and step >= 30:
            raise RuntimeError(f"loss exploded: {1000 * config.lr * step:.3g}")
        trial.report(step, value)
    return value


def test_failed_trials_at_the_largest_lrs_are_a_finding_a_plot_mark_and_a_lower_next_window(tmp_path):
    """A real SQLite study: the same words in the terminal and the report, the failures drawn, the next lr window
    below them (the same seed would draw the same failing lrs again)."""
    import html
    import re

    import adamtune
    from adamtune.analysis import analyze
    from adamtune.report.html import render_html

    storage = f"sqlite:///{tmp_path / 'b.db'}"
    result = adamtune.tune(_exploding, budget=12, space=["lr=1e-3:3"], pruner="none", storage=storage, study="fail",
                           max_consecutive_failures=None)
    failed = sorted(t.params["lr"] for t in result.trials if t.state == adamtune.TrialState.FAILED)
    assert len(failed) == 5 and min(failed) > 0.1
    analysis = analyze(result, storage=storage)
    (f,) = analysis.of_kind("failed")
    assert f.severity == "warning"
    assert re.fullmatch(r"5 of 12 trials failed, all like RuntimeError: loss exploded: [\d.e+]+ "
                        r"\(test_findings.py, line \d+\); "
                        f"all 5 at lr ≥ {min(failed):.4g}, every lr below trained", f.title)
    assert f"  ! {f.title}" in plain(analysis).splitlines()
    page = render_html(analysis)
    assert f"<h3>{html.escape(f.title)}</h3>" in page  # the same words, with the evidence and the action
    assert html.escape(f.detail) in page and html.escape(f.action) in page
    assert f"Every traceback: adamtune show --json --storage {storage} --study fail" in f.detail
    # on the lr plot: a marker and a legend entry of their own, and the line named for them
    metric = analysis.result.settings.metric
    (lr_plot,) = [svg for svg in re.findall(r'<svg class="figure".*?</svg>', page, flags=re.S) if f"{metric} vs lr" in svg]
    assert re.findall(r">failed</text>", lr_plot) and ">diverged</text>" not in lr_plot
    # the next search stops below the smallest lr that failed and says why
    lr = analysis.next_space.dimensions[0]
    assert lr.window.high < min(failed) and lr.window.high >= max(
        t.params["lr"] for t in result.trials if t.state == adamtune.TrialState.COMPLETE)
    assert f"from lr {min(failed):.3g} up failed: below it" in lr.reason
    assert lr.set_argument in analysis.next_space.set_arguments and html.escape(lr.reason) in page
    assert f"The lr window stops below {min(failed):.3g}: every trial from there up failed." in page


def test_a_change_the_next_search_makes_already_says_so_instead_of_a_study_of_its_own(hostile_analysis):
    """A fixed max_grad_norm that clipped too often: the next search replaces it (tests/analysis/test_next.py)."""
    import dataclasses

    from adamtune.analysis import ChangeStudy
    from adamtune.report.html import render_html

    (f,) = hostile_analysis.of_kind("clip")
    replaced = dataclasses.replace(f, new_study=ChangeStudy(f.suggestion[0].removeprefix("--set "), in_next=True))
    analysis = dataclasses.replace(hostile_analysis, findings=(replaced,))
    assert f"      → clip: {f.suggestion[0]} (the Next search sets it)" in plain(analysis).splitlines()
    assert (f'<p class="suggest"><b>→ clip:</b> <code>{f.suggestion[0]}</code> (the Next search sets it)</p>'
            in render_html(analysis))


def test_a_next_search_that_moves_windows_says_the_findings_other_advice_is_not_in_it(normal_analysis):
    """The README promised it; the lead said so only when the study was continued, not when the
    windows moved (the demo's "Coarse to fine" lead under a late-variance warning)."""
    import dataclasses

    from adamtune.report.html import render_html

    assert normal_analysis.next_space.changed and normal_analysis.warnings
    page = render_html(normal_analysis)
    lead = page[page.index('<section id="next"'):]
    lead = lead[:lead.index("</p>")]
    assert "Coarse to fine" in lead and "What the findings advise besides is not in this command" in lead
    assert "What the findings advise besides" not in render_html(dataclasses.replace(normal_analysis, findings=()))
