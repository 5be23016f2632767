"""``adamtune explain``: the parameter guide drawn in the terminal.

Everything shown comes from ``adamtune.guide``; this module only lays it out with rich.
It imports neither torch nor adamtune.config, so ``explain`` starts fast.
"""

from __future__ import annotations

from io import StringIO

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from adamtune import guide
from adamtune.errors import SpaceError

_OPTIMIZER_NAMES = {"adamw": "AdamW", "adam": "Adam", "adadelta": "Adadelta"}


def render_explain(param: str | None = None, optimizer: str = "adamw", task: str | None = None) -> Group:
    """The guide as a rich renderable.

    Args:
        param: one hyperparameter to explain in full; ``None`` for the overview of ``optimizer``
            (update rule, every hyperparameter, weight-decay conventions, stepwise procedure).
        optimizer: ``"adamw"``, ``"adam"`` or ``"adadelta"``.
        task: ``"generic"``, ``"cnn"``, ``"transformer"`` or ``"llm"`` for that task's typical
            values and preset windows; ``None`` shows every task.

    Raises:
        SpaceError: unknown ``param``, ``optimizer`` or ``task`` (the message names the choices).
    """
    rule = guide.update_rule(optimizer)
    if task is not None:
        guide.task_label(task)
    if param == "schedule":
        return _schedule()
    if param is not None and param not in guide.PARAMS:
        raise SpaceError(f"parameter must be one of {', '.join((*guide.PARAMS, 'schedule'))}, got {param!r}")
    if param is not None:
        return _param_detail(guide.param_guide(param), optimizer, task)
    return Group(
        _rule_panel(rule),
        _rule_panel(guide.CLIP_RULE),
        _params_table(optimizer, task),
        _decay_section(),
        _procedure(optimizer),
    )


def explain_text(
    param: str | None = None, optimizer: str = "adamw", task: str | None = None, *, width: int = 100
) -> str:
    """``render_explain`` as plain text (no colour codes), ``width`` characters wide."""
    renderable = render_explain(param, optimizer, task)
    out = StringIO()
    console = Console(
        file=out, width=width, color_system=None, force_terminal=False, highlight=False, emoji=False
    )
    console.print(renderable)
    return out.getvalue()


def _heading(text: str) -> Text:
    return Text(f"\n{text}", style="bold")


def _rule_panel(rule: guide.UpdateRule) -> Panel:
    body = Text("\n".join(rule.lines), style="bold")
    for note in rule.notes:
        body.append(f"\n{note}", style="dim")
    return Panel(body, title=Text(rule.title), title_align="left", box=box.ROUNDED, expand=True)


def _typical_text(p: guide.ParamGuide, optimizer: str, task: str | None) -> Text:
    if task is not None:
        return Text(p.typical_for(task, optimizer).text)
    return Text(_per_task(lambda t: p.typical_for(t, optimizer).text, guide.TASKS, label=lambda t: t))


def _per_task(value, tasks: tuple[str, ...], label=guide.TASK_LABELS.get) -> str:
    """One line per task, or a single line where every task has the same value."""
    values = [(t, value(t)) for t in tasks]
    if len({v for _, v in values}) == 1:
        return values[0][1] if len(tasks) == 1 else f"all tasks: {values[0][1]}"
    return "\n".join(f"{label(t)}: {v}" for t, v in values)


_SCALE_NAMES = {"log": "log", "log1m": "log of 1 − x", "linear": "linear"}


def _window_text(p: guide.ParamGuide, optimizer: str, task: str | None) -> str:
    window = guide.search_window(optimizer, task or "generic", p.name)
    return f"{window.low:g} – {window.high:g}\n({_SCALE_NAMES[window.scale]})"


def _params_table(optimizer: str, task: str | None) -> Group:
    name = _OPTIMIZER_NAMES[optimizer]
    where = f"typical for {guide.TASK_LABELS[task]}" if task is not None else "typical"
    window_task = task or "generic"
    table = Table(box=box.SIMPLE_HEAD, show_lines=True, expand=True, pad_edge=False)
    table.add_column("parameter", no_wrap=True)
    table.add_column("what it does", ratio=5)
    table.add_column(where, ratio=3)
    table.add_column(f"window ({window_task})", ratio=2)
    for p in guide.params_for(optimizer):
        label = Text(p.name, style="bold")
        label.append(f"\n{p.symbol}" if p.symbol != p.name else "")
        default = p.default_for(optimizer)
        label.append(f"\ndefault {default}" if default is not None else "\nnot in torch.optim", style="dim")
        effect = Text(p.what)
        note = p.note_for(optimizer)
        if note is not None:
            effect.append(f"\n{note}", style="dim")
        effect.append("\ntoo large: ", style="bold")
        effect.append(p.too_large_for(optimizer))
        effect.append("\ntoo small: ", style="bold")
        effect.append(p.too_small_for(optimizer))
        typical = _typical_text(p, optimizer, task)
        table.add_row(label, effect, typical, Text(_window_text(p, optimizer, task)))
    return Group(_heading(f"{name}'s hyperparameters"), table)


def _decay_section() -> Group:
    table = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False)
    table.add_column("convention", ratio=3)
    table.add_column("rule", no_wrap=True, min_width=max(len(c.rule) for c in guide.WEIGHT_DECAY_CONVENTIONS))
    table.add_column("used by", ratio=4)
    for c in guide.WEIGHT_DECAY_CONVENTIONS:
        table.add_row(Text(c.name), Text(c.rule), Text(f"{c.used_by}\n{c.note}"))
    timescale = Text()
    timescale.append(guide.TIMESCALE_FORMULA, style="bold")
    for line in guide.TIMESCALE_NOTES:
        timescale.append(f"\n{line}")
    conversions = Text("\n".join(guide.CONVERSION_FORMULAS))
    return Group(
        _heading("Weight-decay conventions"),
        table,
        _heading("Weight decay as a timescale (AdamW, PyTorch's convention)"),
        timescale,
        _heading("Conversions"),
        conversions,
    )


