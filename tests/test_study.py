import dataclasses
import json
import math
import os
import re
import sqlite3

import optuna
import pytest
import torch
from torch import nn

import adamtune
from adamtune import StudyError, TrialState
from adamtune.report.terminal import counts_line, to_json
from adamtune.trials import trials_text
from adamtune.workloads import load_workload


def test_real_study_in_sqlite_records_everything(storage, tiny_ref):
    seen = []
    r = adamtune.tune(tiny_ref, budget=6, storage=storage, pruner="none",
                      on_trial=lambda record, so_far: seen.append((record, so_far)))
    assert len(r.trials) == 6 and r.count(TrialState.COMPLETE) == 6
    assert r.settings.space.tuned == ("lr", "weight_decay")
    best = min(r.trials, key=lambda t: t.value)
    assert r.best.number == best.number and r.best_value == best.value
    for t in r.trials:
        assert t.steps == 40
        assert t.curve.steps == (10, 20, 30, 40)
        assert set(t.curve.metrics) == {"train_loss", "val_loss", "val_accuracy"}
        assert t.value == pytest.approx(min(t.curve.metrics["val_loss"]))  # best evaluation
        assert t.grad_norms is not None and t.grad_norms.count == 40 and t.grad_norms.p90 >= t.grad_norms.p50
        assert t.config["lr"] == t.params["lr"]
    # the optuna study is a plain one: intermediate values are the objective curve
    ft = r.study.trials[0]
    assert sorted(ft.intermediate_values) == [10, 20, 30, 40]
    # the database is a real SQLite file
    path = storage[len("sqlite:///"):]
    with sqlite3.connect(path) as db:
        assert db.execute("select count(*) from trials").fetchone()[0] == 6
    # on_trial saw each trial once, as stored, with every trial finished before it in so_far
    final = {t.number: t for t in r.trials}
    assert sorted(record.number for record, _ in seen) == sorted(final)
    for i, (record, so_far) in enumerate(seen):
        stored = final[record.number]
        assert (record.state, record.value, record.params) == (stored.state, stored.value, stored.params)
        assert so_far.finished == i + 1
        assert record.number in {t.number for t in so_far.trials if t.finished}
        assert so_far.best_value == min(rec.value for rec, _ in seen[: i + 1])
        # the trials told after it (same batch) read as running trials do: nothing recorded yet
        assert all(t.value is None and t.steps == 0 and t.curve.steps == () for t in so_far.trials if not t.finished)


def test_rerun_continues_and_stored_settings_suffice(storage, tiny_ref):
    adamtune.tune(tiny_ref, budget=3, storage=storage, seed=4, pruner="none")
    # nothing but storage + study: continues with the stored workload, seed and space
    r = adamtune.tune(storage=storage, study="tiny", budget=5)
    assert len(r.trials) == 5 and r.settings.seed == 4 and r.settings.workload == tiny_ref
    # same budget again: nothing more to do
    assert len(adamtune.tune(storage=storage, study="tiny").trials) == 5
    # the continued points are new points of the sequence, not repeats
    assert len({t.params["lr"] for t in r.trials}) == 5
    # a budget below what the study has runs nothing and does not shrink the study's budget
    starts = []
    r = adamtune.tune(storage=storage, study="tiny", budget=2, on_start=lambda s, n: starts.append((s.budget, n)))
    assert len(r.trials) == 5 and r.settings.budget == 5 and starts == [(5, 0)]
    assert adamtune.load("tiny", storage).settings.budget == 5


def test_continuing_elsewhere_says_whose_workload_reference_fails(tmp_path, tiny_file, monkeypatch):
    (tmp_path / "made").mkdir()
    (tmp_path / "made" / "wl.py").write_text(open(tiny_file).read())
    storage = f"sqlite:///{tmp_path / 'made' / 's.db'}"
    monkeypatch.chdir(tmp_path / "made")
    adamtune.tune("wl.py:tiny", budget=1, storage=storage, study="rel")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(adamtune.WorkloadError) as e:
        adamtune.tune(storage=storage, study="rel", budget=2)
    assert str(e.value) == ("study 'rel' tunes workload 'wl.py:tiny', which cannot be loaded from here: workload file "
                            "'wl.py' does not exist; run adamtune from the directory the study was made in")


def test_continuing_with_other_optimizer_or_space_is_refused(storage, tiny_ref):
    adamtune.tune(tiny_ref, budget=2, storage=storage)
    with pytest.raises(StudyError, match="was created with optimizer 'adamw', not 'adam'"):
        adamtune.tune(tiny_ref, budget=3, storage=storage, optimizer="adam")
    with pytest.raises(StudyError, match="has its own search space"):
        adamtune.tune(tiny_ref, budget=3, storage=storage, space=["lr=1e-3:1e-1"])


