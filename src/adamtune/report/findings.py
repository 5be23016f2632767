"""The short version of a study's findings for the terminal, and the end-of-study summary.

Renders ``adamtune.analysis`` records; computes nothing new. User text (metric names, study
names) goes into rich ``Text`` objects, never into markup, so brackets in it print as they are.
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console
from rich.text import Text

from adamtune.analysis import StudyAnalysis, analyze
from adamtune.results import TuneResult

_MARK = {"warning": ("!", "bold yellow"), "info": ("·", "cyan")}


CONTINUE_NOTE = ("the windows hold: more trials of this study try new points of the same search; add "
                 "--sampler tpe to exploit what it found")
TOO_FEW_NOTE = ("too few trials to say whether to move the windows: more trials of this study try new points of "
                "the same search")
# The word before a finding's ``--set`` suggestion, by kind (the report shows it with the finding's action).
SUGGESTION_LABELS = {"boundary": "widen", "decay_timescale": "test", "clip": "clip"}


def findings_lines(analysis: StudyAnalysis) -> list[Text]:
    """One line per finding (with its ``--set`` suggestion), then the next search command.

    Warnings come first; when there are none, a line says so.
    """
    lines = [Text("Findings", style="bold")]
    if analysis.too_few_to_judge:
        lines.append(Text.assemble(("  · ", "cyan"), analysis.too_few_text))
    elif not analysis.warnings:
        lines.append(Text.assemble(("  ✓ ", "bold green"), "no warnings: the best trials sit inside every window, "
                                   "and nothing limits them"))
    for f in analysis.findings:
        mark, style = _MARK[f.severity]
        lines.append(Text.assemble((f"  {mark} ", style), f.title))
        if f.suggestion and f.kind in SUGGESTION_LABELS:
            lines.append(Text.assemble(f"      → {SUGGESTION_LABELS[f.kind]}: ", (" ".join(f.suggestion), "bold")))
    ns = analysis.next_space
    if ns.changed:
        lines.append(Text.assemble(("Next search: ", "bold"), ns.command or " ".join(f"--set {a}" for a in ns.set_arguments)))
    elif ns.continues and ns.command:
        # with too few trials to judge, nothing was checked: no claim that the windows hold
        note = TOO_FEW_NOTE if analysis.too_few_to_judge else CONTINUE_NOTE
        lines.append(Text.assemble(("Next: ", "bold"), ns.command, f"  ({note})"))
    return lines


def print_findings(console: Console, analysis: StudyAnalysis) -> None:
    """Print ``findings_lines`` (soft-wrapped: commands stay copyable)."""
    for line in findings_lines(analysis):
        console.print(line, soft_wrap=True, highlight=False)


def finish_study(
    console: Console, result: TuneResult, storage: str | None, *, write_report: bool = True,
    errors: Console | None = None,
) -> Path | None:
    """What ``adamtune tune`` prints at the end of a study: the findings and where the report went.

    The report goes next to the storage (``default_report_path``). A report that cannot be written
    does not undo a finished study: it gets a one-line warning on ``errors`` and None is returned.
    """
    analysis = analyze(result, storage=storage)
    console.print()
    print_findings(console, analysis)
    if not write_report:
        return None
    # Only now: the report's plots import matplotlib (seconds on a busy laptop).
    from adamtune.report.html import ReportError, default_report_path
    from adamtune.report.html import write_report as write

    path = default_report_path(storage, result.study_name)
    try:
        written = write(analysis, path, storage)
    except ReportError as e:
        (errors or console).print(Text(f"adamtune: warning: {e}"), soft_wrap=True)
        return None
    console.print(Text.assemble(("Report: ", "bold"), os.fspath(written)), soft_wrap=True, highlight=False)
    return written
