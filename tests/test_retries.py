import optuna
import pytest
from typer.testing import CliRunner

import adamtune
import adamtune.study as study_module
from adamtune import TrialState
from adamtune.cli import app
from adamtune.report.terminal import to_json
from adamtune.retries import point_of, retry_cut_short
from adamtune.storage import ask_many as storage_ask_many, tell_many


def _by_point(result):
    """{point: (params, value)} of the trials that trained to the end, and the retries' points."""
    done = {}
    retries = sorted(t.number for t in result.trials if t.retry_of is not None)
    for t in result.trials:
        if t.state == TrialState.COMPLETE:
            done[point_of(t.number, t.retry_of, retries)] = (t.params, t.value)
    return done


def _stop_at_telling(monkeypatch, batch_number):
    """Ctrl-C when the ``batch_number``-th batch (from 1) has trained, before it is stored."""
    calls = []

    def told(study, finished):
        calls.append(1)
        if len(calls) == batch_number:
            raise KeyboardInterrupt
        return tell_many(study, finished)

    monkeypatch.setattr(study_module, "tell_many", told)


@pytest.mark.parametrize("sampler", ["quasi-random", "random"])
def test_a_study_stopped_and_continued_holds_the_trials_of_one_run_without_a_stop(storage, tmp_path, tiny_ref,
                                                                                 monkeypatch, sampler):
    whole = adamtune.tune(tiny_ref, budget=10, batch=4, pruner="none", sampler=sampler, seed=5,
                          storage=f"sqlite:///{tmp_path / 'whole.db'}")
    _stop_at_telling(monkeypatch, 2)  # trials 4-7 are cut short
    with pytest.raises(KeyboardInterrupt):
        adamtune.tune(tiny_ref, budget=10, batch=4, pruner="none", sampler=sampler, seed=5, storage=storage)
    monkeypatch.undo()
    notes = []
    resumed = adamtune.tune(storage=storage, study="tiny", notice=notes.append)
    assert "4 trials cut short earlier: run again first, with the same hyperparameters and initial weights" in notes
    # 0-3 trained, 4-7 cut short, 8-11 retry their points, 12-13 are points 8 and 9
    assert [t.number for t in resumed.trials if t.interrupted] == [4, 5, 6, 7]
    assert [t.retry_of for t in resumed.trials] == [None] * 8 + [4, 5, 6, 7] + [None] * 2
    assert resumed.count(TrialState.COMPLETE) == whole.count(TrialState.COMPLETE) == 10
    # the same points, the same initial weights: the same values as the run without a stop
    got, want = _by_point(resumed), _by_point(whole)
    assert sorted(got) == sorted(want) == list(range(10))
    # show says which trial ran again which
    shown = CliRunner().invoke(app, ["show", "--storage", storage]).stdout
    assert ("4 trials reran trials cut short, with the same hyperparameters and initial weights: "
            "8 for 4, 9 for 5, 10 for 6, 11 for 7") in " ".join(shown.split())
    rows = to_json(adamtune.load("tiny", storage))["trials"]
    assert [row.get("retry_of_trial") for row in rows] == [None] * 8 + [4, 5, 6, 7] + [None] * 2
    for p in range(10):
        assert got[p][0] == pytest.approx(want[p][0], rel=1e-12), p
        assert got[p][1] == pytest.approx(want[p][1], rel=1e-6), p