def test_continuing_with_another_objective_direction_mode_or_setup_is_refused(storage, tiny_file, monkeypatch):
    import importlib.util
    spec = importlib.util.spec_from_file_location("tiny_wl", tiny_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    w = mod.tiny()
    adamtune.tune(w, budget=1, storage=storage, study="s")
    # Optuna keeps the direction a study was made with: maximising accuracy there would rank,
    # prune and show accuracies as if lower were better
    with pytest.raises(StudyError, match="^study 's' minimizes val_loss, this run maximizes val_accuracy; use a new"):
        adamtune.tune(dataclasses.replace(w, objective="val_accuracy", direction="maximize"), budget=2,
                      storage=storage, study="s")
    with pytest.raises(StudyError, match=r"^study 's' was trained with another workload setup \(steps "
                                         rf"{w.steps} -> {2 * w.steps}\): its trials would not compare"):
        adamtune.tune(dataclasses.replace(w, steps=2 * w.steps), budget=2, storage=storage, study="s")
    with pytest.raises(StudyError, match="^study 's' minimizes val_loss, this run minimizes the value of an objective"):
        adamtune.tune(lambda config, trial: 1.0, budget=2, storage=storage, study="s")
    adamtune.tune(lambda config, trial: 1.0, budget=1, storage=storage, study="obj")
    with pytest.raises(StudyError, match="^study 'obj' minimizes the value of an objective function, this run "
                                         "maximizes the value"):
        adamtune.tune(lambda config, trial: 1.0, budget=2, storage=storage, study="obj", direction="maximize")
    assert len(adamtune.load("s", storage).trials) == len(adamtune.load("obj", storage).trials) == 1
    # the same file spelt another way is the same workload
    monkeypatch.chdir(os.path.dirname(tiny_file))
    name = os.path.basename(tiny_file)
    adamtune.tune(f"{name}:tiny", budget=1, storage=storage, study="ref")
    assert len(adamtune.tune(f"./{name}:tiny", budget=2, storage=storage, study="ref").trials) == 2


def test_a_function_that_cannot_be_an_objective_is_refused_before_a_study_is_made(storage, tiny_file):
    def workload():  # a workload factory, passed without its call
        raise AssertionError("not to be called")

    with pytest.raises(StudyError, match=r"^tune\(\) got workload, which cannot be called as objective\(config, "
                                         r"trial\); pass workload\(\) if it makes a Workload"):
        adamtune.tune(workload, budget=2, storage=storage)
    assert not os.path.exists(storage.removeprefix("sqlite:///"))  # no study, not even a database, was made


def _value(config, trial):
    return config.lr


def _raise(settings, n):
    raise RuntimeError("on_start broke")


@pytest.mark.parametrize("refused", [dict(batch=2), dict(on_start=_raise)], ids=["batch-in-objective-mode",
                                                                              "on_start-raises"])
def test_a_run_refused_after_its_study_was_made_leaves_no_study(storage, refused):
    """A batch refused in objective mode, or an on_start that raised, left an empty study whose
    optimizer, seed and space every later run was held to (and a new SQLite file behind)."""
    with pytest.raises((StudyError, RuntimeError)):
        adamtune.tune(_value, budget=2, storage=storage, **refused)
    assert not os.path.exists(storage.removeprefix("sqlite:///"))  # the file this run made is gone too
    adamtune.tune(_value, budget=1, storage=storage, study="other")  # another study keeps the file
    with pytest.raises((StudyError, RuntimeError)):
        adamtune.tune(_value, budget=2, storage=storage, **refused)
    assert optuna.study.get_all_study_names(storage) == ["other"]
    r = adamtune.tune(_value, budget=2, storage=storage, optimizer="adam")  # not held to the refused run's adamw
    assert r.settings.optimizer == "adam" and len(r.trials) == 2


def _objective_in(path, offset):
    namespace = {}
    exec(compile(f"def objective(config, trial):\n    return {offset} + config.lr\n", str(path), "exec"), namespace)
    return namespace["objective"]


def test_another_scripts_objective_of_the_same_name_does_not_continue_a_study_by_its_default_name(storage, tmp_path):
    """Two scripts' `def objective` shared the study named after it: the second ran nothing and
    returned the first one's best value as its own; a larger budget mixed both loops' values."""
    a, b = _objective_in(tmp_path / "a.py", 1), _objective_in(tmp_path / "b.py", 5)
    adamtune.tune(a, budget=2, storage=storage)
    with pytest.raises(StudyError) as e:
        adamtune.tune(b, budget=4, storage=storage)
    assert str(e.value) == (f"study 'objective' was made by objective() of {tmp_path / 'a.py'}, not by this objective() "
                            f"of {tmp_path / 'b.py'}; give this one a study of its own (tune(..., study='...')), or pass "
                            "study='objective' to continue that one")
    assert len(adamtune.tune(a, budget=3, storage=storage).trials) == 3  # its own script continues it
    assert len(adamtune.tune(b, budget=4, storage=storage, study="objective").trials) == 4  # named: on purpose
    # a REPL's or a notebook's function has no file of its own (a cell's changes as it is run again)
    c = _objective_in("<stdin>", 1)
    assert len(adamtune.tune(c, budget=5, storage=storage).trials) == 5


def test_a_search_space_brings_its_optimizer_and_another_one_given_is_refused(storage):
    """SearchSpace("adam", ...) without optimizer= was refused as 'the optimizer is adamw', a
    default the user never gave."""
    space = adamtune.preset("adam", "generic", 4)
    assert adamtune.tune(_value, space=space, budget=1, storage=storage).settings.optimizer == "adam"
    with pytest.raises(adamtune.SpaceError, match="^the search space is for adam, but the optimizer is adamw$"):
        adamtune.tune(_value, space=space, optimizer="adamw", budget=1, storage=storage, study="other")


def test_show_json_shape(storage, tiny_ref):
    r = adamtune.tune(tiny_ref, budget=4, storage=storage, pruner="none")
    data = json.loads(json.dumps(to_json(adamtune.load("tiny", storage))))
    assert data["study"] == "tiny" and data["metric"] == "val_loss" and data["direction"] == "minimize"
    assert [t["number"] for t in data["trials"]] == [0, 1, 2, 3]
    assert {"number", "state", "params", "value"} <= set(data["trials"][0])
    assert set(data["trials"][0]["params"]) == {"lr"}
    assert data["best"]["number"] == r.best.number
    assert set(data["best"]["config"]) >= {"lr", "beta1", "beta2", "eps", "weight_decay", "max_grad_norm", "warmup"}


def test_diverged_trials_are_kept_marked_and_never_best(storage, tiny_ref):
    r = adamtune.tune(tiny_ref, budget=4, storage=storage, space=["lr=1e-3:100"], pruner="none")
    states = [t.state for t in r.trials]
    assert TrialState.DIVERGED in states and TrialState.COMPLETE in states
    for t in r.trials:
        if t.state == TrialState.DIVERGED:
            assert t.value is None and t.params["lr"] > 0.3
            assert t.steps <= 40
            ft = r.study.trials[t.number]
            assert ft.state == optuna.trial.TrialState.COMPLETE and ft.value == math.inf
    assert r.best.state == TrialState.COMPLETE
    data = to_json(r)
    assert any(t["state"] == "diverged" and t["value"] is None for t in data["trials"])


def test_maximized_objective_diverged_is_minus_inf(storage, tiny_file):
    TINY = tiny_file
    r = adamtune.tune(f"{TINY}:tiny_accuracy", budget=3, storage=storage, space=["lr=10:100"], pruner="none")
    assert all(t.state == TrialState.DIVERGED for t in r.trials)
    assert all(t.value == -math.inf for t in r.study.trials)
    assert r.best is None and r.best_config is None


def test_failures_are_kept_with_traceback_and_the_study_goes_on(storage):
    def objective(config, trial):
        if config.lr > 1e-3:
            raise ValueError(f"user code broke at lr={config.lr}")
        for step in (1, 2):
            trial.report(step, 1.0 / step + config.lr)
        return 0.5 + config.lr

    r = adamtune.tune(objective, budget=6, storage=storage, max_consecutive_failures=10)
    failed = [t for t in r.trials if t.state == TrialState.FAILED]
    done = [t for t in r.trials if t.state == TrialState.COMPLETE]
    assert failed and done and len(r.trials) == 6
    assert all("ValueError: user code broke" in t.error for t in failed)
    assert all(t.curve.steps == (1, 2) for t in done)


def _exiting_loss():
    """A loss calling sys.exit() from its second call on: the one step run before the study is made
    passes, the trials hit it."""
    calls = []

    def loss(output, target):
        calls.append(1)
        if len(calls) > 1:
            raise SystemExit(4)
        return adamtune.cross_entropy(output, target)
    return loss


@pytest.mark.parametrize("batch", [1, 4], ids=["sequential", "batched"])
def test_a_trial_whose_code_calls_sys_exit_fails_and_is_not_left_running(storage, batch):
    w = dataclasses.replace(load_workload("digits-mlp"), steps=20, eval_every=10, loss=_exiting_loss())
    r = adamtune.tune(w, budget=4, batch=batch, storage=storage, max_consecutive_failures=None, notice=lambda m: None)
    assert [t.state for t in r.trials] == [TrialState.FAILED] * 4
    assert all("SystemExit: 4" in t.error for t in r.trials)
    objective_mode = adamtune.tune(lambda config, trial: exit(3), budget=2, storage=storage, study="exits",
                                   max_consecutive_failures=None)
    assert [t.state for t in objective_mode.trials] == [TrialState.FAILED] * 2


def test_consecutive_failures_stop_with_clear_message(storage, tiny_file, user_line):
    TINY = tiny_file
    with pytest.raises(StudyError, match=r"3 trials in a row failed; stopping. Last error: RuntimeError: the model broke in training"):
        adamtune.tune(f"{TINY}:broken", budget=10, storage=storage, notice=lambda m: None)
    r = adamtune.load("broken", storage)
    counted = [t for t in r.trials if not t.interrupted]  # the batch's trials not run yet end as cut short
    assert len(counted) == 3 and all(t.state == TrialState.FAILED for t in counted)

    class SchemaError(Exception):  # a class of the user's own: its traceback line names its module too
        pass

    def objective(config, trial):
        raise SchemaError("column 'y' missing")

    with pytest.raises(StudyError, match=re.escape(f"Last error: SchemaError: column 'y' missing"
                                                   f"{user_line('raise SchemaError')} (every traceback")):
        adamtune.tune(objective, budget=3, storage=storage, study="own")


def test_a_run_whose_every_trial_failed_stops_with_the_last_error(storage, tiny_file, user_line):
    # fewer than max_consecutive_failures, but every one of them: a script must not read success
    with pytest.raises(StudyError) as e:
        adamtune.tune(f"{tiny_file}:broken", budget=2, storage=storage, notice=lambda m: None)
    # the command to read them names the storage: without it, `show` would look in ./adamtune.db
    assert str(e.value) == ("every trial of this run failed (2). Last error: RuntimeError: the model broke in training"
                            f"{user_line('raise RuntimeError', tiny_file)} "
                            f"(every traceback: adamtune show --json --storage {storage} --study broken)")
    assert [t.state for t in adamtune.load("broken", storage).trials] == [TrialState.FAILED] * 2

    def flaky(config, trial):  # one failure among trials that train: the run goes on and returns
        if trial.number == 0:
            raise ValueError("first one broke")
        return 1.0
    r = adamtune.tune(flaky, budget=2, storage=storage, study="flaky")
    assert [t.state for t in r.trials] == [TrialState.FAILED, TrialState.COMPLETE]


def _unlucky_model() -> nn.Module:
    """A model factory that raises for some trials only: by a random draw, so by the trial's seed."""
    u = float(torch.rand(()))
    if u < 0.45:
        raise ValueError(f"unlucky draw {u:.3f}")
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))


