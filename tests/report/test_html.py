import fcntl
import hashlib
import html
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import adamtune
from adamtune.report.html import ReportError, default_report_path, write_report

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
]


def figures(page: str) -> int:
    return len(re.findall(r'<svg class="figure"', page))


@pytest.fixture(scope="module", autouse=True)
def browser(hostile_page, tmp_path_factory):
    """Chromium loading the synthetic study's report, started first so it runs beside the other tests.

    One run prints the rendered DOM (``--dump-dom``), writes a screenshot and logs the page's
    console to stderr. Chromium is installed if missing; when that fails this yields the reason.
    """
    problem = _ensure_chromium()
    if problem:
        yield problem
        return
    where = tmp_path_factory.mktemp("browser")
    page = where / "report.html"
    page.write_text(hostile_page, encoding="utf-8")
    shot = where / "report.png"
    proc = subprocess.Popen(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={where / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--window-size=1280,4000", f"--screenshot={shot}", "--dump-dom", page.resolve().as_uri()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    yield proc, page, shot
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_a_study_with_its_lr_window_too_low_says_so_and_proposes_a_wider_one(low_page):
    page = low_page
    assert "lr: the best trials sit at the upper edge of its window 1e-06..0.0001" in page
    assert "--set lr=1e-06:0.001" in page
    assert "widen to 0.001" in page  # on the lr axis plot, as the --set suggestion prints the bound
    assert re.search(r'<span class="change widen">widen</span>', page)


def test_a_study_whose_window_brackets_the_optimum_says_nothing_of_the_kind(normal_analysis, normal_page):
    page = normal_page
    assert "edge of its window" not in page and "widen to" not in page
    assert 'class="change widen"' not in page
    assert normal_analysis.of_kind("boundary") == ()


def test_everything_user_supplied_is_escaped(hostile_page):
    page = hostile_page
    for raw in ("<script>alert(1)</script>", "<img src=x onerror=alert(2)>", "<b>acc</b>"):
        assert raw not in page
    assert "<title>&lt;script&gt;alert(1)&lt;/script&gt; · adamtune report</title>" in page
    assert "ValueError: &lt;img src=x onerror=alert(2)&gt;" in page  # the failed trial's traceback
    assert "&lt;b&gt;acc&lt;/b&gt;" in page  # the metric's name, in its figure


def test_the_page_is_self_contained_with_every_figure(hostile_page):
    page = hostile_page
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', page)
    assert not re.search(r"url\(\s*['\"]?https?:", page)
    # 3 axis plots, 3 isolation plots, 2 heatmaps, 3 curve plots (value, train_loss, <b>acc</b>), 1 gradient norms
    assert figures(page) == 12
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # inline SVGs share one id space


def test_every_trial_state_is_in_the_table(hostile_page):
    page = hostile_page
    rows = page[page.index('id="trials"'):]
    for state in ("complete", "pruned", "diverged", "failed"):
        assert f'<span class="badge {state}">{state}</span>' in rows
    assert rows.count("<tr") == 1 + 12


def test_default_report_path_sits_next_to_the_storage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_report_path("sqlite:///runs/x.db", "digits-mlp") == Path("runs/x-report-digits-mlp.html")
    assert default_report_path("sqlite:///adamtune.db", "a/b c") == Path(f"adamtune-report-a_b_c-{_sha1('a/b c')}.html")
    assert default_report_path("sqlite:///x.db", "<script>alert(1)</script>") == Path(
        f"x-report-script_alert_1_script-{_sha1('<script>alert(1)</script>')}.html")
    assert default_report_path("postgresql://u@h/db", "s") == tmp_path / "adamtune-report-s.html"


def _sha1(text):
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def test_default_report_paths_of_two_studies_never_collide():
    names = ["日本", "中文", "a b", "a_b", "a/b", "study", "_study_", "a" * 300, "a" * 301, "é" * 300]
    paths = {default_report_path("sqlite:///runs/x.db", n) for n in names}
    assert len(paths) == len(names)
    assert default_report_path("sqlite:///runs/x.db", "a_b") == Path("runs/x-report-a_b.html")  # needs no cleaning
    assert default_report_path("sqlite:///x.db", "日本") == Path(f"x-report-study-{_sha1('日本')}.html")
    assert all(len(os.fsencode(p.name)) <= 200 for p in paths)  # file systems allow 255
    assert default_report_path("sqlite:///x.db", "a" * 300).name == f"x-report-{'a' * 177}-{_sha1('a' * 300)}.html"


def test_write_report_refuses_paths_it_cannot_write(hostile_analysis, tmp_path):
    # checked before anything is drawn (writing one is in the CLI tests)
    with pytest.raises(ReportError, match="directory .* does not exist"):
        write_report(hostile_analysis, tmp_path / "missing" / "r.html")
    with pytest.raises(ReportError, match="is a directory"):
        write_report(hostile_analysis, tmp_path)
    with pytest.raises(ReportError, match=r"^cannot write the report to '.*a{300}\.html': File name too long$"):
        write_report(hostile_analysis, tmp_path / ("a" * 300 + ".html"))


def test_the_report_never_overwrites_the_storage_or_another_database(hostile_analysis, tmp_path, monkeypatch):
    import sqlite3

    monkeypatch.chdir(tmp_path)
    db, other = tmp_path / "study.db", tmp_path / "other.html"
    for path in (db, other):
        with sqlite3.connect(path) as con:
            con.execute("create table studies (name text)")
    (tmp_path / "sub").mkdir()
    os.symlink(db, tmp_path / "link.html")
    os.link(db, tmp_path / "hard.html")
    before = {p: p.read_bytes() for p in (db, other)}
    storage = f"sqlite:///{db}"
    for out in (db, "study.db", "sub/../study.db", tmp_path / "link.html", tmp_path / "hard.html", f"{db}-wal"):
        with pytest.raises(ReportError, match=f"^the report must not overwrite the study's storage '{db}"):
            write_report(hostile_analysis, out, storage)
    with pytest.raises(ReportError, match=f"^'{other}' is a SQLite database, which the report must not overwrite"):
        write_report(hostile_analysis, other, storage)
    assert {p: p.read_bytes() for p in (db, other)} == before


def test_the_python_call_a_report_proposes_runs_on_from_the_study_it_was_made_from(tmp_path):
    """It named only study, budget and space: run as printed it made a new study in ./adamtune.db
    with adamw, seed 0 and minimize instead of this one's adam, seed 5 and maximize."""
    import adamtune
    from adamtune.analysis import analyze
    from adamtune.report.html import _python_call

    def score(config, trial):
        return -abs(math.log10(config.lr) + 2.5)

    url = f"sqlite:///{tmp_path / 'score.db'}"
    r = adamtune.tune(score, optimizer="adam", seed=5, direction="maximize", sampler="random", pruner="none",
                      budget=6, storage=url, study="score")
    a = analyze(r, storage=url)
    call = _python_call(a, "score-next", a.next_space.set_arguments)
    assert call.startswith(f"adamtune.tune(objective, storage={url!r}, study='score-next', budget=6,\n"
                           "              optimizer='adam', task='generic', seed=5, sampler='random', pruner='none', "
                           "direction='maximize',\n")
    namespace = {"adamtune": adamtune, "objective": score}
    exec(call.replace("score-next", "score-again"), namespace)  # it runs, as printed, on the study's settings
    again = adamtune.load("score-again", url).settings
    assert (again.optimizer, again.seed, again.direction, again.sampler) == ("adam", 5, "maximize", "random")
    assert _python_call(a, "score", (), continues=True) == (
        f"adamtune.tune(objective, storage={url!r}, study='score', budget=12)")


@pytest.mark.parametrize("states", [(), ("diverged", "diverged", "failed")], ids=["no trials", "no result"])
def test_a_study_without_a_result_still_gets_a_report(states):
    import math

    from adamtune.analysis import analyze
    from adamtune.report.html import render_html
    from adamtune.space import Dimension, SearchSpace
    from adamtune.results import StudySettings, TuneResult
    from adamtune.trials import Curve, TrialRecord, TrialState

    settings = StudySettings(
        workload=None, workload_name="w", optimizer="adamw", task="generic",
        space=SearchSpace("adamw", (Dimension("lr", 1e-5, 1e-2, "log"),)), budget=3, seed=0,
        sampler="quasi-random", pruner="none", metric="val_loss", direction="minimize",
    )
    trials = tuple(
        TrialRecord(i, TrialState(st), {"lr": 10 ** -(i + 2)}, None, None, 5,
                    Curve((5,), {"val_loss": (math.nan,)}), None, "Traceback\nValueError: boom" if st == "failed" else None)
        for i, st in enumerate(states)
    )
    page = render_html(analyze(TuneResult("s", settings, trials, None, None)))
    assert "No trial completed, so there is no configuration to recommend yet." in page
    assert "<h3>No trial completed</h3>" in page and "Nothing to fix" not in page
    if trials:  # made from Python with an objective; the lr window moves
        assert "adamtune.tune(objective, study=&#x27;s-next&#x27;" in page
    else:  # nothing to move: more trials of this study
        assert "adamtune.tune(objective, study=&#x27;s&#x27;, budget=6)" in page
    if trials:
        assert "lr window too high: 2 of 2 trials diverged, from lr ≈ 0.001" in page
        assert "no trial completed (1 failed, 2 diverged): the boundary check needs at least 2" in page
        assert "the diverging trials call for smaller learning rates first" in page
        # every trial that trained diverged: the next lr window lies below the smallest that did
        assert "Every trial diverged: search smaller learning rates" in page and "1e-07..0.0001" in page
        assert figures(page) == 1  # the lr axis plot with the diverged trials; no empty bucket plot
    else:
        assert figures(page) == 0
    import re

    ids = set(re.findall(r'id="([^"]+)"', page))
    links = re.findall(r'<a href="#([^"]+)"', page)
    assert links and set(links) <= ids, (links, ids)  # no link to a section that is not there


def _ensure_chromium() -> str | None:
    """Debian's chromium, installed with apt-get if missing (a lock keeps parallel workers in line).

    Returns:
        None when it is there, else why it could not be installed.
    """
    if os.path.exists(CHROMIUM):
        return None
    with open("/tmp/adamtune-chromium-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(CHROMIUM):
            return None
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            except (OSError, subprocess.TimeoutExpired) as e:
                return f"{' '.join(cmd)}: {e}"
            if r.returncode != 0:
                return f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}"
    return None if os.path.exists(CHROMIUM) else "chromium is still missing after apt-get install"


def test_the_report_renders_in_a_real_browser(browser):
    if isinstance(browser, str):  # chromium could not be installed: a failure on CI, a skip elsewhere
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot install chromium for the browser test: {browser}")
        pytest.skip(f"chromium is not installed and could not be: {browser}")
    proc, page, shot = browser
    dom, log = proc.communicate(timeout=180)
    assert proc.returncode == 0, log[-2000:]
    console = [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []  # no script errors, no failed loads
    assert figures(dom) == 12  # every figure made it into the rendered DOM
    assert "<script" not in dom  # the hostile study name stayed text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    # the header's space, in the terminal's words; a change to try with its study of its own
    assert "<div>tuning lr, weight_decay, beta1 — budget 12</div>" in dom
    assert "<div>search space: lr 1e-05..0.01 (log), weight_decay 1e-05..0.3 (log), beta1 0.8..0.999 (log of 1-x)</div>" in dom
    assert "<b>→ clip in a new study:</b>" in dom
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 4000)
        colours = im.convert("RGB").resize((320, 1000)).getcolors(maxcolors=100000)
        assert colours is not None and len(colours) > 200  # drawn, not blank
    keep = os.environ.get("ADAMTUNE_ARTIFACTS")
    if keep:  # e.g. ADAMTUNE_ARTIFACTS=out (git ignores /out/) to look at the page afterwards
        os.makedirs(keep, exist_ok=True)
        shutil.copy(shot, os.path.join(keep, "report.png"))
        shutil.copy(page, os.path.join(keep, "report.html"))


def test_a_trial_that_ran_again_a_trial_cut_short_says_which(tmp_path):
    from adamtune.analysis import analyze
    from adamtune.report.html import render_html

    calls = []

    def objective(config, trial):
        calls.append(trial.number)
        if len(calls) == 2:
            raise KeyboardInterrupt  # trial 1 cut short
        return config.lr

    storage = f"sqlite:///{tmp_path / 'cut.db'}"
    with pytest.raises(KeyboardInterrupt):
        adamtune.tune(objective, budget=4, storage=storage, study="cut")
    result = adamtune.tune(objective, budget=4, storage=storage, study="cut", notice=lambda m: None)
    assert result.reruns == {2: 1}
    page = render_html(analyze(result))
    rows = page[page.index('id="trials"'):]
    assert rows.count("reruns trial") == 1 and "reruns trial 1 (cut short)" in rows
    header = page[:page.index("<nav")]
    assert '<span class="note">(1 cut short, not counted in the budget)</span>' in header


def test_a_scheduled_best_trial_shows_its_schedule_and_a_snippet_that_defines_its_steps(tmp_path):
    import dataclasses

    from adamtune.analysis import analyze
    from adamtune.report.html import render_html
    from adamtune.report.terminal import best_snippet
    from adamtune.workloads import load_workload

    w = dataclasses.replace(load_workload("digits-mlp"), steps=30, eval_every=10)
    result = adamtune.tune(w, budget=2, storage=f"sqlite:///{tmp_path / 's.db'}", pruner="none",
                           space=["warmup=0.1", "schedule=cosine"], notice=lambda m: None)
    snippet = best_snippet(result)
    assert "import adamtune\ntotal_steps = 30  #" in snippet
    card = render_html(analyze(result)).split('id="best"')[1].split("</section>")[0]
    assert "<th>schedule</th><td>cosine</td>" in card and "<th>warmup</th><td>0.1</td>" in card
    assert "total_steps = 30" in card


def test_a_best_value_reached_before_the_end_says_at_which_step():
    from adamtune.report.terminal import best_step_note

    analysis = _study_ending_above_its_best()
    note = best_step_note(analysis.result)
    assert note == "its best evaluation, at step 20 of 30; it ended at 0.9: keep the checkpoint of step 20, or train 20 steps"
    from adamtune.report.html import render_html
    card = render_html(analysis).split('id="best"')[1].split("</section>")[0]
    assert "Its best evaluation, at step 20 of 30" in card


@pytest.mark.parametrize("last, config, want", [
    (0.5049, {}, "its best evaluation, at step 20 of 30; it ended within 1% of it, at 0.5049"),
    (0.9, {"schedule": "cosine", "warmup": 0.0},
     "its best evaluation, at step 20 of 30; it ended at 0.9: keep the checkpoint of step 20 of a 30-step run "
     "(training 20 steps instead would squeeze its lr schedule)"),
    (0.9, {"schedule": "constant", "warmup": 0.1}, "squeeze its lr schedule"),
])
def test_the_step_note_says_nothing_to_act_on_for_noise_and_keeps_a_schedules_length(last, config, want):
    """Training fewer steps with warmup or cosine is another run (both are fractions of the steps)."""
    import dataclasses

    from adamtune.report.terminal import best_step_note
    from adamtune.trials import Curve

    result = _study_ending_above_its_best().result
    best = dataclasses.replace(result.best, curve=Curve((10, 20, 30), {"value": (1.0, 0.5, last)}),
                               config={**(result.best.config or {}), **config})
    note = best_step_note(dataclasses.replace(result, best=best))
    assert note == want if want.startswith("its") else want in note


def test_a_best_evaluation_that_is_a_dip_of_late_noise_is_no_length_to_train():
    """Up and down late in training by more than the end lies above the best: another seed dips
    elsewhere, so 'train 60 steps' would be advice drawn from noise."""
    import dataclasses

    from adamtune.analysis import diagnose_curve
    from adamtune.report.terminal import best_step_note
    from adamtune.trials import Curve

    result = _study_ending_above_its_best().result
    curve = Curve((10, 20, 30, 40, 50, 60, 70, 80), {"value": (1.0, 0.5, 0.3, 0.2, 0.26, 0.15, 0.24, 0.17)})
    d = diagnose_curve(curve, "value")
    assert d.late_variance and d.within_noise
    best = dataclasses.replace(result.best, curve=curve, value=0.15, steps=80)
    note = best_step_note(dataclasses.replace(result, best=best))
    assert note == ("its best evaluation, at step 60 of 80; it ended at 0.17: the curve swings up and down late in "
                    "training, so step 60 is a dip of that noise, not a better length to train (another seed dips "
                    "elsewhere); a decaying lr schedule steadies it")


def _study_ending_above_its_best():
    import tempfile

    from adamtune.analysis import analyze

    def objective(config, trial):
        for step, v in ((10, 1.0), (20, 0.5), (30, 0.9)):
            trial.report(step, v)
        return 0.5

    with tempfile.TemporaryDirectory() as d:
        result = adamtune.tune(objective, budget=1, storage=f"sqlite:///{d}/s.db", study="early")
        return analyze(result)


def test_the_header_says_what_the_terminal_says_about_the_space(records):
    """The terminal's tuned, search space and fixed lines (audit 2, #7): a continued llm study read as if
    the budget's preset had chosen its space, and beta2=0.95 looked like PyTorch's default."""
    from adamtune.report.html import render_html
    from adamtune.results import fixed_description, tuned_description

    analysis = records(3, 5, task="llm", fixed=(("beta2", 0.95),), space_budget=6)
    s = analysis.result.settings
    page = render_html(analysis)
    header = page[page.index("<header>"):page.index("</header>")]
    tuned, fixed = tuned_description(s), fixed_description(s)
    assert tuned == "tuning lr, weight_decay — budget 8 (the space chosen for budget 6 when the study began)"
    assert fixed == "fixed: beta2=0.95 (the llm preset's; PyTorch's default is 0.999)"
    for line in (tuned, "search space: lr 1e-05..0.01 (log), weight_decay 1e-05..0.3 (log)", fixed):
        assert f"<div>{html.escape(line)}</div>" in header
    # set by hand
    analysis = records(3, 5, space_budget=16)
    assert "<div>tuning lr, weight_decay — budget 8 (set by hand)</div>" in render_html(analysis)


def test_a_study_that_learned_nothing_shows_its_best_trial_as_no_recommendation(records):
    from adamtune.report.html import render_html
    from adamtune.report.terminal import best_snippet

    analysis = records(3, 5, flat=True)
    assert analysis.progress.nothing_learned and analysis.result.best is not None
    page = render_html(analysis)
    best = page[page.index('<section id="best"'):page.index('<section id="findings"')]
    assert "Recommended configuration" not in page and "Paste into your training script" not in page
    assert "<h2>Best trial: not a recommendation</h2>" in best and '<a href="#best">Best trial</a>' in page
    assert ("Best by noise, not a recommendation (nothing learned: no trial moved val_loss by 1% from its first "
            "evaluation).") in best
    assert html.escape(best_snippet(analysis.result)) not in page  # nothing to paste
    assert f"trial {analysis.result.best.number} · adamw" in best  # the trial is still in sight
    # a study that learned: its recommendation as before
    assert "<h2>Recommended configuration</h2>" in render_html(records(3, 5))


def test_no_nothing_to_fix_above_a_change_to_try(normal_analysis, records):
    """Audit 2, #4b: "✓ Nothing to fix" above a clipping threshold and a weight_decay window to try."""
    import dataclasses

    from adamtune.report.html import render_html

    (f,) = normal_analysis.of_kind("decay_timescale")
    assert f.new_study is not None and not f.new_study.in_next
    quiet = dataclasses.replace(normal_analysis, findings=(f,))  # no warning, one change to try
    page = render_html(quiet)
    assert "Nothing to fix" not in page and "<h3>No warnings</h3>" in page
    assert "The notes below each give a change to try, in a new study of its own." in page
    assert "<b>→ test in a new study:</b>" in page
    # nothing to try: nothing to fix
    assert "<h3>Nothing to fix</h3>" in render_html(dataclasses.replace(normal_analysis, findings=()))
