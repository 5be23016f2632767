"""Confirming a study's best trials with other seeds: real trainings, a real SQLite study, the real CLI."""

import json
import math
import re

import pytest
from typer.testing import CliRunner

import adamtune
from adamtune.cli import app
from adamtune.confirmation import confirm
from adamtune.confirmed import CONFIRM_ATTR, summary
from adamtune.engine import data_seed, init_seed, train_trial
from adamtune.workloads import load_workload

runner = CliRunner()


@pytest.fixture
def studied(storage, tiny_ref):
    return adamtune.tune(tiny_ref, budget=6, pruner="none", storage=storage, seed=4, notice=lambda m: None)


def test_each_candidate_trains_with_the_same_other_seeds_batched_as_alone_and_the_results_are_kept(studied, tiny_ref,
                                                                                                    storage):
    found = confirm(studied, top=3, seeds=2)
    ranked = adamtune.load("tiny", storage)
    top3 = sorted(t.number for t in sorted((t for t in ranked.trials if t.value is not None),
                                           key=lambda t: t.value)[:3])
    assert sorted(r.number for r in found.retrained) == top3
    assert [r.mean for r in found.retrained] == sorted(r.mean for r in found.retrained)  # best on average first
    w = load_workload(tiny_ref)
    for r in found.retrained:  # seed r: study seed 4 + r's initial weights and minibatches, for every candidate
        config = adamtune.Config(**next(t for t in studied.trials if t.number == r.number).config)
        alone = [train_trial(w, config, init_seed=init_seed(4 + s, 0), data_seed=data_seed(4 + s)).value
                 for s in (1, 2)]
        assert list(r.best) == pytest.approx(alone, rel=1e-5)  # batched (one stack per seed) as trained alone
        assert r.tuned == next(t.value for t in studied.trials if t.number == r.number)
        assert all(math.isfinite(v) for v in r.end)
    kept = json.loads(adamtune.load("tiny", storage).study.user_attrs[CONFIRM_ATTR])
    assert kept["seeds"] == 2 and set(kept["trials"]) == {str(n) for n in top3}
    lines = summary(found)
    assert lines[0] == ("3 trials of study tiny trained again with 2 other seeds each (val_loss: best evaluation, "
                        "mean ± sd; the study's own seed's in brackets)")
    assert lines[1].startswith(f"  ★ trial {found.best.number:>3}  ")
    assert "best on average over 2 seeds" in lines[-1]
    # the report shows it, read back from the study
    from adamtune.analysis import analyze
    from adamtune.report.html import render_html

    page = render_html(analyze(adamtune.load("tiny", storage)))
    card = page[page.index('id="confirmed"'):].split("</section>")[0]
    assert "The best trials trained again with 2 other seeds each (adamtune confirm)" in card
    assert f"<td>★ {found.best.number}</td>" in card and card.count("<tr>") == 4  # the header and 3 candidates


def test_what_cannot_be_confirmed_is_refused_in_one_line(storage, tiny_ref):
    def objective(config, trial):
        return config.lr

    own = adamtune.tune(objective, budget=2, storage=storage, study="own")
    with pytest.raises(adamtune.StudyError, match="^study 'own' trains with your own objective function: adamtune "
                                                  "cannot train it again; rerun its best configurations in your loop"):
        confirm(own)
    w = load_workload(tiny_ref)
    made = adamtune.tune(w, budget=2, pruner="none", storage=storage, study="object", notice=lambda m: None)
    with pytest.raises(adamtune.StudyError, match=r"was made from a Workload object: give it \(adamtune confirm "
                                                  r"--workload FILE.py:ATTR, or adamtune.confirm\(result, workload\)"):
        confirm(made)
    assert len(confirm(made, w, top=1, seeds=2).retrained) == 1
    for top, seeds, said in ((0, 3, "top must be a whole number of trials in 1..16, got 0"),
                             (3, 1, "seeds must be a whole number in 2..64 (one seed tells nothing of the noise), got 1"),
                             (3, 2.5, "seeds must be a whole number in 2..64")):
        with pytest.raises(adamtune.StudyError, match=f"^{said}".replace("(", r"\(").replace(")", r"\)")):
            confirm(made, w, top=top, seeds=seeds)