# Where each optimizer's row of guide.BUDGET_RULE comes from: the playbook's rule is Adam's.
_BUDGET_RULE_SOURCE = {
    "adamw": "the playbook's rule, with AdamW's weight_decay added from 6 trials: adamtune's addition",
    "adam": "the playbook's rule",
    "adadelta": "the playbook's rule for Adam, with rho in beta1's place and no beta2",
}


def _procedure(optimizer: str) -> Group:
    steps = Table.grid(padding=(0, 1))
    steps.add_column(no_wrap=True)
    steps.add_column(ratio=1)
    for i, step in enumerate(guide.procedure_for(optimizer), start=1):
        steps.add_row(f"{i}.", Text.assemble((step.title, "bold"), "\n", step.detail))
    budget = Table.grid(padding=(0, 1))
    budget.add_column(no_wrap=True, justify="right")
    budget.add_column(ratio=1)
    for threshold, names in guide.BUDGET_RULE[optimizer]:
        budget.add_row(f"≥ {threshold} trials:", ", ".join(names))
    actions = Table.grid(padding=(0, 1))
    actions.add_column(no_wrap=True)
    actions.add_column(ratio=1)
    for action in guide.ACTIONS.values():
        actions.add_row("•", Text(action))
    return Group(
        _heading("Stepwise procedure"),
        steps,
        _heading(f"Trial budget → dimensions tuned ({_BUDGET_RULE_SOURCE[optimizer]})"),
        budget,
        _heading("What to do about what the report finds"),
        actions,
    )


def _param_detail(p: guide.ParamGuide, optimizer: str, task: str | None) -> Group:
    used = optimizer in p.optimizers
    # The typical values and window of the optimizer asked about, or of one that uses the parameter.
    shown_optimizer = optimizer if used else p.optimizers[0]
    grid = Table.grid(padding=(0, 2), expand=True)
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(ratio=1)

    used_by = ", ".join(_OPTIMIZER_NAMES[o] for o in p.optimizers)
    if not used:
        used_by += f"  (not used by {_OPTIMIZER_NAMES[optimizer]})"
    grid.add_row("used by", Text(used_by))
    grid.add_row("what it does", Text(p.what))
    grid.add_row(f"too large ({_OPTIMIZER_NAMES[shown_optimizer]})", Text(p.too_large_for(shown_optimizer)))
    grid.add_row(f"too small ({_OPTIMIZER_NAMES[shown_optimizer]})", Text(p.too_small_for(shown_optimizer)))
    tasks = (task,) if task is not None else guide.TASKS
    typical = _per_task(lambda t: p.typical_for(t, shown_optimizer).text, tasks)
    grid.add_row(f"typical ({_OPTIMIZER_NAMES[shown_optimizer]})", Text(typical))
    grid.add_row("search scale", Text(f"{_SCALE_NAMES[p.scale]}: {p.scale_why}"))

    def window(t: str) -> str:
        w = guide.search_window(shown_optimizer, t, p.name)
        return f"{w.low:g} – {w.high:g}"

    grid.add_row("preset window", Text(_per_task(window, tasks)))
    untuned = {t: guide.untuned_values(shown_optimizer, t).get(p.name) for t in tasks}
    if any(v is not None for v in untuned.values()):
        grid.add_row("when not tuned", Text(_per_task(
            lambda t: "PyTorch's default" if untuned[t] is None else f"{untuned[t]:g} (the preset fixes it)", tasks)))
    defaults = [
        f"{_OPTIMIZER_NAMES[o]} {p.default_for(o)}" for o in p.optimizers if p.default_for(o) is not None
    ]
    shown_defaults = ", ".join(defaults) if defaults else "none (not a torch.optim argument)"
    grid.add_row("PyTorch default", Text(shown_defaults))
    notes = _distinct_notes(p)
    if notes:
        grid.add_row("in each optimizer", Text("\n".join(notes)))

    title = p.name if p.symbol == p.name else f"{p.name} ({p.symbol})"
    parts: list = [Panel(grid, title=Text(title), title_align="left", box=box.ROUNDED, expand=True)]
    if p.name == "weight_decay":
        parts.append(_decay_section())
    elif p.name == "max_grad_norm":
        parts.append(_rule_panel(guide.CLIP_RULE))
        parts.append(Text(guide.ACTIONS["clip"]))
    elif p.name == "warmup":
        parts.append(Text(guide.ACTIONS["unstable"]))
    elif used:
        parts.append(_rule_panel(guide.update_rule(optimizer)))
    return Group(*parts)


def _schedule() -> Panel:
    """``adamtune explain schedule``: the choices of ``--set schedule=...``."""
    grid = Table.grid(padding=(0, 2), expand=True)
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(ratio=1)
    for name, text in guide.SCHEDULE_GUIDE:
        grid.add_row(name, Text(text))
    return Panel(grid, title=Text("schedule (--set schedule=constant|cosine)"), title_align="left",
                 box=box.ROUNDED, expand=True)


def _distinct_notes(p: guide.ParamGuide) -> list[str]:
    """Per-optimizer notes, merged where optimizers share the same text."""
    by_text: dict[str, list[str]] = {}
    for optimizer, note in p.notes:
        by_text.setdefault(note, []).append(_OPTIMIZER_NAMES[optimizer])
    if len(by_text) == 1 and len(next(iter(by_text.values()))) == len(p.optimizers):
        return list(by_text)
    return [f"{' / '.join(names)}: {note}" for note, names in by_text.items()]
