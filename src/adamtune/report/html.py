"""The study report: one self-contained HTML file (inline CSS and SVG, no script, no network).

Renders a ``StudyAnalysis``; computes nothing new. Everything that comes from the user -- study
and workload names, metric names, parameter values, tracebacks -- goes through ``html.escape``.
"""

from __future__ import annotations

import hashlib
import html
import math
import os
import re
from pathlib import Path

from adamtune.analysis import Finding, StudyAnalysis, analyze, window_text
from adamtune.config import Config
from adamtune.errors import AdamtuneError
from adamtune.report import plots
from adamtune.report.findings import IN_NEXT_NOTE, SUGGESTION_LABELS, suggestion_label
from adamtune.report.terminal import best_snippet, best_step_note, confirm_hint, confirmed_best, fmt, noise_note
from adamtune.confirmed import Confirmation
from adamtune.storage import SQLITE_MAGIC, redact, sqlite_path
from adamtune.results import TuneResult, fixed_description, tuned_description
from adamtune.trials import TrialRecord, TrialState, last_line, trials_text


class ReportError(AdamtuneError):
    """The report cannot be written where it was asked to go."""


def e(x: object) -> str:
    """Escape anything for HTML text and attribute values."""
    return html.escape(str(x), quote=True)


def default_report_path(storage: str | None, study: str) -> Path:
    """Where ``adamtune tune`` and ``adamtune report`` put the report when not told.

    Next to a SQLite file (``sqlite:///runs/x.db`` -> ``runs/x-report-STUDY.html``), else in the
    working directory (``adamtune-report-STUDY.html``); the default storage ``adamtune.db`` gives
    ``adamtune-report-STUDY.html`` either way. The study name is made safe for a file name
    (``_slug``).
    """
    path = sqlite_path(storage) if storage else None
    prefix = f"{Path(path).stem}-report-" if path is not None else "adamtune-report-"
    name = f"{prefix}{_slug(study, _NAME_BYTES - len(os.fsencode(prefix)) - len('.html'))}.html"
    return Path(path).with_name(name) if path is not None else Path.cwd() / name


# The most bytes a default report's file name takes; file systems allow 255.
_NAME_BYTES = 200


