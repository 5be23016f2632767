import optuna
import pytest

from adamtune.storage import ask_many, open_storage, report_many, set_user_attrs, should_prune_many, writes_held


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


def test_report_many_stores_what_trial_report_stores_in_two_statements(tmp_path, sql_log):
    import math

    values = [0.5, -1e300, float("nan"), float("inf"), float("-inf"), 7]
    one, many = (_study(f"sqlite:///{tmp_path / f'{name}.db'}") for name in ("one", "many"))
    by_one, by_many = [one.ask() for _ in values], [many.ask() for _ in values]
    for step in (3, 9):
        for t, v in zip(by_one, values):
            t.report(v, step)
        with sql_log(many) as log:
            report_many(list(zip(by_many, values)), step)
        statements = [q for q in log if q not in ("<commit>", "<rollback>")]
        assert len(statements) == 2, statements  # the trials' states, one multi-row insert
    with pytest.warns(UserWarning, match="already reported"):  # as trial.report: ignored
        report_many([(by_many[0], 123.0)], step=9)

    def stored(study):
        return [{s: "nan" if math.isnan(v) else v for s, v in t.intermediate_values.items()} for t in study.get_trials()]

    assert stored(many) == stored(one)
    assert stored(many)[2] == {3: "nan", 9: "nan"} and stored(many)[0] == {3: 0.5, 9: 0.5}
    assert [t._cached_frozen_trial.intermediate_values for t in by_many][5] == {3: 7.0, 9: 7.0}


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


def _suggest(trial):
    return {"lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True), "layers": trial.suggest_int("layers", 1, 4),
            "act": trial.suggest_categorical("act", ["relu", "gelu"])}


def _sampled(trial):
    return trial.number, trial.params, trial.distributions, trial.state, trial.user_attrs, trial.system_attrs


@pytest.mark.parametrize("sampler", ["qmc", "tpe"])
def test_ask_many_gives_the_trials_study_ask_gives(tmp_path, sampler):
    """Two identical studies (two finished trials, one enqueued): asked one by one, and
    through ask_many with params and attributes written together."""
    def make(name):
        make_sampler = {"qmc": lambda: optuna.samplers.QMCSampler(seed=3),
                        "tpe": lambda: optuna.samplers.TPESampler(seed=3, n_startup_trials=2)}[sampler]
        s = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / name}"), sampler=make_sampler())
        for v in (0.3, 0.1):
            t = s.ask()
            _suggest(t)
            s.tell(t, v)
        s.enqueue_trial({"lr": 0.01, "layers": 2, "act": "gelu"})
        return s

    one, many = make("one.db"), make("many.db")
    for _ in range(4):
        t = one.ask()
        _suggest(t)
        t.set_user_attr("engine", "x")
    for t in ask_many(many, 4):
        with writes_held(t) as held:
            _suggest(t)
            held.set_user_attrs({"engine": "x"})
        assert t.user_attrs == {"engine": "x"} and t.params  # the Trial object sees them too
    got, expected = [_sampled(t) for t in many.get_trials()], [_sampled(t) for t in one.get_trials()]
    assert [(g[0], g[3]) for g in got] == [(e[0], e[3]) for e in expected]
    assert got == expected
    assert got[2][1] == {"lr": 0.01, "layers": 2, "act": "gelu"}  # the enqueued trial came first
    assert len(got) == 6


def test_writes_held_stores_params_and_attrs_in_one_commit(tmp_path, sql_log):
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}"))
    t = study.ask()
    with sql_log(study) as log, writes_held(t) as held:
        values = _suggest(t)  # the sampler's reads of the study commit too: not counted
        held.set_user_attrs({"engine": "batched (K=4)", "config": {"lr": values["lr"]}})
    writes, transaction = [], []  # writes: the statements of each committed transaction that wrote
    for q in log:
        if q != "<commit>":
            transaction.append(q)
            continue
        if any(not s.startswith("SELECT") for s in transaction):
            writes.append(transaction)
        transaction = []
    assert len(writes) == 1 and sum(q.startswith("INSERT INTO trial_params") for q in writes[0]) == 1, writes
    again = optuna.load_study(study_name=study.study_name, storage=open_storage(f"sqlite:///{tmp_path / 's.db'}"))
    stored = again.get_trials()[0]
    assert stored.params == values and stored.user_attrs == {"engine": "batched (K=4)", "config": {"lr": values["lr"]}}
    assert stored.distributions == t.distributions