def test_a_retry_cut_short_again_is_retried_once_more_and_a_retry_waiting_is_not_doubled(storage, tiny_ref,
                                                                                        monkeypatch):
    _stop_at_telling(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        adamtune.tune(tiny_ref, budget=2, batch=2, pruner="none", storage=storage)
    study = optuna.load_study(study_name="tiny", storage=storage)
    first = [t.params for t in study.get_trials()]
    names = first[0].keys()
    assert retry_cut_short(study, 1, names) == [0]  # no more than the budget has room for
    assert retry_cut_short(study, 1, names) == []  # the retry waiting takes that room
    assert retry_cut_short(study, 5, names) == [1]  # point 0 has a retry waiting
    assert retry_cut_short(study, 5, names) == []
    _stop_at_telling(monkeypatch, 1)  # the retries are cut short in turn
    with pytest.raises(KeyboardInterrupt):
        adamtune.tune(storage=storage, study="tiny")
    monkeypatch.undo()
    r = adamtune.tune(storage=storage, study="tiny", notice=lambda m: None)
    assert [t.retry_of for t in r.trials] == [None, None, 0, 1, 0, 1]
    assert [t.state for t in r.trials[4:]] == [TrialState.COMPLETE] * 2
    assert [t.params for t in study.get_trials()[4:]] == first  # point by point
    assert r.count(TrialState.FAILED) == 4 and r.count(TrialState.COMPLETE) == 2


def test_trials_never_cut_short_are_not_retried(storage, tiny_ref):
    adamtune.tune(tiny_ref, budget=3, batch=3, pruner="none", storage=storage)
    r = adamtune.tune(storage=storage, study="tiny", budget=4)
    assert [t.retry_of for t in r.trials] == [None] * 4


def test_a_trial_cut_short_while_drawing_is_retried_with_nothing_fixed():
    study = optuna.create_study()
    trial = study.ask()
    trial.suggest_float("lr", 1e-5, 1e-1, log=True)  # weight_decay not drawn yet
    trial.set_user_attr("interrupted", True)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert retry_cut_short(study, 5, ["lr", "weight_decay"]) == [0]
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [{}]  # the point's sampler draws them all again
    assert [t.user_attrs["retry_of"] for t in waiting] == [0]


def test_a_retry_another_worker_makes_while_this_one_asks_gives_no_two_trials_one_point(storage, tiny_ref, monkeypatch):
    adamtune.tune(tiny_ref, budget=2, batch=1, pruner="none", sampler="random", storage=storage)
    calls = []

    def ask_many(study, n):
        calls.append(n)
        if len(calls) == 1:  # another worker: a trial cut short, its retry made and taken
            other = optuna.load_study(study_name="tiny", storage=storage)
            t = other.ask()
            t.set_user_attr("interrupted", True)
            other.tell(t, state=optuna.trial.TrialState.FAIL)
            assert retry_cut_short(other, 1, []) == [2]
            other.ask()
        return storage_ask_many(study, n)

    monkeypatch.setattr(study_module, "ask_many", ask_many)
    r = adamtune.tune(storage=storage, study="tiny", budget=6, batch=1)
    retries = sorted(t.number for t in r.trials if t.retry_of is not None)
    points = [point_of(t.number, t.retry_of, retries) for t in r.trials]
    assert points == [0, 1, 2, 2, 3, 4, 5]  # trial 3 is the other worker's retry of point 2
    done = [tuple(t.params.values()) for t in r.trials if t.state == TrialState.COMPLETE]
    assert len(done) == len(set(done)) == 5


@pytest.mark.parametrize("sampler, batch", [("quasi-random", 4), ("tpe", 1)])
def test_a_point_retried_by_two_workers_at_once_runs_once(storage, tiny_ref, monkeypatch, sampler, batch):
    _stop_at_telling(monkeypatch, 1)  # trials 0-1 cut short
    with pytest.raises(KeyboardInterrupt):
        adamtune.tune(tiny_ref, budget=4, batch=2, pruner="none", sampler=sampler, storage=storage)
    monkeypatch.undo()
    study = optuna.load_study(study_name="tiny", storage=storage)
    names = study.get_trials()[0].params.keys()
    # two workers started at once: each looked before the other enqueued
    looked = study.get_trials
    monkeypatch.setattr(optuna.Study, "get_trials", lambda self, *a, **k: looked(*a, **k)[:2])
    assert retry_cut_short(study, 4, names) == [0, 1]
    assert retry_cut_short(study, 4, names) == [0, 1]
    monkeypatch.undo()
    r = adamtune.tune(storage=storage, study="tiny", batch=batch)
    assert [t.retry_of for t in r.trials] == [None, None, 0, 1, 0, 1, None, None]
    twins = {t.number: t for t in r.trials if t.number in (4, 5)}
    assert all(t.state == TrialState.FAILED and t.interrupted for t in twins.values())
    assert twins[4].error == "not run: trial 2 runs this point again already (two workers retried it at once)"
    assert [t.state for t in r.trials if t.number in (2, 3, 6, 7)] == [TrialState.COMPLETE] * 4


def test_in_objective_mode_a_trial_run_again_gets_the_same_seed_and_config(storage):
    seen = []

    def objective(config, trial):
        seen.append((trial.number, trial.seed, config.lr))
        if len(seen) == 2:
            raise KeyboardInterrupt  # trial 1 cut short
        return config.lr

    with pytest.raises(KeyboardInterrupt):
        adamtune.tune(objective, budget=3, storage=storage, study="own")
    adamtune.tune(objective, budget=3, storage=storage, study="own", notice=lambda m: None)
    by_number = {n: (seed, lr) for n, seed, lr in seen}
    assert [n for n, _, _ in seen] == [0, 1, 2, 3]
    assert by_number[2] == by_number[1]  # trial 2 runs trial 1 again
    assert len({seed for seed, _ in by_number.values()}) == 3  # points 0, 1 and 2


def test_a_twin_retry_whose_parameters_could_not_be_drawn_just_fails(storage, monkeypatch):
    import adamtune.space as space_module

    def objective(config, trial):
        if trial.number == 1 and len(calls) == 1:
            calls.append(1)
            raise KeyboardInterrupt
        calls.append(1)
        return config.lr

    calls = []
    with pytest.raises(KeyboardInterrupt):
        adamtune.tune(objective, budget=3, storage=storage, study="own", sampler="tpe")
    study = optuna.load_study(study_name="own", storage=storage)
    looked = study.get_trials
    monkeypatch.setattr(optuna.Study, "get_trials", lambda self, *a, **k: looked(*a, **k)[:2])
    assert retry_cut_short(study, 3, []) == retry_cut_short(study, 3, []) == [1]  # two workers at once
    monkeypatch.undo()
    real = space_module.SearchSpace.suggest

    def suggest(self, trial):
        if trial.number == 3:
            raise RuntimeError("no parameters for trial 3")
        return real(self, trial)

    monkeypatch.setattr(space_module.SearchSpace, "suggest", suggest)
    notes = []
    r = adamtune.tune(objective, storage=storage, study="own", notice=notes.append)
    assert notes == []
    assert r.trials[3].state == TrialState.FAILED and not r.trials[3].interrupted
    assert "no parameters for trial 3" in r.trials[3].error
    assert r.trials[2].state == TrialState.COMPLETE and r.trials[2].retry_of == 1
