"""Reading a study back: its settings and the line that describes what it tunes."""

import dataclasses
import json

import optuna

import adamtune
from adamtune.results import SETTINGS_ATTR, SPACE_BUDGET_ATTR, StudySettings, tuned_description


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