def test_writes_held_refuses_an_incompatible_distribution_as_optuna_does(study):
    t = study.ask()
    t.suggest_float("x", 0, 1)
    study.tell(t, 1.0)
    t = study.ask()
    with pytest.raises(ValueError, match="[Cc]annot set different distribution kind"):
        with writes_held(t):
            t.suggest_categorical("x", ["a", "b"])
    assert study.get_trials()[1].params == {} and t.params == {}  # as when Optuna refuses it


def test_writes_held_keeps_what_was_suggested_before_an_error(study):
    t = study.ask()
    with pytest.raises(ZeroDivisionError):
        with writes_held(t) as held:
            t.suggest_float("x", 0, 1)
            held.set_user_attrs({"never": True})
            1 / 0
    stored = study.get_trials()[0]
    assert list(stored.params) == ["x"] and stored.user_attrs == {}
    assert t.storage is study._storage  # the trial writes straight through again


# Pruners asked about a whole batch at once must answer as one-by-one should_prune calls do,
# leaving the same rung records behind: two identical studies, one asked each way.
PRUNERS = {
    "asha": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3),
    "asha-auto": lambda: optuna.pruners.SuccessiveHalvingPruner(),
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2),
    "percentile": lambda: optuna.pruners.PercentilePruner(25.0, n_startup_trials=1),
    "threshold": lambda: optuna.pruners.ThresholdPruner(upper=2.5),  # not snapshot-able: asked one by one
}


def _curve(member: int, step: int) -> float:
    # members cross each other, so rankings change between steps
    return (1.0 + 0.37 * ((member * 7) % 5)) / (1.0 + step * (0.05 + 0.04 * ((member * 3) % 4)))


@pytest.mark.parametrize(("where", "pruner"), [
    # The bulk write of rung records needs a database; what the pruners read does not.
    ("sqlite", "asha"), ("sqlite", "asha-auto"), *(("in-memory", p) for p in sorted(PRUNERS)),
])
def test_should_prune_many_answers_and_records_as_one_by_one_calls(tmp_path, pruner, where):
    def make(name):
        storage = optuna.storages.InMemoryStorage() if where == "in-memory" else open_storage(f"sqlite:///{tmp_path / name}")
        study = optuna.create_study(storage=storage, pruner=PRUNERS[pruner]())
        for n in range(4):  # finished trials, with rung records of their own where the pruner writes them
            t = study.ask()
            for step in range(1, 13):
                t.report(_curve(n, step), step)
                t.should_prune()
            study.tell(t, _curve(n, 12))
        return study, [study.ask() for _ in range(7)]

    (one, one_trials), (many, many_trials) = make("one.db"), make("many.db")
    alive = list(range(7))
    for step in range(1, 13):
        for study_trials in (one_trials, many_trials):
            report_many([(study_trials[m], _curve(m + 4, step)) for m in alive], step)
        expected = [one_trials[m].should_prune() for m in alive]
        assert should_prune_many([many_trials[m] for m in alive]) == expected, f"step {step}"
        for m, pruned in zip(list(alive), expected):
            if pruned:
                alive.remove(m)
                one.tell(one_trials[m], state=optuna.trial.TrialState.PRUNED)
                many.tell(many_trials[m], state=optuna.trial.TrialState.PRUNED)
    assert [t.system_attrs for t in many.get_trials()] == [t.system_attrs for t in one.get_trials()]
    assert [t.state for t in many.get_trials()] == [t.state for t in one.get_trials()]
    if pruner != "threshold":
        assert 0 < len(alive) < 7, "the case should prune some members and keep others"


def test_should_prune_many_writes_each_record_when_the_transaction_fails(tmp_path):
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}"),
                                pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2))
    done = study.ask()
    done.report(0.1, 1)
    assert not done.should_prune()  # its rung record: 0.1
    study.tell(done, 0.1)
    a, b = study.ask(), study.ask()
    report_many([(a, 0.5), (b, 0.05)], step=1)
    backend = study._storage._backend
    real = backend._set_trial_attr_without_commit

    calls = []

    def fail_first(*args, **kwargs):  # the bulk write's first record fails: it all rolls back
        calls.append(args[2:4])
        if len(calls) == 1:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    backend._set_trial_attr_without_commit = fail_first
    try:
        assert should_prune_many([a, b]) == [True, False]
    finally:
        backend._set_trial_attr_without_commit = real
    # then each record was written on its own
    assert calls == [(a._trial_id, "completed_rung_0"), (a._trial_id, "completed_rung_0"), (b._trial_id, "completed_rung_0")]
    assert {t.number: t.system_attrs.get("completed_rung_0") for t in study.get_trials()} == {0: 0.1, 1: 0.5, 2: 0.05}
