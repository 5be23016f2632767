"""`adamtune explain` shows the guide's own text: exact update rules, tau, task values, clear errors."""

from __future__ import annotations

import re

import pytest
from rich.console import Console

from adamtune import guide
from adamtune.errors import AdamtuneError
from adamtune.report.explain import explain_text, render_explain


def _flat(text: str) -> str:
    """The text without borders and line breaks, so a wrapped one-column cell reads as one line."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "adadelta"])
def test_overview_shows_the_exact_update_rule_and_clipping(optimizer):
    text = explain_text(optimizer=optimizer)
    lines = [line.strip(" │") for line in text.splitlines()]
    for rule_line in (*guide.update_rule(optimizer).lines, *guide.CLIP_RULE.lines):
        assert rule_line in lines
    assert guide.update_rule(optimizer).title in text


def test_adam_rule_lines_are_torchs():
    text = explain_text(optimizer="adam")
    assert "denom ← √v / √(1 − β2^t) + ε" in text
    assert "step_size ← lr / (1 − β1^t)" in text
    assert "if λ > 0: g ← g + λ·θ" in text
    assert "θ ← θ·(1 − lr·λ)" not in text.split("Weight-decay conventions")[0]
    assert "θ ← θ·(1 − lr·λ)" in explain_text(optimizer="adamw")


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "adadelta"])
def test_overview_lists_every_hyperparameter_of_the_optimizer_only(optimizer):
    text = explain_text(optimizer=optimizer)
    table = text.split("Weight-decay conventions")[0]
    for p in guide.PARAMS.values():
        shown = re.search(rf"^\s*{p.name}\s", table, re.MULTILINE) is not None
        assert shown == (optimizer in p.optimizers), p.name


def test_overview_has_tau_conventions_and_procedure():
    flat = _flat(explain_text())
    assert "τ_iter = 1 / (lr · λ) steps" in flat
    assert "λ_independent = lr_max · λ_pytorch" in flat
    assert "θ ← θ·(1 − η_t·λ_independent)" in flat
    assert "DecoupledAdamW" in flat
    positions = [flat.index(step.title) for step in guide.procedure_for("adamw")]
    assert positions == sorted(positions)
    assert "≥ 6 trials: lr, weight_decay" in flat
    # weight_decay at 6 trials is adamtune's, not the playbook's (fewer than 10 trials: lr alone)
    assert "(the playbook's rule, with AdamW's weight_decay added from 6 trials: adamtune's addition)" in flat
    assert "(the playbook's rule)" in _flat(explain_text(optimizer="adam"))
    assert "90th percentile" in flat


@pytest.mark.parametrize("optimizer", ["adam", "adadelta"])
def test_weight_decay_is_not_a_tuning_step_where_the_preset_never_tunes_it(optimizer):
    flat = _flat(explain_text(optimizer=optimizer))
    assert "Then tune weight decay from the fit" not in flat
    assert "2. Then regularise from the fit The preset leaves weight_decay, coupled L2 here" in flat
    assert all("weight_decay" not in names for _, names in guide.BUDGET_RULE[optimizer])


@pytest.mark.parametrize(
    "task, shown, not_shown",
    [
        ("transformer", "2e-5–5e-5", "3e-4–1e-3"),
        ("cnn", "3e-4–1e-3", "2e-5–5e-5"),
        ("llm", "1e-4–6e-4", "2e-5–5e-5"),
    ],
)
def test_overview_shows_the_chosen_tasks_typical_values(task, shown, not_shown):
    flat = _flat(explain_text(task=task))
    assert shown in flat
    assert not_shown not in flat
    assert guide.TASK_LABELS[task].split()[0] in flat


def test_overview_without_task_shows_every_task():
    flat = _flat(explain_text())
    for value in ("2e-5–5e-5", "3e-4–1e-3", "1e-4–6e-4", "0.95"):
        assert value in flat


def test_llm_gets_beta2_0_95_and_its_weight_decay():
    flat = _flat(explain_text("beta2", task="llm"))
    assert "typical (AdamW) 0.95" in flat
    assert "when not tuned 0.95 (the preset fixes it)" in flat
    flat = _flat(explain_text("beta2"))
    assert "LLM pretraining: 0.95 (the preset fixes it)" in flat and "generic: PyTorch's default" in flat
    assert "when not tuned" not in _flat(explain_text("beta1"))
    flat = _flat(explain_text("weight_decay", task="llm"))
    assert "0.01–0.03; 0.1 in many published LLM recipes" in flat
    assert "τ_iter = 1 / (lr · λ) steps" in flat


def test_one_parameter_in_full():
    flat = _flat(explain_text("lr", task="transformer"))
    lr = guide.param_guide("lr")
    for part in (lr.what, lr.too_large, lr.too_small, "2e-5–5e-5 (BERT fine-tuning: 5e-5)"):
        assert _flat(part) in flat
    assert "AdamW 1e-3, Adam 1e-3, Adadelta 1.0" in flat
    assert "3e-06 – 0.0003" in flat  # the preset window for the task


def test_parameter_of_another_optimizer_says_so():
    flat = _flat(explain_text("rho", optimizer="adamw"))
    assert "not used by AdamW" in flat
    assert "0.9 (PyTorch) – 0.95 (Zeiler's paper)" in flat


def test_adadelta_values_are_not_adams():
    flat = _flat(explain_text("lr", optimizer="adadelta", task="cnn"))
    assert "1.0 (PyTorch's default; reproduces Zeiler's paper)" in flat
    assert "3e-4–1e-3" not in flat


@pytest.mark.parametrize("text", [explain_text("lr", optimizer="adadelta"),
                                  explain_text(optimizer="adadelta").split("Weight-decay conventions")[0]])
def test_adadelta_is_not_shown_adams_learning_rates(text):
    flat = _flat(text)
    assert "unstable: loss spikes or the run diverges" in flat
    assert "0.01–0.1" not in flat and "1e-5" not in flat and "Adam/AdamW" not in flat


@pytest.mark.parametrize("text", [explain_text("eps", optimizer="adadelta"), explain_text(optimizer="adadelta")])
def test_adadelta_eps_too_small_means_tiny_steps_not_blow_ups(text):
    # in Adadelta eps is in the numerator too: u starts at 0, so a small eps gives tiny first steps
    flat = _flat(text)
    assert "tiny first steps, and training crawls: ε is in the numerator √(u + ε) too" in flat
    assert "division blow-ups" not in flat
    assert "division blow-ups in low precision (bf16/fp16)" in _flat(explain_text("eps", optimizer="adam"))


def test_clipping_parameter_shows_the_rule_and_threshold_advice():
    flat = _flat(explain_text("max_grad_norm"))
    assert "scale ← min(1, max_norm / (norm + 1e-6))" in flat
    assert _flat(guide.ACTIONS["clip"]) in flat


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(param="momentum"),
            r"^parameter must be one of lr, beta1, beta2, eps, weight_decay, rho, max_grad_norm, warmup, schedule, "
            r"got 'momentum'$",
        ),
        (dict(optimizer="sgd"), r"^optimizer must be one of adamw, adam, adadelta, got 'sgd'$"),
        (dict(task="rnn"), r"^task must be one of generic, cnn, transformer, llm, got 'rnn'$"),
        (dict(param="lr", task="rnn"), r"^task must be one of"),
    ],
)
def test_bad_names_raise_one_clear_line(kwargs, message):
    with pytest.raises(AdamtuneError, match=message):
        render_explain(**kwargs)
    with pytest.raises(AdamtuneError, match=message):
        explain_text(**kwargs)


def test_renders_on_a_narrow_terminal_and_in_colour():
    console = Console(width=60, record=True, force_terminal=True, color_system="truecolor")
    console.print(render_explain(optimizer="adam", task="cnn"))
    assert "Adam (torch.optim.Adam)" in console.export_text()
    assert "\x1b[" not in explain_text()


def test_schedule_is_explained_with_the_formulas_make_scheduler_uses():
    import math

    import torch

    from adamtune.config import Config, make_scheduler

    text = explain_text("schedule")
    assert "constant" in text and "cosine" in text and "½(1 + cos(π·t/T))" in text and "make_scheduler" in text
    # what the text says of cosine with warmup holds for the scheduler it names
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt, Config(lr=1.0, warmup=0.1, schedule="cosine"), total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.1 and lrs[9] == 1.0  # linear from lr/W to lr over W = 10 steps
    assert lrs[10] == 1.0 and lrs[99] == 0.5 * (1 + math.cos(math.pi * 89 / 90))  # then cosine, nearly 0 at the end