def _slug(study: str, room: int) -> str:
    """``study`` in letters, digits and ``._-``, in at most ``room`` characters. A name that
    had to change (cleaned or cut short) ends in the first 8 hex digits of its SHA-1, so that
    two studies never share a report file: 日本 and 中文, ``a b`` and ``a_b``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", study).strip("._") or "study"
    if slug == study and len(slug) <= room:
        return slug
    tag = hashlib.sha1(study.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    kept = slug[:max(0, room - len(tag) - 1)].rstrip("._-")
    return f"{kept}-{tag}" if kept else tag


def check_report_path(path: str | os.PathLike, storage: str | None = None) -> Path:
    """``path`` as a Path, if a report can be written there (checked before any work is done).

    Args:
        storage: the study's storage URL: its SQLite file (and the journal files beside it) is
            never overwritten.

    Raises:
        ReportError: ``path`` is a directory, its directory does not exist, it is the storage's
            file or another SQLite database, or the file system refuses the name.
    """
    if not str(path).strip():
        raise ReportError(f"the report must go to a file, e.g. report.html, got {str(path)!r}")
    out = Path(path)
    try:
        if out.is_dir():
            raise ReportError(f"the report must go to a file, but {str(out)!r} is a directory")
        parent = out.parent if str(out.parent) else Path(".")
        if not parent.is_dir():
            raise ReportError(f"cannot write the report to {str(out)!r}: directory {str(parent)!r} does not exist")
        _refuse_a_database(out, storage)
    except OSError as err:  # a name too long, a directory that may not be searched
        raise ReportError(f"cannot write the report to {str(out)!r}: {err.strerror or err}") from None
    return out


def _refuse_a_database(out: Path, storage: str | None) -> None:
    """Refuse to write the report over the study's storage (whatever the path that names it:
    relative, through a symlink, a hard link) or over any other SQLite database."""
    db = sqlite_path(storage) if storage else None
    for own in (db, f"{db}-wal", f"{db}-shm", f"{db}-journal") if db is not None else ():
        if _same_file(out, own):
            raise ReportError(f"the report must not overwrite the study's storage {own!r}; name another file, "
                              "e.g. report.html")
    if out.is_file():
        with open(out, "rb") as f:
            if f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC:
                raise ReportError(f"{str(out)!r} is a SQLite database, which the report must not overwrite; "
                                  "name another file, e.g. report.html")


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def write_report(study: TuneResult | StudyAnalysis, path: str | os.PathLike, storage: str | None = None) -> Path:
    """Render the report of ``study`` and write it to ``path``.

    Args:
        study: a TuneResult (analysed here) or its StudyAnalysis.
        path: the HTML file to write (its directory must exist).
        storage: the study's storage URL, for the proposed next command.

    Returns:
        The path written.

    Raises:
        ReportError: ``path`` is a directory, its directory does not exist, it is the storage's
            file or another SQLite database, or it cannot be written.
    """
    out = check_report_path(path, storage)
    analysis = study if isinstance(study, StudyAnalysis) else analyze(study, storage=storage)
    page = render_html(analysis)
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as err:
        raise ReportError(f"cannot write the report to {str(out)!r}: {err.strerror or err}") from None
    return out


_STATE_CLASS = {
    TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.DIVERGED: "diverged",
    TrialState.FAILED: "failed", TrialState.RUNNING: "running", TrialState.WAITING: "waiting",
}


def _badge(state: TrialState) -> str:
    return f'<span class="badge {_STATE_CLASS[state]}">{e(state.value)}</span>'


def _header(a: StudyAnalysis, sections: str) -> str:
    """The title, the study's facts and counts, and links to those of ``sections`` rendered."""
    plots = [x for x in ("axes", "isolation", "heatmaps", "gradnorms") if f'id="{x}"' in sections]
    best = "Best trial" if a.progress.nothing_learned else "Best configuration"
    links = [(x, label) for x, label in (("best", best), ("confirmed", "Other seeds"), ("findings", "Findings"),
                                         ("next", "Next search"), (plots[0] if plots else "", "Plots"),
                                         ("curves", "Training curves"), ("trials", "All trials"))
             if x and f'id="{x}"' in sections]
    r, s = a.result, a.result.settings
    cut = r.cut_short
    counts = " ".join(
        f'{_badge(st)} <span class="count">{r.count(st)}</span>'
        + (f' <span class="note">({cut} cut short, not counted in the budget)</span>'
           if st == TrialState.FAILED and cut else "")
        for st in TrialState if r.count(st)
    )
    direction = "lower is better" if s.direction == "minimize" else "higher is better"
    facts = [
        ("workload", s.workload or s.workload_name), ("optimizer", s.optimizer), ("task", s.task),
        ("objective", f"{s.metric} ({direction})"), ("sampler", s.sampler), ("pruner", s.pruner),
        ("seed", s.seed), ("budget", s.budget),
    ]
    fact_html = "".join(f"<div><span>{e(k)}</span><b>{e(v)}</b></div>" for k, v in facts)
    # What the terminal says about the space when the study starts (and `adamtune show`), in its words.
    space = [tuned_description(s)]
    if s.space.dimensions:
        space.append(f"search space: {s.space.describe()}")
    fixed = fixed_description(s)
    if fixed is not None:
        space.append(fixed)
    space_html = "".join(f"<div>{e(line)}</div>" for line in space)
    return f"""
<header>
  <div class="wrap">
    <div class="kicker">adamtune study report</div>
    <h1>{e(r.study_name)}</h1>
    <div class="facts">{fact_html}</div>
    <div class="space">{space_html}</div>
    <div class="counts">{trials_text(len(r.trials))}: {counts}</div>
  </div>
  <nav class="wrap">{"".join(f'<a href="#{anchor}">{e(label)}</a>' for anchor, label in links)}</nav>
</header>"""


