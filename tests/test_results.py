"""Reading a study back: its settings and the line that describes what it tunes."""

import dataclasses
import json

import optuna

import adamtune
from adamtune.results import SETTINGS_ATTR, SPACE_BUDGET_ATTR, StudySettings, fixed_description, tuned_description


def test_a_larger_budget_keeps_the_space_and_says_so(storage, tiny_ref):
    first = adamtune.tune(tiny_ref, budget=2, storage=storage, pruner="none")
    assert tuned_description(first.settings) == "tuning lr — budget 2"
    more = adamtune.tune(storage=storage, study="tiny", budget=6)
    assert more.settings.space.tuned == ("lr",) and more.settings.space_budget == 2
    # not "set by hand": the budget rule chose it, for the budget the study began with
    assert tuned_description(more.settings) == "tuning lr — budget 6 (the space chosen for budget 2 when the study began)"
    assert tuned_description(adamtune.load("tiny", storage).settings) == tuned_description(more.settings)


def test_settings_stay_readable_by_versions_before_and_after(storage, tiny_ref):
    r = adamtune.tune(tiny_ref, budget=2, storage=storage, pruner="none")
    stored = json.loads(r.study.user_attrs[SETTINGS_ATTR])
    # an adamtune that predates space_budget builds its settings from exactly these fields
    fields = {f.name for f in dataclasses.fields(StudySettings)}
    assert set(stored) == fields - {"space_budget"} and r.study.user_attrs[SPACE_BUDGET_ATTR] == 2
    # fields a later version adds are left out here, not an error
    later = StudySettings.from_json(json.dumps({**stored, "added_later": 1}))
    assert later == dataclasses.replace(r.settings, space_budget=None)


def test_a_study_stored_before_space_budget_is_read_and_continued(storage, tiny_ref):
    adamtune.tune(tiny_ref, budget=2, storage=storage, pruner="none")
    study = optuna.load_study(study_name="tiny", storage=storage)
    study.set_user_attr(SPACE_BUDGET_ATTR, None)  # as a study written before the attribute existed
    old = adamtune.load("tiny", storage)
    assert old.settings.space_budget is None and tuned_description(old.settings) == "tuning lr — budget 2"
    # continued with a larger budget: its stored budget's rule gives its space, so it began there
    more = adamtune.tune(storage=storage, study="tiny", budget=6)
    assert tuned_description(more.settings) == "tuning lr — budget 6 (the space chosen for budget 2 when the study began)"
    # a space no budget rule gives stays "set by hand"
    hand = dataclasses.replace(more.settings, space_budget=None, budget=6)
    assert tuned_description(hand) == "tuning lr — budget 6 (set by hand)"


