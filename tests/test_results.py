"""Reading a study back: its settings and the line that describes what it tunes."""

import json

import adamtune
from adamtune.results import StudySettings, tuned_description


def test_a_larger_budget_keeps_the_space_and_says_so(storage, tiny_ref):
    first = adamtune.tune(tiny_ref, budget=2, storage=storage, pruner="none")
    assert tuned_description(first.settings) == "tuning lr — budget 2"
    more = adamtune.tune(storage=storage, study="tiny", budget=6)
    assert more.settings.space.tuned == ("lr",) and more.settings.space_budget == 2
    # not "set by hand": the budget rule chose it, for the budget the study began with
    assert tuned_description(more.settings) == "tuning lr — budget 6 (the space chosen for budget 2 when the study began)"
    # settings stored before space_budget existed read back as before
    old = json.loads(more.settings.to_json())
    del old["space_budget"]
    assert tuned_description(StudySettings.from_json(json.dumps(old))) == "tuning lr — budget 6 (set by hand)"