def _best(a: StudyAnalysis, found: Confirmation | None) -> str:
    r, s = a.result, a.result.settings
    if r.best is None or r.best_config is None:
        return """
<section id="best" class="card empty"><h2>Recommended configuration</h2>
<p>No trial completed, so there is no configuration to recommend yet. The findings and plots below
show what happened to the trials that ran.</p></section>"""
    noise = noise_note(r, a.progress)
    r, said = confirmed_best(r, found, noise)  # the seeds chose another trial: the card is that one's, and says why
    cfg: Config = r.best_config
    tuned = set(s.space.tuned)
    rows = "".join(
        f'<tr class="{"tuned" if name in tuned else "fixed"}"><th>{e(name)}</th>'
        f'<td>{e(fmt(v) if isinstance(v, float) else ("off" if v is None else v))}</td></tr>'
        for name, v in cfg.params().items() if name != "schedule" or v != "constant"
    )
    snippet = best_snippet(r)
    note = best_step_note(r) if said is None else None  # the seeds speak for it, not its own curve's step
    at_step = f'\n    <p class="note">{e(note[0].upper() + note[1:])}.</p>' if note else ""
    hint = confirm_hint(r, a.storage) if found is None else None
    if hint:  # one seed's dip: the command that trains the best trials again with other seeds
        at_step += f'\n    <p class="note">{e(hint)}</p>'
    if said:
        at_step = f'\n    <p class="verdict">{e(said[0].upper() + said[1:])} (Confirmed with other seeds, below).</p>'
    unsafe = found is not None and noise is None and found.caution() is not None
    runners = ""
    if len(a.top) > 1:
        head = "".join(f"<th>{e(n)}</th>" for n in ("trial", s.metric, *s.space.tuned))
        body = "".join(
            f"<tr><td>{e(t.number)}{' ★' if t.number == r.best.number else ''}</td><td><b>{e(fmt(t.value))}</b></td>"
            + "".join(f"<td>{e(fmt(t.params.get(n)))}</td>" for n in s.space.tuned) + "</tr>"
            for t in a.top
        )
        runners = (f'<h3 class="small">The best {len(a.top)} trials</h3>'
                   f'<table class="runners"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    if noise is not None:  # nothing learned: the best trial stays in sight, but as no result
        return f"""
<section id="best" class="hero">
  <div class="card best noise">
    <h2>Best trial: not a recommendation</h2>
    <div class="bignum"><span class="value">{e(fmt(r.best.value))}</span>
      <span class="unit">{e(s.metric)}</span></div>
    <div class="sub">trial {e(r.best.number)} · {e(cfg.optimizer)} · {e(r.best.steps)} steps</div>
    <p class="verdict">{e(noise[0].upper() + noise[1:])}.</p>
    <table class="params">{rows}</table>
    <p class="note"><span class="legend-dot">●</span> tuned; the others are fixed or PyTorch's defaults.</p>
  </div>
  <div class="card code">
    <h2>Nothing to paste</h2>
    <p>No trial learned anything, so this trial is best by noise, not by its hyperparameters: its values
    are no configuration to use. The next search below says what to run instead (<code>adamtune best</code>
    prints its code all the same).</p>
    {runners}
  </div>
</section>"""
    return f"""
<section id="best" class="hero">
  <div class="card best">
    <h2>{"Best trial: not safe to adopt" if unsafe else "Recommended configuration"}</h2>
    <div class="bignum"><span class="value">{e(fmt(r.best.value))}</span>
      <span class="unit">{e(s.metric)}</span></div>
    <div class="sub">trial {e(r.best.number)} · {e(cfg.optimizer)} · {e(r.best.steps)} steps</div>{at_step}
    <table class="params">{rows}</table>
    <p class="note"><span class="legend-dot">●</span> tuned; the others are fixed or PyTorch's defaults.</p>
  </div>
  <div class="card code">
    <h2>Paste into your training script</h2>
    <pre><code>{e(snippet)}</code></pre>
    <p class="hint">Weight decay goes to tensors of two or more dimensions (weight matrices, embeddings);
    1-D ones (biases, normalisation weights) get 0, exactly as adamtune trained this trial.</p>
    {runners}
  </div>
</section>"""


def _finding(a: StudyAnalysis, f: Finding) -> str:
    icon = "!" if f.severity == "warning" else "i"
    suggestion = "".join(f"<code>{e(x)}</code>" for x in f.suggestion)
    new = f.new_study
    if new is not None and not new.in_next:  # a study of its own, in the terminal's words
        command = (_command_html(new.command) if new.command is not None
                   else e(_python_call(a, new.study, new.set_arguments)))
        suggest = (f'<p class="suggest"><b>→ {e(suggestion_label(f))}:</b></p>'
                   f'<pre><code>{command}</code></pre>')
    elif suggestion:
        label = f"<b>→ {e(suggestion_label(f))}:</b> " if f.kind in SUGGESTION_LABELS else ""
        after = f" ({e(IN_NEXT_NOTE)})" if new is not None else ""
        suggest = f'<p class="suggest">{label}{suggestion}{after}</p>'
    else:
        suggest = ""
    return f"""
<div class="finding {e(f.severity)} kind-{e(f.kind)}">
  <div class="icon">{icon}</div>
  <div>
    <h3>{e(f.title)}</h3>
    <p>{e(f.detail)}</p>
    <p class="action"><b>What to do:</b> {e(f.action)}</p>
    {suggest}
  </div>
</div>"""


def _findings(a: StudyAnalysis) -> str:
    body = "".join(_finding(a, f) for f in a.findings)
    if a.too_few_to_judge:
        title = "No trial completed" if a.completed == 0 else "Too few completed trials to judge the search windows"
        body = f"""
<div class="finding"><div class="icon">i</div><div><h3>{title}</h3>
<p>{e(a.too_few_text)}</p></div></div>""" + body
    elif not a.warnings:
        tries = any(f.new_study is not None and not f.new_study.in_next for f in a.findings)
        # No "nothing to fix" above a change to try: the notes below give one.
        title, more = (("No warnings", " The notes below each give a change to try, in a new study of its own.")
                       if tries else ("Nothing to fix", ""))
        body = f"""
<div class="finding ok"><div class="icon">✓</div><div><h3>{title}</h3>
<p>The best trials sit inside every search window, no instability limits them, and their training
curves show no overfitting, late variance or unfinished training.{more}</p></div></div>""" + body
    return f'<section id="findings"><h2>Findings</h2>{body}</section>'


def _command_html(command: str) -> str:
    """A shell command for a ``<pre>``, escaped: it wraps between words only, never inside one
    (``--study w16-next-max_grad_norm`` broke at its hyphen); copied, it is the command as it is."""
    return " ".join(f'<span class="w">{e(word)}</span>' for word in command.split(" "))


def _python_call(a: StudyAnalysis, study: str | None, set_arguments: tuple[str, ...], continues: bool = False) -> str:
    """The ``adamtune.tune(...)`` call of a study whose workload was a Python object (no command
    line): the storage, and for a new study every setting the study was made with, so it runs on
    from this study's optimizer, seed and direction, not from tune()'s defaults."""
    s = a.result.settings
    first = "workload" if s.workload_info else "objective"
    where = f", storage={redact(a.storage)!r}" if a.storage else ""
    if continues:
        return f"adamtune.tune({first}{where}, study={study!r}, budget={2 * s.budget})"
    direction = f", direction={s.direction!r}" if not s.workload_info else ""
    return (f"adamtune.tune({first}{where}, study={study!r}, budget={s.budget},\n"
            f"              optimizer={s.optimizer!r}, task={s.task!r}, seed={s.seed!r}, sampler={s.sampler!r}, "
            f"pruner={s.pruner!r}{direction},\n"
            f"              space={list(set_arguments)!r})")


def _next(a: StudyAnalysis) -> str:
    ns = a.next_space
    if not ns.dimensions and ns.tuned_lr is None:
        return ""
    rows = "" if ns.tuned_lr is None else (  # an lr the study fixed, tuned now
        f'<tr><th>lr</th><td>{e("fixed" if ns.fixed_lr is None else f"fixed at {ns.fixed_lr:.4g}")}</td>'
        f'<td class="arrow">→</td><td><b>{e(window_text(ns.tuned_lr))}</b></td>'
        f'<td><span class="change widen">tune</span></td><td class="note">no trial learned at the fixed lr</td></tr>')
    rows += "".join(
        f'<tr><th>{e(d.name)}</th><td>{e(window_text(d.previous))}</td>'
        f'<td class="arrow">→</td><td><b>{e(window_text(d.window))}</b></td>'
        f'<td><span class="change {e(d.change)}">{e(d.change)}</span></td><td class="note">{e(d.reason)}</td></tr>'
        for d in ns.dimensions
    )
    # a workload passed as a Python object has no command line: the Python call
    command = (_command_html(ns.command) if ns.command is not None
               else e(_python_call(a, ns.study, ns.set_arguments, ns.continues)))
    return f"""
<section id="next" class="card">
  <h2>Next search space</h2>
  <p class="lead">{e(_next_lead(a))}</p>
  <table class="next">{rows}</table>
  <pre><code>{command}</code></pre>
</section>"""


def _next_lead(a: StudyAnalysis) -> str:
    ns = a.next_space
    if ns.lowered:
        return f"{a.stability.how_many_diverged.capitalize()}: search smaller learning rates before anything else."
    if ns.raised:
        return "No trial learned anything: search larger learning rates before anything else."
    if ns.tuned_lr is not None:
        text = a.tuned_lr_text  # the terminal's words
        return f"{text[0].upper()}{text[1:]}."
    if ns.changed:
        lead = "Coarse to fine: narrow around the best trials, widen where they hit an edge."
        if ns.below_failed is not None:
            lead += f" The lr window stops below {ns.below_failed:.3g}: every trial from there up failed."
    else:
        keep = a.keep_text  # the terminal's words
        lead = (f"{keep[0].upper()}{keep[1:]}. A new study of the same space and seed would run the very same trials "
                "again, so this continues the study.")
    if a.warnings or any(f.new_study is not None for f in a.findings):
        lead += (" What the findings advise besides is not in this command; a change they give to try has a "
                 "command of its own.")
    return lead


def _importance(a: StudyAnalysis) -> str:
    imp = a.importance
    if not imp.values:
        body = f'<p class="muted">Not computed: {e(imp.reason)}.</p>'
    else:
        body = "".join(
            f'<div class="bar"><span class="name">{e(n)}</span><span class="track"><span class="fill" '
            f'style="width:{max(1.0, 100 * v):.1f}%"></span></span><span class="pct">{v:.0%}</span></div>'
            for n, v in imp.values
        )
        over = f"{imp.completed} completed trials" + (
            f" and {imp.diverged} diverged ones (counted at the worst completed value)" if imp.diverged else "")
        body += f'<p class="muted">{e(imp.method)} over {e(over)}: the share of the objective\'s variation each hyperparameter explains.</p>'
    return f'<section id="importance" class="card"><h2>Which hyperparameters mattered</h2>{body}</section>'


def _figures(title: str, anchor: str, lead: str, svgs: list[str], wide: bool = False) -> str:
    if not svgs:
        return ""
    cls = "grid wide" if wide else "grid"
    figs = "".join(f'<figure class="card">{svg}</figure>' for svg in svgs)
    return f'<section id="{anchor}"><h2>{e(title)}</h2><p class="lead">{lead}</p><div class="{cls}">{figs}</div></section>'


def _plots(a: StudyAnalysis) -> str:
    checks = {c.name: c for c in a.boundary}
    out = [
        _figures(
            "Objective vs each hyperparameter", "axes",
            "Every trial. Grey bands: the outer part of each window the boundary check watches; "
            "amber when the best trials sit there. Diverged trials sit on the red dashed line, and failed "
            "ones (the workload's code raised) on it too, as dark squares.",
            [plots.axis_plot(i, checks.get(i.dimension.name)) for i in a.axes if i.points],
        ),
        _figures(
            "Best trial per bucket", "isolation",
            "Each window cut into equal buckets on its own scale; the line is the best completed trial in each.",
            [plots.isolation_plot(i) for i in a.isolation if any(b.best is not None for b in i.buckets)],
        ),
        _figures(
            "Heatmaps", "heatmaps",
            "The best completed trial's objective in each cell of two hyperparameters. Dots are completed trials, "
            "rings pruned ones, ✕ diverged ones, the star the best trial; pale cells hold no completed trial "
            "(none at all, or only pruned ones), hatched cells diverged ones and no completed trial.",
            [plots.heatmap(i) for i in a.heatmaps if any(c.best is not None for row in i.cells for c in row)],
        ),
        _figures(
            "Training curves", "curves",
            "Every trial: the best trials in colour, the others blue, pruned grey dashed, diverged red dotted (✕ where they stopped).",
            [plots.curves_plot(i) for i in a.curve_plots],
        ),
    ]
    if a.clip is not None and a.clip.samples:
        out.append(_figures(
            "Gradient norms", "gradnorms",
            "The best trial's unclipped gradient norms; red points are the steps the suggested threshold would clip.",
            [plots.grad_norm_plot(a.clip)], wide=True,
        ))
    return "".join(out)


def _trial_row(a: StudyAnalysis, t: TrialRecord, tuned: tuple[str, ...], reruns: dict[int, int]) -> str:
    best = a.result.best is not None and a.result.best.number == t.number
    rerun = f'<div class="note">reruns trial {e(reruns[t.number])} (cut short)</div>' if t.number in reruns else ""
    value = "diverged" + (f" @ step {t.steps}" if t.steps else "") if t.state == TrialState.DIVERGED else fmt(t.value)
    error = ""
    if t.error:
        error = f'<details><summary>{e(last_line(t.error) or "")}</summary><pre>{e(t.error)}</pre></details>'
    cells = "".join(f"<td>{e(fmt(t.params.get(n)))}</td>" for n in tuned)
    duration = f"{t.duration_s:.1f} s" if t.duration_s is not None else "—"
    return (
        f'<tr class="{"best" if best else ""}"><td>{e(t.number)}{" ★" if best else ""}{rerun}</td><td>{_badge(t.state)}{error}</td>'
        f"{cells}<td><b>{e(value)}</b></td><td>{e(t.steps)}</td><td>{e(duration)}</td></tr>"
    )


def _table(a: StudyAnalysis) -> str:
    s = a.result.settings
    tuned = s.space.tuned
    head = "".join(f"<th>{e(n)}</th>" for n in ("trial", "state", *tuned, s.metric, "steps", "time"))
    reruns = a.result.reruns
    rows = "".join(_trial_row(a, t, tuned, reruns) for t in a.table)
    return f'<section id="trials" class="card"><h2>All trials</h2><div class="scroll"><table class="trials"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div></section>'


def _confirmed(found: Confirmation | None) -> str:
    """The study's best trials trained again with other seeds (``adamtune confirm``), if it was done."""
    if found is None:
        return ""
    rows = []
    for r in found.retrained:
        star = "★ " if r is found.best else ""
        spread = f"{fmt(r.mean)} ± {fmt(r.sd)}" if not r.diverged else f"diverged with {r.diverged} of {found.seeds}"
        end = fmt(r.end_mean) if math.isfinite(r.end_mean) else ""
        rows.append(f"<tr><td>{star}{r.number}</td><td>{e(fmt(r.tuned))}</td><td>{e(spread)}</td><td>{e(end)}</td></tr>")
    return f"""
<section id="confirmed" class="card">
  <h2>Confirmed with other seeds</h2>
  <p class="lead">The best trials trained again with {found.seeds} other seeds each (adamtune confirm): new initial
  weights and minibatch order per seed, the same for every candidate.</p>
  <table class="trials"><tr><th>trial</th><th>{e(found.metric)} in the study (its own seed)</th>
  <th>best evaluation over the seeds, mean ± sd</th><th>at the end, mean</th></tr>{"".join(rows)}</table>
  <p>{e(found.verdict())}.</p>
</section>"""


def render_html(analysis: StudyAnalysis) -> str:
    """The whole report as one HTML document."""
    a = analysis
    found = a.confirmation
    main = f"""{_best(a, found)}
{_confirmed(found)}
{_findings(a)}
<div class="two">{_next(a)}{_importance(a)}</div>
{_plots(a)}
{_table(a)}"""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(a.result.study_name)} · adamtune report</title>
<style>{_CSS}</style>
</head>
<body>
{_header(a, main)}
<main class="wrap">
{main}
</main>
<footer class="wrap">Made by adamtune. This file is self-contained: it loads nothing from the network.</footer>
</body>
</html>
"""


_CSS = """
:root { --ink:#1f2937; --muted:#6b7280; --line:#e5e7eb; --bg:#f4f5f7; --blue:#2563eb; --gold:#f59e0b;
        --red:#dc2626; --green:#059669; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
.wrap { max-width:1200px; margin:0 auto; padding:0 24px; }
header { background:linear-gradient(135deg,#0f172a,#1e3a8a); color:#f8fafc; padding:28px 0 0; }
header .kicker { text-transform:uppercase; letter-spacing:.12em; font-size:12px; color:#93c5fd; }
header h1 { margin:4px 0 14px; font-size:30px; word-break:break-all; }
.facts { display:flex; flex-wrap:wrap; gap:8px 26px; font-size:13px; }
.facts span { color:#93c5fd; margin-right:6px; }
.space { margin:12px 0 0; font-size:13px; color:#e2e8f0; }
.counts { margin:14px 0 0; font-size:13px; color:#cbd5e1; }
.counts .count { margin-right:10px; color:#f8fafc; font-weight:600; }
nav { display:flex; gap:4px; flex-wrap:wrap; padding-top:16px; padding-bottom:0; }
nav a { color:#e2e8f0; text-decoration:none; font-size:13px; padding:8px 12px; border-radius:8px 8px 0 0; }
nav a:hover { background:rgba(255,255,255,.1); }
main.wrap { padding-top:28px; padding-bottom:24px; }
section { margin:0 0 28px; }
h2 { font-size:19px; margin:0 0 10px; }
h3.small { font-size:13px; margin:16px 0 0; color:var(--muted); text-transform:uppercase; letter-spacing:.05em; }
.card { background:#fff; border-radius:12px; box-shadow:0 1px 2px rgba(15,23,42,.06),0 4px 14px rgba(15,23,42,.05);
        padding:18px 22px; }
section.card { margin-bottom:28px; }
.hero { display:grid; grid-template-columns:minmax(300px,1fr) 1.7fr; gap:18px; }
.hero > *, .two > * { min-width:0; }
.best .bignum { display:flex; align-items:baseline; gap:10px; margin:6px 0 2px; }
.best .value { font-size:40px; font-weight:700; color:var(--blue); letter-spacing:-.02em; }
.best .unit { color:var(--muted); }
.best .sub { color:var(--muted); font-size:13px; margin-bottom:12px; }
.best.noise .value { color:var(--muted); }
.best .verdict { background:#fffbeb; border-left:4px solid var(--gold); padding:6px 10px; font-size:13px; }
table { border-collapse:collapse; width:100%; font-size:13.5px; }
.params th { text-align:left; font-weight:600; padding:5px 0; }
.params td { padding:5px 8px; font-variant-numeric:tabular-nums; text-align:right; white-space:nowrap; }
.params tr { border-top:1px solid var(--line); }
.params tr.tuned th::before { content:"●"; color:var(--gold); margin-right:6px; font-size:10px; }
.params tr.fixed { color:var(--muted); }
.note { color:var(--muted); font-size:12px; }
pre { background:#0f172a; color:#e2e8f0; padding:14px 16px; border-radius:10px; overflow-x:auto;
      font:12.5px/1.55 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; margin:8px 0;
      white-space:pre-wrap; overflow-wrap:normal; }  /* breaks between words, never inside --set lr=1e-05:0.32 */
.hint, .muted, .lead { color:var(--muted); font-size:13px; }
.lead { margin-top:-4px; }
.finding { display:flex; gap:14px; background:#fff; border-radius:12px; padding:14px 18px; margin:0 0 12px;
           box-shadow:0 1px 2px rgba(15,23,42,.06); border-left:6px solid #3b82f6; }
.finding.warning { border-left-color:var(--gold); background:#fffbeb; }
.finding.ok { border-left-color:var(--green); background:#ecfdf5; }
.finding .icon { flex:none; width:28px; height:28px; border-radius:50%; display:flex; align-items:center;
                 justify-content:center; font-weight:700; color:#fff; background:#3b82f6; }
.finding.warning .icon { background:var(--gold); }
.finding.ok .icon { background:var(--green); }
.finding h3 { margin:2px 0 4px; font-size:15.5px; }
.finding p { margin:4px 0; }
.finding .action { color:#374151; }
.finding code, .suggest code { background:#111827; color:#fde68a; padding:3px 8px; border-radius:6px;
                               font:12.5px ui-monospace,Menlo,Consolas,monospace; margin-right:6px; }
.finding pre code { padding:0; margin:0; }
pre .w { white-space:pre; }
.two { display:grid; grid-template-columns:3fr 2fr; gap:18px; align-items:start; }
.next th { text-align:left; padding:6px 6px 6px 0; }
.next td { padding:6px; font-variant-numeric:tabular-nums; white-space:nowrap; }
.next td.note { white-space:normal; }
.next tr { border-top:1px solid var(--line); }
.next .arrow { color:var(--muted); }
.change { font-size:11.5px; font-weight:600; padding:2px 8px; border-radius:99px; background:#e5e7eb; }
.change.widen { background:#fde68a; color:#92400e; }
.change.narrow { background:#dbeafe; color:#1e40af; }
.change.lower { background:#fee2e2; color:#991b1b; }
.bar { display:grid; grid-template-columns:120px 1fr 48px; align-items:center; gap:10px; margin:8px 0; }
.bar .name { font-weight:600; }
.bar .track { background:#eef2ff; border-radius:99px; height:14px; overflow:hidden; }
.bar .fill { display:block; height:100%; background:linear-gradient(90deg,#60a5fa,#2563eb); border-radius:99px; }
.bar .pct { text-align:right; font-variant-numeric:tabular-nums; color:var(--muted); }
.grid { display:grid; grid-template-columns:repeat(auto-fill,minmax(420px,1fr)); gap:16px; }
.grid.wide { grid-template-columns:1fr; }
figure { margin:0; }
figure.card { padding:12px; }
svg.figure { width:100%; height:auto; display:block; }
.grid.wide svg.figure { max-width:900px; margin:0 auto; }
.scroll { overflow-x:auto; }
.trials th { text-align:left; font-size:12px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted);
             padding:8px; border-bottom:2px solid var(--line); }
.trials td { padding:7px 8px; border-bottom:1px solid var(--line); font-variant-numeric:tabular-nums; vertical-align:top; }
.trials tr.best td { background:#fffbeb; }
.runners { margin-top:14px; }
.runners th { text-align:left; font-size:12px; color:var(--muted); font-weight:600; padding:4px 8px 4px 0; }
.runners td { padding:4px 8px 4px 0; font-variant-numeric:tabular-nums; border-top:1px solid var(--line); }
.legend-dot { color:var(--gold); }
.badge { display:inline-block; font-size:11.5px; font-weight:600; padding:1px 8px; border-radius:99px; }
.badge.complete { background:#dbeafe; color:#1e40af; }
.badge.pruned { background:#f3f4f6; color:#4b5563; }
.badge.diverged { background:#fee2e2; color:#991b1b; }
.badge.failed { background:#fae8ff; color:#86198f; }
.badge.running, .badge.waiting { background:#e0f2fe; color:#075985; }
details summary { cursor:pointer; font-size:12px; color:#86198f; }
details pre { font-size:11.5px; max-width:720px; }
footer { color:var(--muted); font-size:12px; padding-bottom:32px; }
@media (max-width:900px) { .hero, .two { grid-template-columns:1fr; } }
"""