def test_a_model_factory_that_raises_for_some_trials_fails_only_those_batched_too(tmp_path, tiny_file, user_line):
    """Batched, one member's error failed every trial of the batch with that one traceback; with
    quasi-random sampling the batch is the whole budget, and the study stopped ('8 trials in a
    row failed'). The batch's trials now train again one at a time: those that fail alone fail."""
    w = dataclasses.replace(load_workload(f"{tiny_file}:tiny"), model=_unlucky_model)
    runs, notes = {}, {1: [], 8: []}
    for k in (1, 8):
        torch.manual_seed(0)  # planning a batch builds the model from the random state it finds: one that builds
        runs[k] = adamtune.tune(w, budget=8, batch=k, storage=f"sqlite:///{tmp_path / f'k{k}.db'}", pruner="none",
                                notice=notes[k].append)
    alone, batched = runs[1].trials, runs[8].trials
    assert [t.number for t in batched if t.state == TrialState.FAILED] == [0, 3, 7]  # the study went on
    assert [t.state for t in batched] == [t.state for t in alone]
    assert [t.value for t in batched if t.value] == pytest.approx([t.value for t in alone if t.value], rel=1e-6)
    # each with its own traceback
    assert [t.error.strip().splitlines()[-1] for t in batched if t.error] == [
        "ValueError: unlucky draw 0.434", "ValueError: unlucky draw 0.025", "ValueError: unlucky draw 0.421"]
    # the note says where the user's code raised it
    assert notes == {1: [], 8: ["training 8 trials of a batch of 8 again one at a time: the batch stopped on "
                                f"ValueError: unlucky draw 0.434{user_line('unlucky draw {u')}; only the trials "
                                "whose own training raises an error fail"]}
    assert {t.engine for t in batched} == {"sequential"}


class _RaisesAtCall25(nn.Module):
    """The user's bug, reached at the 25th training step (after two evaluations)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.calls = nn.Linear(8, 16), nn.Linear(16, 3), 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == 25:
                raise ValueError("user bug at call 25")
        return self.fc2(torch.tanh(self.fc1(x)))


def test_members_told_before_a_batch_raised_are_not_trained_again_and_no_value_is_reported_twice(tmp_path,
                                                                                                  tiny_file):
    w = dataclasses.replace(load_workload(f"{tiny_file}:tiny"), model=_RaisesAtCall25)
    runs, seen = {}, {1: [], 6: []}
    for k in (1, 6):
        runs[k] = adamtune.tune(w, budget=6, batch=k, storage=f"sqlite:///{tmp_path / f'k{k}.db'}", pruner="none",
                                space=["lr=1e-2:1e3"], max_consecutive_failures=None, notice=lambda m: None,
                                on_trial=lambda record, so_far, k=k: seen[k].append(record.number))
    alone, batched = runs[1], runs[6]
    states = [t.state for t in batched.trials]
    assert states == [t.state for t in alone.trials]
    assert {TrialState.DIVERGED, TrialState.FAILED} == set(states)
    for t, u in zip(batched.trials, alone.trials):
        if t.state == TrialState.DIVERGED:  # told at the batch's first evaluation: not trained again
            assert t.engine == "batched (K=6)" and t.steps == u.steps
        else:  # trained again alone, as far as alone: its own error, its evaluations once
            assert t.engine == "sequential" and t.error.strip().endswith("ValueError: user bug at call 25")
            assert "During handling" not in t.error
            assert t.curve.steps == u.curve.steps == (10, 20)
    for ft, fu in zip(batched.study.trials, alone.study.trials):
        assert ft.intermediate_values == pytest.approx(fu.intermediate_values, rel=1e-5)
    assert sorted(seen[6]) == list(range(6))  # each trial shown once


def test_consecutive_failures_count_trials_not_batches(storage, tiny_file, user_line):
    """A batch that raises for every member: the study stops after three trials failed alone, as
    with --batch 1, not with the whole batch failed; the others are cut short and run again."""
    w = dataclasses.replace(load_workload(f"{tiny_file}:tiny"), model=_RaisesAtCall25)
    at = user_line('raise ValueError("user bug')
    with pytest.raises(StudyError, match=re.escape("3 trials in a row failed; stopping. Last error: ValueError: "
                                                   f"user bug at call 25{at} (every")):
        adamtune.tune(w, budget=6, batch=6, storage=storage, pruner="none", notice=lambda m: None)
    stored = optuna.load_study(study_name="tiny", storage=storage).get_trials()
    assert [(t.state.name, bool(t.user_attrs.get("interrupted"))) for t in stored] == (
        [("FAIL", False)] * 3 + [("FAIL", True)] * 3)
    assert len({t.user_attrs["traceback"] for t in stored[3:]}) == 1  # "not run: the study stopped ..."
    assert stored[3].user_attrs["traceback"].startswith("not run")


def _loss_read_as_a_number(output, target):
    loss = adamtune.cross_entropy(output, target)
    if loss.item() > 4.0:  # vmap cannot batch .item(): the study trains one at a time
        raise RuntimeError(f"loss exploded: {loss.item():.3g}")
    return loss


def test_a_trials_traceback_after_the_vmap_fallback_is_its_own_error_only(storage, tiny_file):
    """The fallback trained the trials while the vmap error was being handled: each failed
    trial's traceback began with 40 lines of it and 'During handling of the above exception'."""
    w = dataclasses.replace(load_workload(f"{tiny_file}:tiny"), loss=_loss_read_as_a_number)
    notes = []
    r = adamtune.tune(w, budget=6, storage=storage, pruner="none", space=["lr=1e-2:1e3"], notice=notes.append,
                      max_consecutive_failures=None)
    assert len(notes) == 1 and notes[0].startswith("training trials one at a time: torch.func.vmap cannot run the "
                                                   "workload's loss")
    failed = [t for t in r.trials if t.state == TrialState.FAILED]
    assert failed and len(failed) < 6
    for t in failed:
        assert t.error.startswith("Traceback (most recent call last):")
        assert t.error.strip().splitlines()[-1].startswith("RuntimeError: loss exploded: ")
        for text in ("vmap", "NotBatchable", "During handling", "direct cause"):
            assert text not in t.error


def test_an_on_trial_callback_that_raises_in_a_batch_stops_the_study_as_alone(storage, tiny_file):
    """Its error was taken for the other members' training failing: they were recorded as failed
    with the callback's traceback, and the study went on. As from a trial run alone, it stops
    the study now; the members not stored are cut short, and the next run makes them up."""
    def on_trial(record, so_far):
        raise RuntimeError("the callback broke")

    w = load_workload(f"{tiny_file}:tiny")
    with pytest.raises(RuntimeError, match="the callback broke"):
        adamtune.tune(w, budget=6, batch=6, storage=storage, pruner="none", space=["lr=1e-2:1e3"],
                      on_trial=on_trial, notice=lambda m: None)
    stored = optuna.load_study(study_name="tiny", storage=storage).get_trials()
    done = [t for t in stored if t.state == optuna.trial.TrialState.COMPLETE]
    cut = [t for t in stored if t.state == optuna.trial.TrialState.FAIL]
    assert done and cut and len(done) + len(cut) == 6  # none left running, none counted as failed
    assert all(t.user_attrs.get("interrupted") and "callback" not in t.user_attrs["traceback"] for t in cut)
    r = adamtune.tune(w, storage=storage, study="tiny", notice=lambda m: None)
    assert sum(not t.interrupted for t in r.trials) == 6 and r.count(TrialState.FAILED) == len(cut)


def _counting_factory(*failing: int):
    """A fresh factory (its first use checked anew) that raises on its second call only, or on
    the calls ``failing`` names (1 = the first)."""
    calls = []

    def model():
        calls.append(1)
        if len(calls) in (failing or (2,)):
            raise ValueError("the factory broke on its second call" if not failing
                             else f"the factory broke on call {len(calls)}")
        return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    return model, calls


def test_the_check_that_a_factory_builds_anew_fails_no_trial_a_single_call_builds(tiny_file):
    """The check calls the factory a second time; it drew other random numbers than the first
    call, so a factory that fails by its draws failed trials that one call would have built."""
    w = load_workload(f"{tiny_file}:tiny")
    for seed in range(40):
        torch.manual_seed(seed)
        try:
            _unlucky_model()
            alone = None
        except ValueError as e:
            alone = str(e)
        fresh = dataclasses.replace(w, model=lambda: _unlucky_model())  # a new factory: checked at its first use
        torch.manual_seed(seed)
        try:
            fresh.build_model()
            checked = None
        except ValueError as e:
            checked = str(e)
        assert checked == alone, seed
    # A factory that raises in the check's call anyway: the user's error, raised as it is, and
    # the factory is checked again at its next use
    model, calls = _counting_factory()
    counted = dataclasses.replace(w, model=model)
    with pytest.raises(ValueError, match="^the factory broke on its second call$"):
        counted.build_model()
    counted.build_model()
    assert len(calls) == 4
    counted.build_model()
    assert len(calls) == 5


