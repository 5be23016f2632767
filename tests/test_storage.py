import optuna
import pytest

from adamtune.storage import open_storage, report_many, set_user_attrs


def _study(url):
    storage = optuna.storages.InMemoryStorage() if url is None else open_storage(url)
    return optuna.create_study(storage=storage, pruner=optuna.pruners.MedianPruner(n_startup_trials=1))


@pytest.fixture(params=["sqlite", "in-memory"])
def study(request, tmp_path):
    return _study(f"sqlite:///{tmp_path / 's.db'}" if request.param == "sqlite" else None)


def test_report_many_writes_every_value_where_report_would(study):
    trials = [study.ask() for _ in range(3)]
    report_many([(t, 0.5 + i) for i, t in enumerate(trials)], step=10)
    report_many([(t, 0.25 + i) for i, t in enumerate(trials[:2])], step=20)
    stored = {t.number: t.intermediate_values for t in study.get_trials()}
    assert stored == {0: {10: 0.5, 20: 0.25}, 1: {10: 1.5, 20: 1.25}, 2: {10: 2.5}}
    # the Trial objects see their own values, as after trial.report (which warns on a repeat)
    with pytest.warns(UserWarning, match="already reported"):
        trials[0].report(9.0, 10)
    # and the pruner reads them from the storage
    study.tell(trials[0], 0.25)
    report_many([(trials[1], 100.0)], step=30)
    assert not trials[1].should_prune()  # no trial reached step 30 before it
    report_many([(trials[2], 100.0)], step=20)
    assert trials[2].should_prune()  # 100 at step 20 is worse than the finished trial's 0.25


def test_a_finished_trial_is_refused_and_the_others_still_get_their_values(tmp_path):
    study = _study(f"sqlite:///{tmp_path / 's.db'}")
    a, b = study.ask(), study.ask()
    study.tell(a, 1.0)
    with pytest.raises(RuntimeError, match="has already finished"):
        report_many([(a, 0.1), (b, 0.2)], step=5)
    assert study.get_trials()[1].intermediate_values == {5: 0.2}


def test_set_user_attrs_writes_them_all(study):
    t = study.ask()
    set_user_attrs(t, {"engine": "batched (K=4)", "config": {"lr": 0.001, "betas": [0.9, 0.999]}})
    set_user_attrs(t, {"engine": "sequential"})
    assert study.get_trials()[0].user_attrs == {"engine": "sequential", "config": {"lr": 0.001, "betas": [0.9, 0.999]}}
    assert t.user_attrs["engine"] == "sequential"


def test_reopened_sqlite_study_holds_the_values(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    t = study.ask()
    report_many([(t, 0.5)], step=1)
    set_user_attrs(t, {"k": 1})
    again = optuna.load_study(study_name="s", storage=open_storage(url)).get_trials()[0]
    assert (again.intermediate_values, again.user_attrs) == ({1: 0.5}, {"k": 1})
