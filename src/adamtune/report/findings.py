"""The short version of a study's findings for the terminal.

Renders ``adamtune.analysis`` records; computes nothing new. User text (metric names, study
names) goes into rich ``Text`` objects, never into markup, so brackets in it print as they are.
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from adamtune.analysis import Finding, StudyAnalysis

_MARK = {"warning": ("!", "bold yellow"), "info": ("·", "cyan")}


# The word before a finding's ``--set`` suggestion, by kind (the report shows it with the finding's action).
SUGGESTION_LABELS = {"boundary": "widen", "decay_timescale": "test", "clip": "clip", "unstable": "warm up"}
IN_NEXT_NOTE = "the Next search sets it"


def suggestion_label(f: Finding) -> str:
    """The words before a finding's suggestion: ``"widen"``; ``"test in a new study"`` where it
    comes with a study of its own (the terminal and the report say the same)."""
    label = SUGGESTION_LABELS[f.kind]
    return f"{label} in a new study" if f.new_study is not None and not f.new_study.in_next else label


def suggestion_text(f: Finding) -> str:
    """What follows the label: the new study's command (its ``--set`` arguments when the workload
    cannot be named on the command line), else the suggestion itself."""
    new = f.new_study
    if new is None or new.in_next:
        return " ".join(f.suggestion)
    return new.command or " ".join(f"--set {a}" for a in new.set_arguments)


def findings_lines(analysis: StudyAnalysis) -> list[Text]:
    """One line per finding (with its ``--set`` suggestion, or the new study that tries it),
    then the next search command.

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
            after = f" ({IN_NEXT_NOTE})" if f.new_study is not None and f.new_study.in_next else ""
            lines.append(Text.assemble(f"      → {suggestion_label(f)}: ", (suggestion_text(f), "bold"), after))
    ns = analysis.next_space
    if ns.changed:
        command = ns.command or " ".join(f"--set {a}" for a in ns.set_arguments)
        note = f"  ({analysis.tuned_lr_text})" if ns.tuned_lr is not None else ""  # an lr the study fixed
        lines.append(Text.assemble(("Next search: ", "bold"), command, note))
    elif ns.continues and ns.command:
        lines.append(Text.assemble(("Next: ", "bold"), ns.command, f"  ({analysis.keep_text})"))
    return lines


def print_findings(console: Console, analysis: StudyAnalysis) -> None:
    """Print ``findings_lines`` (soft-wrapped: commands stay copyable)."""
    for line in findings_lines(analysis):
        console.print(line, soft_wrap=True, highlight=False)