def test_a_factory_raising_in_its_first_use_is_refused_and_later_is_that_trials_failure(storage, tiny_file):
    # calls 1-2: the first build, before the study is made, whose check's call raises: refused,
    # nothing stored (a factory that fails there fails every trial, as far as adamtune can tell)
    model, calls = _counting_factory(2, 4)
    w = dataclasses.replace(load_workload(f"{tiny_file}:tiny"), model=model)
    with pytest.raises(adamtune.WorkloadError, match="^workload 'tiny': building the model failed before any "
                                                     r"trial: ValueError: the factory broke on call 2 \(test_study.py, "
                                                     r"line \d+\); nothing was stored"):
        adamtune.tune(w, budget=2, batch=1, storage=storage, pruner="none")
    # the first build passes (calls 1-2, checked there); trial 0's build (call 3) raises: its failure
    model, calls = _counting_factory(3)
    w = dataclasses.replace(load_workload(f"{tiny_file}:tiny"), model=model)
    r = adamtune.tune(w, budget=2, batch=1, storage=storage, pruner="none")
    assert [t.state for t in r.trials] == [TrialState.FAILED, TrialState.COMPLETE]
    assert not r.trials[0].interrupted  # counted as its failure, not cut short as a broken workload
    assert r.trials[0].error.strip().splitlines()[-1] == "ValueError: the factory broke on call 3"
    assert len(calls) == 4  # checked once, it is called once per trial


def test_reproducible_on_fresh_storages(tmp_path, tiny_ref):
    runs = [
        adamtune.tune(tiny_ref, budget=5, storage=f"sqlite:///{tmp_path / f'r{i}.db'}", seed=7)
        for i in range(2)
    ]
    a, b = ([(t.params, t.value, t.state) for t in r.trials] for r in runs)
    assert a == b
    other = adamtune.tune(tiny_ref, budget=5, storage=f"sqlite:///{tmp_path / 'other.db'}", seed=8)
    assert [t.params for t in other.trials] != [p for p, _, _ in a]


@pytest.mark.parametrize("sampler", ["tpe", "random", "gp"])
def test_other_samplers_are_seeded(tmp_path, tiny_ref, sampler):
    runs = [adamtune.tune(tiny_ref, budget=3, sampler=sampler, pruner="none",
                          storage=f"sqlite:///{tmp_path / f'{sampler}{i}.db'}") for i in range(2)]
    assert [t.params for t in runs[0].trials] == [t.params for t in runs[1].trials]


def test_objective_mode_with_pruning(storage):
    calls = []

    def objective(config, trial):
        calls.append(trial.number)
        for step in range(1, 11):
            # a curve that is worse for larger lr; the median pruner stops those
            trial.report(step, config.lr * 100 + 1.0 / step, train_loss=1.0)
            if trial.should_prune():
                raise adamtune.TrialPruned()
        return config.lr * 100

    r = adamtune.tune(objective, budget=12, storage=storage, pruner="median", study="mine")
    assert r.study_name == "mine" and len(calls) == 12
    assert r.count(TrialState.PRUNED) >= 1
    pruned = [t for t in r.trials if t.state == TrialState.PRUNED]
    assert all(t.steps < 10 and len(t.curve.steps) == t.steps for t in pruned)
    assert r.best.value == pytest.approx(min(t.value for t in r.trials if t.state == TrialState.COMPLETE))
    assert r.settings.workload is None
    with pytest.raises(StudyError, match="created from Python"):
        adamtune.tune(storage=storage, study="mine", budget=20)


def _optuna_order(config, trial):
    for step in (20, 40):
        trial.report(0.43, step)  # Optuna's report(value, step)
    return 0.4


def _backwards(config, trial):
    trial.report(20, 0.5)
    trial.report(10, 0.4)  # the second report
    return 0.4


def _no_return(config, trial):
    trial.report(10, 0.5)


def _text(config, trial):
    return "0.5"


@pytest.mark.parametrize("objective, said, where", [
    # stored every evaluation at step 0 with the step numbers as values: "nothing learned, lr 0.01..10"
    # said where: the user's line that called trial.report
    (_optuna_order, "StudyError: trial.report(step, value): step must be a whole number of training steps >= 0, "
                    "got 0.43; adamtune's order is report(step, value), Optuna's is report(value, step)",
     "trial.report(0.43, step)"),
    (_backwards, "StudyError: trial.report(step, value): each report is an evaluation at a later step, got step 10 "
                 "after step 20", "# the second report"),
    (_no_return, "StudyError: the objective returned None: it must return the trial's value (a float), e.g. its "
                 "best validation loss", None),
    (_text, "StudyError: the objective's return value must be a number (a float or a one-value tensor), got '0.5'",
     None),
], ids=["optuna-order", "backwards", "no-return", "text"])
def test_an_objective_reporting_or_returning_what_is_no_evaluation_fails_saying_so(storage, objective, said, where,
                                                                                     user_line):
    with pytest.raises(StudyError) as e:
        adamtune.tune(objective, budget=2, storage=storage, max_consecutive_failures=1)
    at = user_line(where) if where else ""
    assert str(e.value).startswith(f"a trial failed; stopping. Last error: {said}{at} (every traceback: ")


def test_an_objective_may_report_whole_float_steps_and_tensors(storage):
    def objective(config, trial):
        trial.report(10.0, torch.tensor(0.5))
        trial.report(20, 0.4, train_loss=torch.tensor([0.3]))
        return torch.tensor(0.4)

    (t,) = adamtune.tune(objective, budget=1, storage=storage).trials
    assert t.curve.steps == (10, 20) and t.value == pytest.approx(0.4)


def test_objective_nan_is_diverged(storage):
    def objective(config, trial):
        trial.report(1, float("nan"))
        return float("nan")

    r = adamtune.tune(objective, budget=2, storage=storage)
    assert [t.state for t in r.trials] == [TrialState.DIVERGED] * 2


def test_a_nan_report_stops_the_loop_and_marks_where_it_diverged(storage):
    steps = []

    def objective(config, trial):  # the README's loop: report, then ask should_prune()
        for step in range(1, 51):
            steps.append(step)
            trial.report(step, 1.0 if step < 5 else float("nan"))
            if trial.should_prune():
                raise adamtune.TrialPruned()
        return 1.0

    r = adamtune.tune(objective, budget=1, storage=storage, pruner="none")
    (t,) = r.trials
    assert steps[-1] == 5 and t.state == TrialState.DIVERGED and t.steps == 5
    assert r.study.trials[0].user_attrs["diverged_at_step"] == 5


def test_asha_on_an_objective_judges_from_a_quarter_of_its_length(storage):
    pruned_at = []

    def objective(config, trial):  # 100 steps, a report every step; worse for larger lr
        for step in range(1, 101):
            trial.report(step, config.lr * 100 + 1.0 / step)
            if trial.should_prune():
                pruned_at.append(step)
                raise adamtune.TrialPruned()
        return config.lr * 100

    r = adamtune.tune(objective, budget=12, storage=storage, pruner="asha")
    # Optuna's min_resource="auto" took 1% of the first complete trial: pruned at step 1
    assert pruned_at and min(pruned_at) >= 25 and r.count(TrialState.PRUNED) == len(pruned_at)

    def diverges_first(config, trial):  # trial 0 blows up at step 8: no length to judge the others by
        if trial.number == 0:
            for step in range(1, 9):
                trial.report(step, 1.0 if step < 8 else float("nan"))
            return float("nan")
        return objective(config, trial)

    pruned_at.clear()
    r = adamtune.tune(diverges_first, budget=12, storage=storage, study="diverges", pruner="asha")
    assert r.trials[0].state == TrialState.DIVERGED
    assert pruned_at and min(pruned_at) >= 25


def test_a_rerun_with_nothing_to_run_on_a_study_whose_every_trial_failed_is_an_error(storage, tiny_file,
                                                                                     user_line):
    with pytest.raises(StudyError):
        adamtune.tune(f"{tiny_file}:broken", budget=2, storage=storage, notice=lambda m: None)
    with pytest.raises(StudyError) as e:
        adamtune.tune(f"{tiny_file}:broken", budget=2, storage=storage, notice=lambda m: None)
    assert str(e.value) == ("study 'broken' has used its budget of 2 trials and every one failed; fix the error, then "
                            "pass a larger --budget to run more, or use a new --study name. Last error: RuntimeError: "
                            f"the model broke in training{user_line('raise RuntimeError', tiny_file)} (every traceback: "
                            f"adamtune show --json --storage {storage} --study broken)")
    path = storage.removeprefix("sqlite:///")
    assert not os.path.exists(path + "-wal")  # settled: the file alone holds the study, ready to copy
    # the Ray workers' driver says the same (it has nothing to start a cluster for)
    from adamtune.cluster import tune_on_ray
    with pytest.raises(StudyError, match="^study 'broken' has used its budget of 2 trials and every one failed"):
        tune_on_ray(f"{tiny_file}:broken", workers=1, budget=2, storage=storage)