def test_settings_and_trials_changed_outside_adamtune_name_the_study_and_what_is_malformed(storage, tiny_ref):
    import pytest

    r = adamtune.tune(tiny_ref, budget=2, storage=storage, pruner="none")
    adamtune.tune(tiny_ref, budget=1, storage=storage, pruner="none", study="other")
    stored = json.loads(r.study.user_attrs[SETTINGS_ATTR])
    study = optuna.load_study(study_name="tiny", storage=storage)
    changed = "the database was changed outside adamtune"
    for value, reason in [
        ("{bad json", "not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        ("[1, 2]", "a JSON object must be stored, got list"),
        (json.dumps({**stored, "budget": "16"}), "budget must be a whole number, got '16'"),
        (json.dumps({**stored, "direction": "up"}), "direction must be minimize or maximize, got 'up'"),
        (json.dumps({**stored, "space": {"optimizer": "adamw"}}), "space: no 'dimensions'"),
    ]:
        study.set_user_attr(SETTINGS_ATTR, value)
        message = f"study 'tiny' has malformed adamtune settings ({reason}): {changed}"
        with pytest.raises(adamtune.StudyError) as e:
            adamtune.load("tiny", storage)
        assert str(e.value) == message
        malformed = {}
        assert [s.study_name for s in adamtune.list_studies(storage, malformed=malformed)] == ["other"]
        assert list(malformed) == ["tiny"] and str(malformed["tiny"]) == message
    # eps=0, which an older adamtune took: said as what it is, not as a change made by hand
    study.set_user_attr(SETTINGS_ATTR, json.dumps({**stored, "space": {**stored["space"], "fixed": [["eps", 0.0]]}}))
    with pytest.raises(adamtune.StudyError, match="^study 'tiny' was made with eps=0, which adamtune no longer reads"):
        adamtune.load("tiny", storage)
    study.set_user_attr(SETTINGS_ATTR, json.dumps(stored))
    trial_id = study.trials[1]._trial_id

    def set_attr(key, value):  # a finished trial: only raw SQL changes it, as another program would
        import sqlite3

        with sqlite3.connect(storage[len("sqlite:///"):]) as con:
            con.execute("update trial_user_attributes set value_json = ? where trial_id = ? and key = ?",
                        (json.dumps(value), trial_id, key))

    for key, value, reason in [
        ("steps", "abc", "a whole number >= 0 must be stored, got 'abc'"),
        ("curve", {"step": ["x"], "val_loss": [1.0]}, "invalid literal for int() with base 10: 'x', got {'step': ['x'], 'val_loss': [1.0]}"),
        ("config", [1], "a JSON object must be stored, got [1]"),
        ("engine", 5, "a string must be stored, got 5"),
    ]:
        good = study.trials[1].user_attrs[key]
        set_attr(key, value)
        with pytest.raises(adamtune.StudyError) as e:
            adamtune.load("tiny", storage)
        assert str(e.value) == f"study 'tiny', trial 1 has a malformed {key!r} attribute ({reason}): {changed}"
        set_attr(key, good)
    # an attribute not stored at all (a trial cut off before its values were written) is no error
    import sqlite3

    with sqlite3.connect(storage[len("sqlite:///"):]) as con:
        con.execute("delete from trial_user_attributes where trial_id = ? and key in ('curve', 'grad_norms', 'steps')",
                    (trial_id,))
    bare = adamtune.load("tiny", storage).trials[1]
    # its curve is then the objective's evaluations Optuna keeps
    evaluations = sorted(optuna.load_study(study_name="tiny", storage=storage).trials[1].intermediate_values)
    assert (bare.curve.steps, bare.grad_norms, bare.steps) == (tuple(evaluations), None, 0) and evaluations


def test_list_studies_names_the_optuna_studies_adamtune_did_not_make(storage):
    for name in ("plain", "another"):
        optuna.create_study(study_name=name, storage=storage)
    others = []
    assert adamtune.list_studies(storage, others=others) == []
    assert others == ["plain", "another"]
    assert adamtune.list_studies(storage) == []  # without others: left out, as before


def test_the_fixed_line_says_which_value_is_the_tasks_own():
    from adamtune.space import preset, with_overrides

    settings = StudySettings(
        workload="charlm", workload_name="charlm", optimizer="adamw", task="llm", budget=16, seed=0,
        sampler="quasi-random", pruner="asha", metric="val_loss", direction="minimize",
        space=with_overrides(preset("adamw", "llm", 16), ["warmup=0.05"]),
    )
    assert fixed_description(settings) == "fixed: beta2=0.95 (the llm preset's; PyTorch's default is 0.999), warmup=0.05"
    hand = dataclasses.replace(settings, space=with_overrides(preset("adamw", "llm", 16), ["beta2=0.98"]))
    assert fixed_description(hand) == "fixed: beta2=0.98"
    assert fixed_description(dataclasses.replace(settings, task="generic", space=preset("adamw", "generic", 16))) is None


def test_a_trial_in_training_shows_its_evaluations_so_far(storage, tiny_ref):
    # Another terminal watching a long study: the trial's curve and steps are stored only at its
    # end, but each evaluation is in the database as it comes (Optuna's intermediate values).
    adamtune.tune(tiny_ref, budget=1, storage=storage, pruner="none")
    study = optuna.load_study(study_name="tiny", storage=storage)
    trial = study.ask()
    trial.report(0.9, 10)
    trial.report(0.7, 20)
    (running,) = [t for t in adamtune.load("tiny", storage).trials if t.state == adamtune.TrialState.RUNNING]
    assert running.steps == 20 and running.value is None
    assert running.curve.steps == (10, 20) and running.curve.metrics == {"val_loss": (0.9, 0.7)}
    study.tell(trial, state=optuna.trial.TrialState.FAIL)  # cut short or failed before its end: as far as it got
    (failed,) = [t for t in adamtune.load("tiny", storage).trials if t.state == adamtune.TrialState.FAILED]
    assert failed.steps == 20 and failed.curve.steps == (10, 20)