def test_the_command_prints_the_means_the_verdict_and_the_paste_code_of_the_best_on_average(studied, storage):
    r = runner.invoke(app, ["confirm", "--storage", storage, "--top", "2", "--seeds", "2"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("2 trials of study tiny trained again with 2 other seeds each")
    assert any(line.startswith("Paste (trial ") and line.endswith(", the one to adopt):") for line in lines)
    assert any(line.startswith("optimizer = torch.optim.AdamW(") for line in lines)
    r = runner.invoke(app, ["confirm", "--storage", storage, "--seeds", "x"])
    assert r.exit_code == 2 and r.stderr.strip() == ("adamtune: error: --seeds must be a whole number in 2..64 (one "
                                                     "seed tells nothing of the noise), got 'x'")
    r = runner.invoke(app, ["confirm", "--storage", storage, "--top", "0"])  # named as the option, as --seeds is
    assert r.exit_code == 2 and r.stderr.strip() == "adamtune: error: --top must be a whole number of trials in 1..16, got 0"


def test_the_demo_says_its_best_is_a_dip_and_gives_the_command_that_confirms_it(tmp_path, monkeypatch):
    """The demo's best (0.0802 at step 275) is one seed's dip of a noisy curve: the command to confirm
    it is given, and confirming it (5 other seeds) keeps trial 8 first, as the README shows."""
    monkeypatch.setenv("COLUMNS", "400")
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    r = runner.invoke(app, ["tune", "--storage", url, "--no-report"])
    assert r.exit_code == 0, r.output
    hint = ("Its value is one seed's dip of a noisy curve; before adopting it, train the best trials again with other "
            f"seeds: adamtune confirm --storage {url} --study digits-mlp")
    assert hint in r.stdout.splitlines()
    from adamtune.analysis import analyze
    from adamtune.report.html import render_html

    page = render_html(analyze(adamtune.load("digits-mlp", url), storage=url))
    assert f"<p class=\"note\">{hint.replace(chr(39), '&#x27;')}</p>" in page  # the report's card says the same
    r = runner.invoke(app, ["confirm", "--storage", url, "--study", "digits-mlp"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("3 trials of study digits-mlp trained again with 5 other seeds each")
    assert lines[1].split()[:3] == ["★", "trial", "8"] and {lines[2].split()[1], lines[3].split()[1]} == {"0", "4"}
    assert lines[4].startswith("trial 8, the study's best, is also best on average over 5 seeds; its lead over trial ")


def test_a_workload_other_than_the_studys_is_refused(studied, tiny_file):
    import dataclasses

    w = load_workload(f"{tiny_file}:tiny")
    with pytest.raises(adamtune.StudyError, match=r"^study 'tiny' minimizes val_loss, workload 'tiny-acc' maximizes "
                                                  r"val_accuracy: give the study's own workload$"):
        confirm(studied, load_workload(f"{tiny_file}:tiny_accuracy"))
    with pytest.raises(adamtune.StudyError, match=r"^study 'tiny' was trained with another workload setup \(steps 40 "
                                                  r"-> 400\): its trials would not compare with this confirmation's"):
        confirm(studied, dataclasses.replace(w, steps=400))


def test_the_workloads_code_failing_is_one_line_and_a_storage_refusing_the_write_still_shows_the_results(
        studied, tiny_file, storage, adamtune_command, unprivileged_copy, user_line):
    import dataclasses
    import os
    import subprocess

    w = load_workload(f"{tiny_file}:tiny")

    def exploding(output, target):
        raise ValueError("the loss broke")

    at = user_line('raise ValueError("the loss broke")')  # where the user's code raised it
    with pytest.raises(adamtune.StudyError, match="^" + re.escape(f"training the candidates failed: ValueError: the "
                                                                  f"loss broke{at}; nothing of this confirmation is "
                                                                  "kept") + "$"):
        confirm(studied, dataclasses.replace(w, loss=exploding), top=2, seeds=2)
    # read-only media: show, best and report read it; confirm trains, shows, and says it kept nothing
    path, prefix = unprivileged_copy(storage, 0o444)
    r = subprocess.run([*prefix, adamtune_command, "confirm", "--top", "2", "--seeds", "2", "--storage",
                        f"sqlite:///{path}"], capture_output=True, text=True, cwd=os.path.dirname(path), timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "300"})
    assert r.returncode == 0, r.stderr
    assert "note: the results could not be kept in study 'tiny' (its storage refused the write: " in r.stderr
    assert r.stdout.startswith("2 trials of study tiny trained again with 2 other seeds each")


def test_a_metric_turning_nan_fails_the_confirmation_it_is_no_divergence(storage, tiny_file):
    """A metric NaN while the loss stayed finite was counted as the candidate diverging with that
    seed: the verdict advised "lower lr or add warmup", or adopting another trial."""
    import dataclasses

    import torch

    w = load_workload(f"{tiny_file}:tiny_accuracy")
    made = adamtune.tune(w, budget=3, pruner="none", storage=storage, study="acc", notice=lambda m: None)

    def broken(output, target):
        return torch.tensor(math.nan)

    with pytest.raises(adamtune.StudyError, match=r"^training the candidates failed: trial \d+ with seed 1: "
                                                  r"WorkloadError: the objective's "
                                                  r"metric 'accuracy' returned nan at step \d+ while the loss was "
                                                  r"finite \(val_loss [\d.]+\): check the metric; nothing of this "
                                                  r"confirmation is kept$"):
        confirm(made, dataclasses.replace(w, metrics={"accuracy": broken}), top=2, seeds=2)
    assert "adamtune_confirm" not in adamtune.load("acc", storage).study.user_attrs


def test_best_and_the_report_name_the_configuration_best_on_average_when_it_is_not_the_studys_best(studied, storage):
    """After confirm said 'adopt trial 7', best and the report's card still showed trial 0's code."""
    import json

    from adamtune.analysis import analyze
    from adamtune.report.html import render_html

    best, runner_up = [t for t in sorted((t for t in studied.trials if t.value is not None), key=lambda t: t.value)][:2]
    studied.study.set_user_attr(CONFIRM_ATTR, json.dumps({"seeds": 3, "trials": {
        str(best.number): {"tuned": best.value, "best": [0.5, 0.6, 0.7], "end": [0.5, 0.6, 0.7]},
        str(runner_up.number): {"tuned": runner_up.value, "best": [0.3, 0.31, 0.32], "end": [0.3, 0.31, 0.32]}}}))
    r = runner.invoke(app, ["best", "--storage", storage])
    assert r.exit_code == 0, r.output
    said = (f"# adamtune confirm found trial {runner_up.number} best on average over 3 other seeds (val_loss 0.31 ± "
            f"0.01; trial {best.number}: 0.6 ± 0.1), beyond the noise and no worse at the end: adopt trial "
            f"{runner_up.number}'s configuration; its code:")
    assert said in r.stdout.splitlines()
    lr = adamtune.load("tiny", storage).trials[runner_up.number].config["lr"]
    assert f"lr={lr:.5g}"[:8] in r.stdout
    page = render_html(analyze(adamtune.load("tiny", storage), storage=storage))
    card = page[page.index('id="best"'):].split("</section>")[0]  # the card is the adopted trial's, saying why
    assert f'<div class="sub">trial {runner_up.number} · ' in card and "beyond the noise and no worse at the end" in card
    # a lead within the noise, or one that ends training worse, changes nothing: the study's best stays
    studied.study.set_user_attr(CONFIRM_ATTR, json.dumps({"seeds": 3, "trials": {
        str(best.number): {"tuned": best.value, "best": [0.5, 0.6, 0.7], "end": [0.5, 0.6, 0.7]},
        str(runner_up.number): {"tuned": runner_up.value, "best": [0.3, 0.31, 0.32], "end": [0.9, 0.9, 0.9]}}}))
    r = runner.invoke(app, ["best", "--storage", storage])
    assert "adamtune confirm found" not in r.stdout
    from adamtune.confirmed import stored

    assert stored(adamtune.load("tiny", storage)).verdict().startswith(
        f"trial {runner_up.number} is best on average over 3 seeds, not the study's best trial {best.number}, but it "
        "ends training worse on average (0.9 against 0.6; beyond the seeds' noise, ±0.2484), so its lead may lie in "
        f"its curve's swings: keep trial {best.number}'s configuration, or confirm with more seeds")


def test_a_study_that_learned_nothing_has_nothing_to_confirm(storage):
    """Paired seeds made a 0.0001 lead at chance-level loss "beyond the noise": confirm said to adopt
    a trial of a study whose best was noise, and best and the report took it."""
    made = adamtune.tune("digits-mlp", budget=3, pruner="none", storage=storage, study="flat",
                         space=["lr=1e-9:1e-8"], notice=lambda m: None)
    with pytest.raises(adamtune.StudyError, match=r"^study 'flat' learned nothing \(nothing learned: no trial moved "
                                                  r"val_loss by 1% from its first evaluation\): its best trial is best "
                                                  r"by noise, so there is nothing to confirm; run the next search"):
        confirm(made, top=2, seeds=2)
    r = runner.invoke(app, ["confirm", "--storage", storage, "--study", "flat", "--seeds", "2"])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and "learned nothing" in r.stderr


def _keep(result, seeds, trials):
    result.study.set_user_attr(CONFIRM_ATTR, json.dumps({"seeds": seeds, "trials": {
        str(n): {"tuned": next(t.value for t in result.trials if t.number == n), "best": best, "end": end}
        for n, (best, end) in trials.items()}}))


def test_every_place_that_shows_the_best_follows_the_confirmation(studied, storage):
    """tune's end printed the trial confirm rejected (and asked to confirm again), show --json had no
    word of it; after "none is safe to adopt" best and the report still recommended the trial."""
    best, second, third = [t.number for t in sorted((t for t in studied.trials if t.value is not None),
                                                    key=lambda t: t.value)][:3]
    _keep(studied, 3, {best: ([0.5, 0.6, 0.7], [0.5, 0.6, 0.7]), second: ([0.3, 0.31, 0.32], [0.3, 0.31, 0.32])})
    r = runner.invoke(app, ["tune", "--storage", storage, "--study", "tiny", "--no-report"])  # nothing trains: the budget is reached
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert sum("adopt trial" in line for line in lines) == 1  # said once, on the Best line
    head = next(i for i, line in enumerate(lines) if line.startswith("Best: "))
    assert lines[head].startswith(f"Best: trial {best}, val_loss = ") and lines[head].endswith(
        f"adopt trial {second}'s configuration. Paste (trial {second}):")
    lr = next(t for t in studied.trials if t.number == second).config["lr"]
    assert f"lr={lr:.5g}"[:8] in "\n".join(lines[head:])
    assert not any("adamtune confirm --" in line for line in lines)  # no hint to confirm what is confirmed
    shown = json.loads(runner.invoke(app, ["show", "--json", "--storage", storage]).stdout)
    assert shown["best"]["number"] == best and shown["confirmed"]["adopt"] == second
    assert shown["confirmed"]["trials"][0]["number"] == second and shown["confirmed"]["trials"][0]["best"] == [
        0.3, 0.31, 0.32]
    # each diverged with some seed: none is safe to adopt, said wherever the best is shown
    _keep(studied, 3, {best: ([0.5, None, 0.7], [0.5, None, 0.7]), second: ([0.3, 0.31, None], [0.3, 0.31, None])})
    unsafe = ("adamtune confirm trained the best 2 trials with 3 other seeds and each diverged with at least one: "
              "none is safe to adopt; lower lr or add warmup")
    r = runner.invoke(app, ["best", "--storage", storage])
    assert f"# {unsafe}" in r.stdout.splitlines()
    from adamtune.analysis import analyze
    from adamtune.report.html import render_html

    page = render_html(analyze(adamtune.load("tiny", storage), storage=storage))
    card = page[page.index('id="best"'):].split("</section>")[0]
    assert "<h2>Best trial: not safe to adopt</h2>" in card and unsafe[1:] in card
    assert json.loads(runner.invoke(app, ["show", "--json", "--storage", storage]).stdout)["confirmed"]["adopt"] is None
    # made before the third best finished: it was never trained again, and that is said
    _keep(studied, 3, {best: ([0.3, 0.31, 0.32], [0.3, 0.31, 0.32]), second: ([0.5, 0.6, 0.7], [0.5, 0.6, 0.7]),
                       max(t.number for t in studied.trials if t.number not in (best, second, third)):
                           ([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])})
    r = runner.invoke(app, ["best", "--storage", storage])
    assert (f"# trial {third}, now among the best 3, was not trained again by the confirmation: run adamtune "
            "confirm again to include it") in r.stdout.splitlines()


def test_confirming_again_with_more_seeds_trains_only_the_new_ones_and_other_candidates_replace_it(studied, storage):
    said = []
    two = confirm(studied, top=2, seeds=2, notice=said.append)
    assert said == []
    trained = []
    three = confirm(adamtune.load("tiny", storage), top=2, seeds=3, notice=said.append,
                    on_seed=lambda r, n: trained.append(r))
    assert said == ["seeds 1..2 are the confirmation kept in the study; training seed 3"] and trained == [3]
    for r in two.retrained:
        again = next(x for x in three.retrained if x.number == r.number)
        assert again.best[:2] == r.best and again.end[:2] == r.end and len(again.best) == 3
    assert json.loads(adamtune.load("tiny", storage).study.user_attrs[CONFIRM_ATTR])["finished"] == 6
    said.clear()
    confirm(adamtune.load("tiny", storage), top=3, seeds=2, notice=said.append)
    numbers = ", ".join(str(r.number) for r in three.retrained)
    assert said == [f"this replaces the confirmation kept in the study (trials {numbers} with 3 seeds)"]
    said.clear()
    confirm(adamtune.load("tiny", storage), top=9, seeds=2, notice=said.append)
    assert said[0] == "study 'tiny' has 6 completed trials: confirming those 6"


def test_picking_the_best_of_more_candidates_widens_the_interval_its_lead_must_beat():
    """Of 16 equal candidates, the best on average beat a plain 95% interval in about 1 of 6 draws."""
    from scipy.stats import t as student_t

    from adamtune.confirmed import Confirmation, Retrained

    tuned = Retrained(0, 0.5, (0.50, 0.61, 0.70), (0.5, 0.6, 0.7))
    first = Retrained(1, 0.6, (0.40, 0.50, 0.62), (0.4, 0.5, 0.6))
    others = [Retrained(n, 0.7, (0.7, 0.8, 0.9), (0.7, 0.8, 0.9)) for n in range(2, 2 + 14)]
    diffs = [b - a for a, b in zip(first.best, tuned.best)]
    sd = (sum((d - sum(diffs) / 3) ** 2 for d in diffs) / 2) ** 0.5
    for k, extra in ((2, []), (3, others[:1]), (16, others)):
        found = Confirmation("s", "val_loss", "minimize", 3, (first, tuned, *extra), 0)
        half = student_t.ppf(1 - 0.025 / (k - 1), 2) * sd / 3 ** 0.5
        text, beyond = found._lead(first, tuned)
        assert f"±{half:.4g})" in text and beyond == (0.0967 > half)
        assert ("widened for picking the best of" in text) == (k > 2)
    assert Confirmation("s", "val_loss", "minimize", 3, (first, tuned), 0).adopt() == 1  # plain 95%: beyond
    assert Confirmation("s", "val_loss", "minimize", 3, (first, tuned, *others), 0).adopt() == 0  # best of 16: not


def test_the_result_confirmed_in_python_shows_it_and_fewer_seeds_keep_those_kept(studied, storage):
    """analyze(result) after adamtune.confirm(result) had no confirmation (the result's attributes
    were read before it), and a plain confirm after --seeds 4 overwrote the 4 kept seeds with 2."""
    from adamtune.analysis import analyze

    found = confirm(studied, top=2, seeds=4, notice=lambda m: None)
    assert analyze(studied).confirmation == found
    said, trained = [], []
    again = confirm(studied, top=2, seeds=2, notice=said.append, on_seed=lambda r, n: trained.append(r))
    assert said == ["the study keeps 4 seeds of these trials, more than the 2 asked for: all 4 are used"]
    assert trained == [] and again.seeds == 4 and again.retrained == found.retrained
    assert json.loads(adamtune.load("tiny", storage).study.user_attrs[CONFIRM_ATTR])["seeds"] == 4


def test_a_kept_best_whose_value_was_luck_says_what_to_expect_and_no_step(studied, storage):
    """After confirm called the best's value one seed's luck, best and the card still gave that value's
    step to train ("keep the checkpoint of step 325, or train 325 steps") and nothing of the mean."""
    best, second = [t for t in sorted((t for t in studied.trials if t.value is not None), key=lambda t: t.value)][:2]
    worse = [best.value + 0.5 + d for d in (0.0, 0.01, 0.02)]
    _keep(studied, 3, {best.number: (worse, worse), second.number: ([w + 0.3 for w in worse], [w + 0.3 for w in worse])})
    r = runner.invoke(app, ["best", "--storage", storage])
    luck = [line for line in r.stdout.splitlines() if "one seed's luck" in line]
    assert luck == [f"# adamtune confirm trained trial {best.number} with 3 other seeds: val_loss {best.value + 0.51:.4g} "
                    f"± 0.01 on average, at the end {best.value + 0.51:.4g}; its {best.value:.4g} here was one seed's "
                    "luck, so expect the mean"], r.stdout
    assert not any("keep the checkpoint" in line or "dip of that noise" in line for line in r.stdout.splitlines())


def test_a_trial_that_enters_the_top_asked_for_after_a_confirmation_of_fewer_is_named(studied, storage):
    """confirm --top 3 on a study of 2 completed trials: a third that completed later was never
    trained again, and nothing said so (only the top 2 were compared)."""
    from adamtune.confirmed import stored

    best, second, third = [t.number for t in sorted((t for t in studied.trials if t.value is not None),
                                                    key=lambda t: t.value)][:3]
    kept = {"seeds": 2, "finished": 2, "top": 3, "trials": {
        str(n): {"tuned": next(t.value for t in studied.trials if t.number == n), "best": [0.5, 0.6], "end": [0.5, 0.6]}
        for n in (best, second)}}
    studied.study.set_user_attr(CONFIRM_ATTR, json.dumps(kept))
    found = stored(adamtune.load("tiny", storage))
    assert found.top == 3 and found.missing == (third,)
    assert found.stale() == (f"trial {third}, now among the best 3, was not trained again by the confirmation (made "
                             "when the study had 2 finished trials): run adamtune confirm again to include it")
    del kept["top"]  # made before the top asked for was kept: as many as it holds
    studied.study.set_user_attr(CONFIRM_ATTR, json.dumps(kept))
    assert stored(adamtune.load("tiny", storage)).stale() is None