def test_workload_object_in_python(storage, tiny_file):
    TINY = tiny_file
    import importlib.util
    spec = importlib.util.spec_from_file_location("tw", TINY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    w = dataclasses.replace(mod.tiny(), steps=20)
    r = adamtune.tune(w, budget=2, storage=storage, optimizer="adam", task="cnn")
    assert r.settings.task == "cnn" and r.settings.optimizer == "adam"
    assert all(t.steps == 20 for t in r.trials if t.state == TrialState.COMPLETE)


def test_quasi_random_point_i_is_trial_i_of_a_scrambled_sobol_sequence(storage, tiny_ref):
    import numpy as np
    from scipy.stats import qmc

    r = adamtune.tune(tiny_ref, budget=5, storage=storage, pruner="none", seed=3)
    d = r.settings.space.dimension("lr")
    # Optuna's QMC sampler with seed 3: Sobol(d=1, scramble=True, seed=3), point i for trial i
    points = qmc.Sobol(d=1, scramble=True, seed=3).random(8)[:5, 0]
    dist = d.distribution()
    expected = np.exp(np.log(dist.low) + points * (np.log(dist.high) - np.log(dist.low)))
    assert [t.params["lr"] for t in r.trials] == pytest.approx(list(expected), rel=1e-9)


@pytest.mark.parametrize("where", ["before any is stored", "after the first is stored"])
def test_a_batch_whose_telling_is_interrupted_leaves_no_trial_running(storage, tiny_ref, monkeypatch, where):
    """Ctrl-C while the finished members are told (e.g. while SQLite waits for a lock): every
    trial ends stored or failed as interrupted, none stays running, and a rerun goes on."""
    import adamtune.study as study_module
    from adamtune.storage import tell_many

    def interrupted(study, told):
        if where == "after the first is stored":
            tell_many(study, told[:1])
        raise KeyboardInterrupt

    monkeypatch.setattr(study_module, "tell_many", interrupted)
    with pytest.raises(KeyboardInterrupt):
        adamtune.tune(tiny_ref, budget=4, batch=4, storage=storage, pruner="none")
    monkeypatch.undo()
    stored = optuna.load_study(study_name="tiny", storage=storage).get_trials()
    states = [t.state for t in stored]
    assert optuna.trial.TrialState.RUNNING not in states and len(states) == 4
    done = 1 if where == "after the first is stored" else 0
    assert states.count(optuna.trial.TrialState.COMPLETE) == done
    assert all(t.user_attrs.get("interrupted") for t in stored if t.state == optuna.trial.TrialState.FAIL)
    # show says so: they are failed trials that do not use up the budget
    shown = adamtune.load("tiny", storage)
    assert f"{4 - done} failed ({4 - done} cut short, not counted in the budget)" in counts_line(shown)
    assert [row.get("interrupted", False) for row in to_json(shown)["trials"]] == [False] * done + [True] * (4 - done)
    notes = []
    r = adamtune.tune(storage=storage, study="tiny", budget=4, notice=notes.append)
    assert r.count(TrialState.COMPLETE) == 4  # interrupted trials do not use up the budget: they run again
    assert notes == [f"{trials_text(4 - done)} cut short earlier: run again first, with the same hyperparameters "
                     "and initial weights"]


def test_only_samplers_that_read_no_other_trial_have_a_batch_stored_in_one_write():
    from adamtune.space import preset
    from adamtune.study import draws_alone, make_sampler

    space = preset("adamw", "generic", 16)
    alone = {name: draws_alone(make_sampler(name, 0, space)) for name in adamtune.study.SAMPLERS}
    # TPE is a constant liar (it reads the running trials' parameters), GP reads the study
    assert alone == {"quasi-random": True, "random": True, "tpe": False, "gp": False}


@pytest.mark.parametrize("sampler, remaining, wanted, k", [
    ("quasi-random", 1000, None, 64),  # auto asks for at most 64 at once on a CPU
    ("quasi-random", 20, None, 20),
    ("tpe", 1000, None, 8),  # TPE learns from finished trials: fewer at once
    ("quasi-random", 1000, 200, 200),  # asked for by hand: as asked (memory allowing)
    ("quasi-random", 1000, 1, 1),
])
def test_batch_size_for_a_budget(tiny_file, sampler, remaining, wanted, k):
    from adamtune.study import resolve_batch
    from adamtune.workloads import load_workload

    notes = []
    assert resolve_batch(wanted, load_workload(f"{tiny_file}:tiny"), sampler, remaining, "cpu", None, notes.append) == k
    assert notes == []


@pytest.mark.parametrize("remaining, wanted, k, notes", [
    (2, 99999, 2, []),  # a batch larger than what remains trains what remains: the 2 fit
    (5, 99999, 3, ["5 members do not fit the memory budget; training in chunks of 3"]),
    (3, None, 3, []),
    (7, None, 3, ["7 members do not fit the memory budget; training in chunks of 3"]),
])
def test_the_memory_note_counts_the_members_that_remain(tiny_file, remaining, wanted, k, notes):
    from adamtune.engine.batched import members_per_chunk
    from adamtune.study import resolve_batch

    w = load_workload(f"{tiny_file}:tiny")
    three = 10**12 // members_per_chunk(w, "cpu", 10**12) * 3  # bytes that 3 members fit in
    seen = []
    assert resolve_batch(wanted, w, "quasi-random", remaining, "cpu", three, seen.append) == k
    assert seen == notes


def test_a_batch_larger_than_the_budget_says_nothing_of_memory(storage, tiny_ref):
    from adamtune.engine.batched import members_per_chunk

    three = 10**12 // members_per_chunk(load_workload(tiny_ref), "cpu", 10**12) * 3
    seen = []
    r = adamtune.tune(tiny_ref, budget=2, batch=99999, max_memory=three, storage=storage, device="cpu",
                      notice=seen.append)
    assert seen == [] and len(r.trials) == 2
    assert [t.user_attrs["engine"] for t in r.study.trials] == ["batched (K=2)"] * 2


@pytest.mark.parametrize("sampler", ["tpe", "gp", "random", "quasi-random"])
def test_two_workers_starting_on_one_study_at_once_draw_apart(storage, sampler):
    from adamtune.space import preset
    from adamtune.study import make_sampler

    space = preset("adamw", "generic", 16)
    optuna.create_study(study_name="s", storage=storage)
    workers = [optuna.load_study(study_name="s", storage=storage, sampler=make_sampler(sampler, 0, space))
               for _ in range(2)]  # the same seed, the same (empty) study
    drawn = [space.suggest(w.ask()).lr for w in workers]
    assert drawn[0] != drawn[1]
    if sampler in ("random", "quasi-random"):  # the seed and the point alone: trial 0 of any study
        assert space.suggest(optuna.create_study(sampler=make_sampler(sampler, 0, space)).ask()).lr == drawn[0]


@pytest.mark.parametrize("sampler", ["quasi-random", "tpe"])
def test_workers_that_ask_at_once_keep_to_the_budget(storage, tiny_ref, sampler):
    """Two workers that both find the study 3 trials short, then both ask: the study gets its
    budget, not twice the rest. The trials made past it end unrun, cut short, and a later run
    of the study runs their points (no hole in the Sobol sequence)."""
    import threading

    adamtune.tune(tiny_ref, budget=1, pruner="none", sampler=sampler, storage=storage, study="s")
    looked = threading.Barrier(2, timeout=60)  # both have counted the trials before either asks
    results, errors = [], []

    def worker() -> None:
        try:
            results.append(adamtune.tune(tiny_ref, budget=4, batch=3, storage=storage, study="s",
                                         on_start=lambda settings, remaining: looked.wait(),
                                         notice=lambda m: None))
        except BaseException as e:  # noqa: BLE001 - shown by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == []
    trials = adamtune.load("s", storage).trials
    counted = [t for t in trials if not t.interrupted]
    assert len(counted) == 4 and all(t.state == TrialState.COMPLETE for t in counted)
    extra = [t for t in trials if t.interrupted]
    assert len(extra) == 3 and all(t.state == TrialState.FAILED for t in extra)
    assert {t.error for t in extra} == {
        "not run: the study's budget of 4 trials was taken by other workers' trials (several workers asked at "
        "once); a later run of the study runs this point"}
    assert min(t.number for t in extra) > max(t.number for t in counted)
    again = adamtune.tune(tiny_ref, budget=7, batch=3, storage=storage, study="s", notice=lambda m: None)
    done = [t for t in again.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 7 and len({t.params["lr"] for t in done}) == 7
    if sampler == "quasi-random":  # the points of the trials not run, run now: as one worker would have
        adamtune.tune(tiny_ref, budget=1, pruner="none", storage=storage, study="alone")
        alone = adamtune.tune(tiny_ref, budget=7, batch=3, storage=storage, study="alone")
        assert sorted(t.params["lr"] for t in done) == sorted(t.params["lr"] for t in alone.trials)


def test_optunas_notes_on_adamtunes_own_doings_stay_out_of_the_users_way(storage, capsys):
    """Used from Python, tune() shows no ExperimentalWarning (adamtune's QMC sampler and metric
    names) and no "A new study created" line; the user's Optuna verbosity is left as it was."""
    import warnings

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            adamtune.tune(lambda config, trial: config.lr, budget=2, storage=storage, study="quiet")
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna.logging.set_verbosity(before)
    assert not [w for w in caught if issubclass(w.category, optuna.exceptions.ExperimentalWarning)]
    assert "A new study created" not in capsys.readouterr().err


def test_max_trials_runs_a_share_of_the_budget(storage, tiny_ref):
    r = adamtune.tune(tiny_ref, budget=10, batch=2, max_trials=3, pruner="none", storage=storage)
    assert len(r.trials) == 3 and r.settings.budget == 10
    r = adamtune.tune(tiny_ref, budget=10, max_trials=3, storage=storage)
    assert [t.number for t in r.trials] == list(range(6))
    assert adamtune.tune(tiny_ref, budget=10, max_trials=100, storage=storage).trials[-1].number == 9
    with pytest.raises(StudyError, match="max_trials must be a whole number >= 1 or None, got 0"):
        adamtune.tune(tiny_ref, max_trials=0, storage=storage)


def test_api_arguments_of_the_wrong_kind_are_one_line_and_store_nothing(tmp_path, tiny_ref):
    import pathlib

    path = tmp_path / "s.db"
    r = adamtune.tune(tiny_ref, budget=1, storage=path)  # a path is a SQLite file
    assert len(r.trials) == 1 and adamtune.load("tiny", path).trials == r.trials
    assert [s.study_name for s in adamtune.list_studies(pathlib.PurePosixPath(path))] == ["tiny"]
    other = tmp_path / "other.db"
    for kwargs, message in [
        ({"storage": 5}, "storage must be a URL like sqlite:///adamtune.db or postgresql://user@host/db, or the path of "
                         "a SQLite file, got int 5"),
        ({"space": "lr=1e-4:1e-2"}, "space must be a SearchSpace or a list of 'NAME=WINDOW' strings such as "
                                   "['lr=1e-4:1e-2', 'beta1=0.9'], got str 'lr=1e-4:1e-2'"),
        ({"space": {"lr": (1e-4, 1e-2)}}, "space must be a SearchSpace or a list of 'NAME=WINDOW' strings"),
        ({"space": 5}, "space must be a SearchSpace or a list of 'NAME=WINDOW' strings"),
        ({"space": [("lr", 1e-4, 1e-2)]}, "got an item ('lr', 0.0001, 0.01)"),
        ({"on_trial": 5}, "on_trial must be a function or None, got int 5"),
        ({"notice": "print"}, "notice must be a function or None, got str 'print'"),
    ]:
        with pytest.raises(adamtune.AdamtuneError) as e:
            adamtune.tune(tiny_ref, budget=1, storage=kwargs.pop("storage", other), **kwargs)
        assert message in str(e.value) and "\n" not in str(e.value)
        assert not other.exists()
    with pytest.raises(adamtune.StorageError, match="storage must be a URL"):
        adamtune.load("tiny", 5)


@pytest.mark.parametrize("model, said, where", [
    # where in the user's code
    (lambda: 1 / 0, "building the model to plan a batch failed (ZeroDivisionError: division by zero)",
     "(lambda: 1 / 0, "),
    # raised inside torch only: no line of the user's to name
    (lambda: nn.Linear(3, 2), "running the model and loss on a minibatch to plan a batch failed "
                              "(RuntimeError: mat1 and mat2 shapes cannot be multiplied (32x8 and 3x2))", None),
])
def test_the_note_on_a_broken_model_says_what_failed(tiny_file, model, said, where, user_line):
    from adamtune.study import resolve_batch

    w = dataclasses.replace(load_workload(f"{tiny_file}:tiny"), model=model)
    notes = []
    assert resolve_batch(None, w, "quasi-random", 4, "cpu", None, notes.append) == 1
    assert notes == [f"training trials one at a time: {said}{user_line(where) if where else ''}"]


def test_an_objectives_paste_line_says_its_steps_are_only_those_reported(storage):
    from adamtune.report.terminal import best_snippet

    def objective(config, trial):  # 5 epochs of 10 steps, a report per epoch
        for epoch in range(1, 6):
            trial.report(epoch, 1.0 / epoch + config.lr)
        return 0.2 + config.lr

    r = adamtune.tune(objective, budget=2, storage=storage, space=["warmup=0.2", "schedule=cosine"])
    assert ("total_steps = 5  # the last step the trial reported: set the steps your loop trains: warmup and the "
            "schedule are fractions of them") in best_snippet(r)
    none = adamtune.tune(lambda config, trial: float("nan"), budget=1, storage=storage, study="nan")
    assert none.best_config is None and best_snippet(none) is None
    with pytest.raises(adamtune.ConfigError, match=r"^python_snippet\(\) needs a Config, got None \(a study with no "
                                                   "completed trial has no best_config\\)$"):
        adamtune.python_snippet(none.best_config)


# tiny, whose loss makes the study's SQLite file refuse writes at its 25th call (mid-training),
# once: as a full disk does, writes fail and reads go on. A trigger raising an error of its own
# would not do: SQLite reports it as a constraint failure, which Optuna takes for another
# worker's write and ignores. A trigger writing to a table that does not exist fails with
# SQLite's OperationalError, as a full disk (or a file made read-only) does.
_REFUSING = '''\
import dataclasses, os, sqlite3, sys

import torch

sys.path.insert(0, {tests!r})
import tiny_workloads

DB, ARMED, TABLES = {db!r}, {armed!r}, {tables!r}
calls = 0


def refuse_writes():
    con = sqlite3.connect(DB, timeout=60)
    names = TABLES or [n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for name in names:
        for op in ("INSERT", "UPDATE", "DELETE"):
            con.execute(f"CREATE TRIGGER refuse_{{name}}_{{op}} BEFORE {{op}} ON {{name}} "
                        "BEGIN INSERT INTO disk_full VALUES (1); END")
    con.commit()
    con.close()


def loss(output, target):
    global calls
    calls += 1
    if calls == 25 and os.path.exists(ARMED):
        os.remove(ARMED)
        refuse_writes()
    return torch.nn.functional.cross_entropy(output, target)


def loss_raising(output, target):  # the user's code fails as the disk fills up
    value = loss(output, target)
    if calls >= 25:
        raise RuntimeError("the user's own bug")
    return value


def loss_item(output, target):  # a Python number from the loss: trained one at a time
    value = loss(output, target)
    float(value)
    return value


def refusing():
    return dataclasses.replace(tiny_workloads.tiny(), loss=loss)


def refusing_unbatchable():
    return dataclasses.replace(tiny_workloads.tiny(), loss=loss_item)


def refusing_and_raising():
    return dataclasses.replace(tiny_workloads.tiny(), loss=loss_raising)
'''


@pytest.fixture
def refusing_writes(tmp_path):
    """``make(tables)`` -> ``(workload file, SQLite URL)``: the file's workloads make the database
    refuse writes to ``tables`` (default: all) mid-training in the next run; ``_writes_again`` undoes it."""
    tests = os.path.dirname(os.path.abspath(__file__))
    db, armed = str(tmp_path / "refusing.db"), str(tmp_path / "armed")

    def make(tables=()):
        path = tmp_path / "refusing.py"
        path.write_text(_REFUSING.format(tests=tests, db=db, armed=armed, tables=list(tables)))
        open(armed, "w").close()
        return str(path), f"sqlite:///{db}"
    return make


def _writes_again(url):
    with sqlite3.connect(url[len("sqlite:///"):]) as con:
        for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            con.execute(f"DROP TRIGGER {name}")


@pytest.mark.parametrize("engine, table", [
    ("batched", "trial_intermediate_values"),
    ("sequential", "trial_intermediate_values"),
    ("batched, fallen back to one at a time", "trial_intermediate_values"),
    ("batched", "trial_params"),  # the next batch's parameters
])
def test_a_storage_failing_mid_training_stops_the_study_and_ends_its_trials_cut_short(refusing_writes, engine, table):
    """Reporting an evaluation, or storing the next trials' parameters, fails (the writes to that
    table only): not the user's code failing, so not failed trials counted against the budget
    and the run going on, but the study's stop, with the trials it made ended as cut short (the
    other writes still work)."""
    path, url = refusing_writes([table])
    attr = "refusing_unbatchable" if engine.endswith("at a time") else "refusing"
    with pytest.raises(optuna.exceptions.StorageInternalError) as caught:
        adamtune.tune(f"{path}:{attr}", budget=8, batch=1 if engine == "sequential" else 4, pruner="none",
                      storage=url, study="s")
    assert "no such table: main.disk_full" in str(caught.value.__cause__)
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert trials and all(t.state != optuna.trial.TrialState.RUNNING for t in trials)
    stopped = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert stopped and all(t.user_attrs["interrupted"] for t in stopped)  # cut short: run again, not counted
    assert {t.user_attrs["traceback"] for t in stopped} == {
        "stopped: the study storage failed: (sqlite3.OperationalError) no such table: main.disk_full"}
    _writes_again(url)  # the disk has room again: the study is continued to its budget, no point lost
    r = adamtune.tune(storage=url, study="s")
    assert sum(not t.interrupted for t in r.trials) == 8 and r.count(TrialState.COMPLETE) == 8


@pytest.mark.parametrize("attr", ["refusing", "refusing_and_raising"])
def test_a_storage_that_refuses_every_write_mid_training_is_one_line_and_exit_2(refusing_writes, adamtune_command,
                                                                                attr):
    """Every write fails, reads go on (a full disk): the batched run ended with exit status 0 and
    a summary, its trials left running, as ending them failed too and the budget read as used;
    so it did when the user's code failed at that moment and recording its failure failed."""
    import subprocess

    path, url = refusing_writes()
    r = subprocess.run([adamtune_command, "tune", "--workload", f"{path}:{attr}", "--budget", "8", "--batch", "8",
                        "--pruner", "none", "--storage", url, "--study", "s", "--no-report"],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2 and "8 trials:" not in r.stdout and "Next:" not in r.stdout  # no summary
    assert r.stderr.strip().splitlines() == [
        "adamtune: error: the study storage failed: (sqlite3.OperationalError) no such table: main.disk_full; "
        "every trial stored before is kept"]
    _writes_again(url)
    # nothing could be ended: the trials stay running until their heartbeat is stale (heartbeat.py)
    assert {t.state for t in optuna.load_study(study_name="s", storage=url).trials} == {
        optuna.trial.TrialState.RUNNING}


def test_a_database_error_of_the_users_own_code_fails_its_trial(storage):
    """An objective reading its data from a database of its own: its error is its trial's failure,
    not the study's storage failing."""
    import sqlalchemy

    def objective(config, trial):
        sqlalchemy.create_engine("sqlite://").connect().exec_driver_sql("SELECT * FROM their_data")

    r = adamtune.tune(objective, budget=2, storage=storage, max_consecutive_failures=None)
    assert r.count(TrialState.FAILED) == 2 and not any(t.interrupted for t in r.trials)
    assert "no such table: their_data" in r.trials[0].error


def test_processes_starting_a_new_study_together_with_other_settings_do_not_mix_their_trials(tmp_path, tiny_ref,
                                                                                              adamtune_command):
    """Three processes make one new study at once, each with its own optimizer: each used to run
    with its own settings, the last to store them won, and the study held trials of all three.
    Now the first to make it sets them; the others are refused as on any existing study."""
    import subprocess

    url = f"sqlite:///{tmp_path / 'race.db'}"
    runs = {opt: subprocess.Popen([adamtune_command, "tune", "--workload", tiny_ref, "--optimizer", opt, "--budget", "2",
                                   "--batch", "1", "--storage", url, "--study", "r", "--no-report"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
            for opt in ("adam", "adamw", "adadelta")}
    done = {opt: (p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for opt, p in runs.items()}
    made = adamtune.load("r", url).settings.optimizer
    assert done[made][0] == 0, done[made]
    for opt, (code, _, err) in done.items():
        if opt != made:
            assert code == 2 and err.strip().splitlines() == [
                f"adamtune: error: study 'r' was created with optimizer {made!r}, not {opt!r}; use a new --study "
                "name to change it"]
    trials = optuna.load_study(study_name="r", storage=url).trials
    assert len(trials) == 2 and {t.user_attrs["config"]["optimizer"] for t in trials} == {made}


# tiny, whose model factory first starts `adamtune tune` on the same study with other settings,
# to its end: another process makes the study after this one looked for it and before this one
# makes it (open_study builds the model in between, to check --max-memory).
_COMPETED = '''\
import os, subprocess, sys

sys.path.insert(0, {tests!r})
import tiny_workloads

started = False


def model():
    global started
    if not started and "COMPETITOR" not in os.environ:
        started = True
        subprocess.run([{command!r}, "tune", "--workload", __file__ + ":competed", "--optimizer", "adam",
                        "--budget", "1", "--batch", "1", "--storage", {url!r}, "--study", "s", "--no-report"],
                       env={{**os.environ, "COMPETITOR": "1"}}, check=True, capture_output=True)
    return tiny_workloads._mlp()


def competed():
    import dataclasses

    return dataclasses.replace(tiny_workloads.tiny(), model=model)
'''


@pytest.mark.parametrize("optimizer", ["adamw", "adam"])
def test_a_study_another_process_made_meanwhile_is_checked_against_its_settings(tmp_path, adamtune_command,
                                                                                  optimizer):
    path, url = tmp_path / "competed.py", f"sqlite:///{tmp_path / 'made.db'}"
    path.write_text(_COMPETED.format(tests=os.path.dirname(os.path.abspath(__file__)), command=adamtune_command,
                                     url=url))
    run = dict(optimizer=optimizer, budget=2, batch=2, max_memory=1 << 30, storage=url, study="s", pruner="none")
    if optimizer != "adam":  # not the maker's: refused, and the study stays as its maker made it
        with pytest.raises(StudyError, match=r"^study 's' was created with optimizer 'adam', not 'adamw'; use a new "):
            adamtune.tune(f"{path}:competed", **run)
        made = adamtune.load("s", url)
        assert made.settings.optimizer == "adam" and made.settings.budget == 1 and len(made.trials) == 1
        return
    # the same settings but the budget: this run continues the study to its own budget
    r = adamtune.tune(f"{path}:competed", **run)
    assert r.settings.budget == 2 and len(r.trials) == 2 and r.count(TrialState.COMPLETE) == 2
    assert r.study.metric_names == ["val_loss"]


def test_a_study_found_before_its_maker_stored_its_settings_is_read_again(storage, tiny_ref):
    """Optuna makes a study, then its maker stores adamtune's settings: one found in between is
    waited for, and this run is refused for another optimizer, not as a study adamtune did not make."""
    import threading

    from adamtune.results import SETTINGS_ATTR

    made = adamtune.tune(tiny_ref, budget=1, storage=storage, study="made", pruner="none")
    bare = optuna.create_study(study_name="s", storage=storage)
    late = threading.Timer(1.0, bare.set_user_attr, (SETTINGS_ATTR, made.study.user_attrs[SETTINGS_ATTR]))
    late.start()
    try:
        with pytest.raises(StudyError, match=r"^study 's' was created with optimizer 'adamw', not 'adam'"):
            adamtune.tune(tiny_ref, optimizer="adam", storage=storage, study="s")
    finally:
        late.join()


def _accuracy_or_nan(output, target):
    """A metric with a bug of its own: NaN wherever the accuracy is below 0.6, however well training goes."""
    a = adamtune.accuracy(output, target)
    return torch.where(a >= 0.6, a, torch.full_like(a, float("nan")))


def test_an_objective_metric_nan_while_the_loss_is_finite_fails_its_trial_not_diverged_in_both_engines(tmp_path,
                                                                                                     tiny_file):
    """Taken for divergence, a metric's NaN had the findings say 'lr window too high' and move lr
    down by decades. It fails that trial alone, naming the metric; batched, that member alone."""
    w = dataclasses.replace(load_workload(f"{tiny_file}:tiny"), name="nan-metric", objective="val_accuracy",
                            direction="maximize", metrics={"accuracy": _accuracy_or_nan})
    runs = {k: adamtune.tune(w, budget=8, batch=k, storage=f"sqlite:///{tmp_path / f'k{k}.db'}", pruner="none",
                             space=["lr=1e-4:1e0"], max_consecutive_failures=None, notice=lambda m: None)
            for k in (1, 8)}
    alone, batched = runs[1].trials, runs[8].trials
    assert [t.state for t in batched] == [t.state for t in alone]
    assert {t.state for t in alone} == {TrialState.FAILED, TrialState.COMPLETE}  # some members' metric, not all
    assert {t.engine for t in batched} == {"batched (K=8)"}  # no member trained again one at a time
    for t in (t for r in runs.values() for t in r.trials if t.state == TrialState.FAILED):
        assert not t.interrupted  # counted: the user's code is at fault
        assert re.fullmatch(r"WorkloadError: the objective's metric 'accuracy' returned nan at step \d+ while the "
                            r"loss was finite \(val_loss [\d.]+\): check the metric", t.error.strip()), t.error
        assert all(math.isfinite(v) for v in t.curve.metrics["train_loss"])  # its curve is kept
    stability = adamtune.analysis.stability(runs[8])
    assert stability.diverged == () and not adamtune.analysis.stability_findings(stability)


def test_an_objective_metric_nan_for_every_member_stops_at_the_failures_in_a_row(storage, tiny_file):
    w = dataclasses.replace(load_workload(f"{tiny_file}:tiny"), objective="val_accuracy", direction="maximize",
                            metrics={"accuracy": lambda output, target: torch.tensor(float("nan"))})
    with pytest.raises(StudyError) as e:
        adamtune.tune(w, budget=5, batch=5, storage=storage, notice=lambda m: None)
    assert str(e.value).startswith("3 trials in a row failed; stopping. Last error: WorkloadError: the objective's "
                                   "metric 'accuracy' returned nan at step 10 while the loss was finite (val_loss ")
    trials = adamtune.load("tiny", storage).trials
    # the members past the third end cut short, not counted: a rerun once the metric is fixed runs them
    assert [(t.state, t.interrupted) for t in trials] == [(TrialState.FAILED, False)] * 3 + [
        (TrialState.FAILED, True)] * 2


@pytest.mark.parametrize("batch", [1, "auto"], ids=["sequential", "batched"])
def test_a_model_factory_returning_no_module_is_refused_before_the_study_is_made(tmp_path, tiny_file, batch):
    """Its trials failed one by one on 'int' object has no attribute 'to', using up the budget."""
    w = dataclasses.replace(load_workload(f"{tiny_file}:tiny"), model=lambda: 5)
    with pytest.raises(adamtune.WorkloadError) as e:
        adamtune.tune(w, budget=4, batch=batch, storage=f"sqlite:///{tmp_path / 's.db'}")
    assert str(e.value) == "workload 'tiny': model() must return an nn.Module, a new network for each trial, got int 5"
    assert not (tmp_path / "s.db").exists()


class _NoParameters(nn.Module):
    def forward(self, x):
        return x[:, :3]


def _frozen():
    net = nn.Linear(8, 3)
    net.requires_grad_(False)
    return net


@pytest.mark.parametrize("batch", [1, "auto"], ids=["sequential", "batched"])
@pytest.mark.parametrize("model", [_NoParameters, _frozen], ids=["none", "frozen"])
def test_a_model_with_nothing_to_tune_is_refused_before_the_study_is_made(tmp_path, tiny_file, batch, model):
    """Every trial failed on make_optimizer's 'no trainable parameters', three in a row, then stopped."""
    w = dataclasses.replace(load_workload(f"{tiny_file}:tiny"), model=model)
    with pytest.raises(adamtune.WorkloadError, match=r"^workload 'tiny': model\(\) returned a \w+ with no trainable "
                                                     r"parameter \(none, or all with requires_grad=False\): there is "
                                                     r"nothing for the optimizer to tune$"):
        adamtune.tune(w, budget=4, batch=batch, storage=f"sqlite:///{tmp_path / 's.db'}")
    assert not (tmp_path / "s.db").exists()


def test_a_trial_whose_cut_short_end_cannot_be_stored_is_left_running_without_the_mark(storage):
    """Ctrl-C ends the trial in training as cut short: its traceback, its mark and its state in
    one write. When that write fails (here a trigger refuses the state; a kill in the middle is the
    same), the trial stays running, unmarked: a later run ends it as lost and makes up for it. A
    mark stored before the state left it running yet not counted, so the budget was filled with
    another point and the point it stood for was never run."""
    path = storage[len("sqlite:///"):]

    def objective(config, trial):
        if trial.number == 1:
            with sqlite3.connect(path, timeout=60) as con:
                con.execute("CREATE TRIGGER no_fail BEFORE UPDATE OF state ON trials WHEN NEW.state = 'FAIL' "
                            "BEGIN SELECT RAISE(ABORT, 'the state cannot be stored'); END")
            raise KeyboardInterrupt
        return config.lr

    with pytest.raises(KeyboardInterrupt):
        adamtune.tune(objective, budget=3, storage=storage, study="s", notice=lambda m: None)
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert trials[1].state == optuna.trial.TrialState.RUNNING
    assert "interrupted" not in trials[1].user_attrs and "traceback" not in trials[1].user_attrs


@pytest.mark.parametrize("bad", [0, -1, True, "3", 2.0])
def test_max_consecutive_failures_must_be_a_whole_number_of_trials(storage, bad):
    def objective(config, trial):
        return config.lr

    with pytest.raises(StudyError, match=rf"max_consecutive_failures must be a whole number >= 1 or None, got {re.escape(repr(bad))}$"):
        adamtune.tune(objective, budget=2, storage=storage, max_consecutive_failures=bad)
    assert not os.path.exists(storage[len("sqlite:///"):])  # refused before anything is stored


def test_numpy_integers_are_whole_numbers(storage):
    import numpy as np

    def objective(config, trial):
        return config.lr

    r = adamtune.tune(objective, budget=np.int64(2), seed=np.int32(3), max_trials=np.int64(2),
                      max_consecutive_failures=np.int64(3), storage=storage, study="np")
    assert len(r.trials) == 2 and r.settings.seed == 3 and type(r.settings.seed) is int and r.settings.budget == 2


@pytest.mark.parametrize("change, said", [
    (lambda w: dict(train_data=(w.train_data[0].double(), w.train_data[1])),  # torch.tensor(X) of numpy's float64
     "one training step of the model (forward, loss, backward) on a minibatch failed before any trial: RuntimeError: "
     "mat1 and mat2 must have the same dtype"),
    (lambda w: dict(model=lambda: nn.Linear(5, 3)),
     "one training step of the model (forward, loss, backward) on a minibatch failed before any trial: RuntimeError: "
     "mat1 and mat2 shapes cannot be multiplied (32x8 and 5x3)"),
    (lambda w: dict(model=lambda: 1 / 0), "building the model failed before any trial: ZeroDivisionError: division by zero"),
    (lambda w: dict(loss=lambda out, y: nn.functional.cross_entropy(out, y, reduction="none")),
     "one training step of the model (forward, loss, backward) on a minibatch failed before any trial: the workload's "
     "loss must return a tensor holding one value (the mean over the minibatch)"),
    (lambda w: dict(loss=lambda out, y: nn.functional.cross_entropy(out.detach(), y)),
     "one training step of the model (forward, loss, backward) on a minibatch failed before any trial: the workload's "
     "loss does not require grad"),
], ids=["float64 data", "shape", "factory raises", "loss per example", "loss without grad"])
def test_code_wrong_for_every_trial_is_refused_before_the_study_is_made(tmp_path, tiny_file, change, said):
    """float64 data failed 3 trials one by one and stopped; rerun after the fix, the study trained only
    what was left of its budget, and its first points were never tried."""
    w = load_workload(f"{tiny_file}:tiny")
    w = dataclasses.replace(w, **change(w))
    path = tmp_path / "s.db"
    with pytest.raises(adamtune.WorkloadError) as e:
        adamtune.tune(w, budget=4, storage=f"sqlite:///{path}", notice=lambda m: None)
    assert str(e.value).startswith(f"workload 'tiny': {said}") and "\n" not in str(e.value), str(e.value)
    assert str(e.value).endswith("; nothing was stored: fix it and run again")
    assert not path.exists()  # no study, no file: the fixed run starts the study afresh


class _TensorFromAParameter(nn.Module):
    """A tensor attribute computed from a parameter in __init__: deepcopy refuses such a model
    ("Only Tensors created explicitly by the user support the deepcopy protocol")."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)
        self.scale = self.fc.weight.norm() * 0 + 1  # a non-leaf tensor, not a parameter or buffer

    def forward(self, x):
        return self.fc(x) * self.scale.detach()


def test_a_model_that_cannot_be_copied_is_not_refused_before_the_study(storage, tiny_file):
    """The step run before the study is made copied the model: such models, which trained before,
    were refused."""
    import copy

    with pytest.raises(RuntimeError, match="deepcopy"):
        copy.deepcopy(_TensorFromAParameter())
    w = dataclasses.replace(load_workload(f"{tiny_file}:tiny"), model=_TensorFromAParameter)
    r = adamtune.tune(w, budget=2, batch=1, storage=storage, pruner="none", notice=lambda m: None)
    assert [t.state for t in r.trials] == [TrialState.COMPLETE] * 2
