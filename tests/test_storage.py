import contextlib
import os
import subprocess
import sys
import threading

import optuna
import pytest

from adamtune.errors import StorageError
from adamtune.storage import (
    ask_many, check_url, open_storage, report_many, set_user_attrs, settle, should_prune_many, tell_many,
    write_kept, writes_held, writes_kept,
)


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


@pytest.mark.parametrize("where", ["one transaction", "one by one"])
def test_a_trial_finished_elsewhere_is_skipped_and_named_and_the_others_get_their_values(tmp_path, where):
    # another worker ended it (as lost, this worker's heartbeat having stopped)
    study = _study(f"sqlite:///{tmp_path / 's.db'}") if where == "one transaction" else _study(None)
    a, b = study.ask(), study.ask()
    study.tell(a, 1.0)
    assert report_many([(a, 0.1), (b, 0.2)], step=5) == [a.number]
    assert [t.intermediate_values for t in study.get_trials()] == [{}, {5: 0.2}]


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


# TPE (a constant liar by default) reads the running trials' parameters when it draws: each
# trial's must be stored before the next is drawn. QMC and random sampling read none.
@pytest.mark.parametrize("sampler, writes", [
    ("qmc", "each trial's together"), ("qmc", "all trials' together"), ("random", "all trials' together"),
    ("tpe", "each trial's together"),
])
def test_ask_many_gives_the_trials_study_ask_gives(tmp_path, sampler, writes):
    """Two identical studies (two finished trials, one enqueued): asked one by one, and
    through ask_many with params and attributes written together, per trial or for all."""
    def make(name):
        make_sampler = {"qmc": lambda: optuna.samplers.QMCSampler(seed=3),
                        "random": lambda: optuna.samplers.RandomSampler(seed=3),
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
    asked, kept = [], []
    for t in ask_many(many, 4):
        asked.append(t)
        if writes == "each trial's together":
            with writes_held(t) as held:
                _suggest(t)
                held.set_user_attrs({"engine": "x"})
        else:
            with writes_kept(t) as held:
                _suggest(t)
                held.set_user_attrs({"engine": "x"})
            kept.append((t, held))
    assert write_kept(kept) == [None] * len(kept)
    for t, stored in zip(asked, many.get_trials()[2:], strict=True):
        assert t.user_attrs == {"engine": "x"} and t.params  # the Trial object sees them too
        assert t.storage is many._storage and t.number == stored.number
        assert t.datetime_start == stored.datetime_start and t.datetime_start is not None
    got, expected = [_sampled(t) for t in many.get_trials()], [_sampled(t) for t in one.get_trials()]
    assert [(g[0], g[3]) for g in got] == [(e[0], e[3]) for e in expected]
    assert got == expected
    assert got[2][1] == {"lr": 0.01, "layers": 2, "act": "gelu"}  # the enqueued trial came first
    assert len(got) == 6


def test_ask_many_makes_each_trial_in_one_commit_and_reads_none_back(tmp_path, sql_log):
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}"))
    study.ask()
    with sql_log(study) as log:
        trials = list(ask_many(study, 3))
    first = log.index("<commit>")  # the one look for enqueued trials
    made = log[first + 1:]
    assert made.count("<commit>") == 3 and sum(q.startswith("INSERT INTO trials ") for q in made) == 3, made
    assert not [q for q in made if "FROM trial_params" in q or "FROM trial_user_attributes" in q], made
    assert [t.number for t in trials] == [1, 2, 3]
    trials[0].suggest_float("x", 0, 1)  # the Trial writes through the study's storage as usual
    assert study.get_trials()[1].params == trials[0].params and study.get_trials()[2].params == {}


def test_write_kept_stores_many_trials_in_one_commit(tmp_path, sql_log):
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}"))
    kept = []
    for t in ask_many(study, 3):
        with writes_kept(t) as held:
            _suggest(t)
            held.set_user_attrs({"member": t.number})
        kept.append((t, held))
    assert study.get_trials()[0].params == {}  # kept back until write_kept
    with sql_log(study) as log:
        assert write_kept(kept) == [None, None, None]
    assert log.count("<commit>") == 1 and sum(q.startswith("INSERT INTO trial_params") for q in log) == 3, log
    stored = study.get_trials()
    assert [s.params for s in stored] == [t.params for t, _ in kept] and all(s.params for s in stored)
    assert [s.user_attrs for s in stored] == [{"member": i} for i in range(3)]


def test_write_kept_stores_the_others_when_one_trial_cannot_be(study):
    t = study.ask()
    t.suggest_float("x", 0, 1)
    study.tell(t, 1.0)
    kept = []
    for i, t in enumerate([study.ask() for _ in range(3)]):
        with writes_kept(t) as held:
            if i == 1:  # an incompatible distribution: Optuna refuses it
                t.suggest_categorical("x", ["a", "b"])
            else:
                t.suggest_float("x", 0, 1)
            held.set_user_attrs({"i": i})
        kept.append((t, held))
    errors = write_kept(kept)
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], ValueError) and "distribution" in str(errors[1])
    stored = study.get_trials()[1:]
    assert [sorted(s.params) for s in stored] == [["x"], [], ["x"]]
    assert stored[0].user_attrs == {"i": 0} and stored[2].user_attrs == {"i": 2}


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


@contextlib.contextmanager
def first_check_failing(study):
    """The storage's first check of a trial's state fails (a one-transaction write then rolls
    back as a whole); the later checks pass. Yields the ids of the trials checked."""
    backend = study._storage._backend
    real, calls = backend.check_trial_is_updatable, []

    def fail_first(trial_id, state):
        calls.append(trial_id)
        if len(calls) == 1:
            raise RuntimeError("disk full")
        return real(trial_id, state)

    backend.check_trial_is_updatable = fail_first
    try:
        yield calls
    finally:
        backend.check_trial_is_updatable = real


def test_should_prune_many_writes_each_record_when_the_transaction_fails(tmp_path):
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}"),
                                pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2))
    done = study.ask()
    done.report(0.1, 1)
    assert not done.should_prune()  # its rung record: 0.1
    study.tell(done, 0.1)
    a, b = study.ask(), study.ask()
    report_many([(a, 0.5), (b, 0.05)], step=1)
    with first_check_failing(study) as calls:
        assert should_prune_many([a, b]) == [True, False]
    # then each record was written on its own
    assert calls == [a._trial_id, a._trial_id, b._trial_id]
    assert {t.number: t.system_attrs.get("completed_rung_0") for t in study.get_trials()} == {0: 0.1, 1: 0.5, 2: 0.05}


# tell_many must store what set_user_attrs + study.tell store, and call the sampler as they do:
# two identical studies, told each way.
class _Recording(optuna.samplers.TPESampler):
    """TPE (which reads the told values back when it samples), noting every after_trial call."""

    def __init__(self):
        super().__init__(seed=5, n_startup_trials=3)
        self.calls = []

    def after_trial(self, study, trial, state, values):
        self.calls.append((trial.number, state, values, dict(trial.user_attrs), dict(trial.intermediate_values)))
        super().after_trial(study, trial, state, values)


S = optuna.trial.TrialState
TOLD = [  # (value, state, attrs, reported values)
    (0.5, None, {"steps": 40, "curve": {"step": [10, 20]}}, {10: 0.9, 20: 0.5}),
    (float("inf"), None, {"state": "diverged", "diverged_at": 7}, {}),  # a diverged trial: inf is a value
    (None, S.PRUNED, {"steps": 20}, {10: 0.8, 20: 0.7}),  # pruned: its last report is its value
    (None, S.PRUNED, {}, {}),  # pruned before any report: no value
    (float("nan"), None, {"steps": 3}, {}),  # not a number: FAIL, with Optuna's warning
    (None, None, {}, {}),  # no value at all: FAIL, with Optuna's warning
    (0.25, S.COMPLETE, {"engine": "x"}, {5: 0.25}),
    (None, S.FAIL, {"traceback": "boom"}, {}),
]


def _told(study):
    return [(t.number, t.state, t.values, t.user_attrs, t.intermediate_values, t.datetime_complete is not None)
            for t in study.get_trials()]


@pytest.mark.parametrize("where", ["sqlite", "in-memory"])
def test_tell_many_stores_and_samples_what_study_tell_does(tmp_path, where):
    def make(name):
        storage = optuna.storages.InMemoryStorage() if where == "in-memory" else open_storage(f"sqlite:///{tmp_path / name}")
        study = optuna.create_study(storage=storage, sampler=_Recording())
        trials = [study.ask() for _ in TOLD]
        for t, (_, _, _, reported) in zip(trials, TOLD):
            t.suggest_float("x", 0.0, 1.0)
            for step, v in reported.items():
                t.report(v, step)
        return study, trials

    (one, one_trials), (many, many_trials) = make("one.db"), make("many.db")
    with pytest.warns(UserWarning) as by_one:
        for t, (value, state, attrs, _) in zip(one_trials, TOLD):
            set_user_attrs(t, attrs)
            one.tell(t, value, state=state)
    with pytest.warns(UserWarning) as by_many:
        tell_many(many, [(t, value, state, attrs) for t, (value, state, attrs, _) in zip(many_trials, TOLD)])
    assert [str(w.message) for w in by_many] == [str(w.message) for w in by_one]  # the two FAILs
    assert _told(many) == _told(one)
    assert [s for _, s, *_ in _told(many)] == [S.COMPLETE, S.COMPLETE, S.PRUNED, S.PRUNED, S.FAIL, S.FAIL,
                                               S.COMPLETE, S.FAIL]
    assert many.sampler.calls == one.sampler.calls and len(many.sampler.calls) == len(TOLD)
    assert [t.user_attrs for t in many_trials] == [t.user_attrs for t in one_trials]  # Trial objects see them
    # TPE, past its start-up trials, proposes the same next point from what was told
    nxt = [s.ask().suggest_float("x", 0.0, 1.0) for s in (one, many)]
    assert nxt[0] == nxt[1]


def test_tell_many_writes_a_batch_in_one_commit(tmp_path, sql_log):
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}"))
    trials = [study.ask() for _ in range(16)]
    report_many([(t, 0.1 * i) for i, t in enumerate(trials)], step=1)
    with sql_log(study) as log:
        tell_many(study, [(t, 0.1 * i, None, {"steps": 1, "curve": {"step": [1]}}) for i, t in enumerate(trials)])
    assert log.count("<commit>") == 2, log  # the read of the trials, then every write together
    # (study.tell + set_user_attrs: 64 commits and 300 statements for these 16)
    written = log[log.index("<commit>") + 1:-1]
    # states; attributes there; new attributes; values; states (multi-row inserts, one executemany)
    assert [q.split()[0] for q in written] == ["SELECT", "SELECT", "INSERT", "DELETE", "INSERT", "UPDATE"], written
    assert [(t.state, t.value, t.user_attrs["steps"]) for t in study.get_trials()] == [
        (S.COMPLETE, 0.1 * i, 1) for i in range(16)]


def test_tell_many_tells_a_multi_objective_study_through_optunas_path(tmp_path):
    study = optuna.create_study(directions=["minimize", "maximize"],
                                storage=open_storage(f"sqlite:///{tmp_path / 's.db'}"))
    a, b = study.ask(), study.ask()
    tell_many(study, [(a, [1.0, 2.0], None, {"k": 1}), (b, None, S.FAIL, {})])
    assert [(t.state, t.values, t.user_attrs) for t in study.get_trials()] == [
        (S.COMPLETE, [1.0, 2.0], {"k": 1}), (S.FAIL, None, {})]


def test_tell_many_tells_the_others_when_one_cannot_be_told(tmp_path):
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}"))
    a, b, c = study.ask(), study.ask(), study.ask()
    study.tell(b, 1.0)  # finished elsewhere: skipped and named
    assert tell_many(study, [(a, 0.5, None, {"k": 1}), (b, 0.7, None, {"k": 2}), (c, None, S.PRUNED, {})]) == [1]
    assert [(t.state, t.value, t.user_attrs) for t in study.get_trials()] == [
        (S.COMPLETE, 0.5, {"k": 1}), (S.COMPLETE, 1.0, {}), (S.PRUNED, None, {})]


@pytest.mark.parametrize("where", ["in-memory", "multi-objective"])
def test_optunas_path_tells_the_others_when_one_cannot_be_told(tmp_path, where):
    storage = optuna.storages.InMemoryStorage() if where == "in-memory" else open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=storage, directions=["minimize"] * (2 if where == "multi-objective" else 1))
    a, b = study.ask(), study.ask()
    value = [1.0, 2.0] if where == "multi-objective" else 1.0
    study.tell(a, value)
    assert tell_many(study, [(a, value, None, {}), (b, value, None, {"k": 2})]) == [0]
    assert [(t.state, t.user_attrs) for t in study.get_trials()] == [(S.COMPLETE, {}), (S.COMPLETE, {"k": 2})]


def test_tell_many_writes_each_trial_when_the_transaction_fails(tmp_path):
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}"))
    a, b = study.ask(), study.ask()
    with first_check_failing(study) as calls:
        tell_many(study, [(a, 0.5, None, {"k": 1}), (b, None, S.PRUNED, {"k": 2})])
    # then each trial's writes went through the storage's own calls
    assert calls[0] == a._trial_id and {a._trial_id, b._trial_id} <= set(calls[1:])
    assert [(t.state, t.value, t.user_attrs) for t in study.get_trials()] == [
        (S.COMPLETE, 0.5, {"k": 1}), (S.PRUNED, None, {"k": 2})]


def test_optunas_schema_scripts_are_read_once_and_still_checked(tmp_path, monkeypatch):
    import sqlite3

    from alembic.script import ScriptDirectory

    made = []
    real = ScriptDirectory.from_config.__func__
    monkeypatch.setattr(ScriptDirectory, "from_config", classmethod(lambda cls, *a, **k: made.append(1) or real(cls, *a, **k)))
    for name in ("a.db", "b.db"):  # two new studies, each opened again
        url = f"sqlite:///{tmp_path / name}"
        optuna.create_study(study_name="s", storage=open_storage(url))
        assert [t.number for t in optuna.load_study(study_name="s", storage=open_storage(url)).get_trials()] == []
    assert len(made) <= 1  # Optuna alone: 3 per new study, 1 per opening (8 here)
    # the schema's revision is still stamped on a new file and checked when one is opened
    with sqlite3.connect(tmp_path / "a.db") as db:
        head = db.execute("select version_num from alembic_version").fetchone()[0]
        db.execute("update alembic_version set version_num = 'v0.0.0.from-the-future'")
    assert head
    with pytest.raises(StorageError, match="no longer compatible"):
        open_storage(f"sqlite:///{tmp_path / 'a.db'}")


def _finish_elsewhere(study, trial):
    """What another worker's end of a lost trial does: failed, cut short (its own commits)."""
    other = optuna.load_study(study_name=study.study_name, storage=study._storage._backend.url)
    other._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
    other._storage.set_trial_state_values(trial._trial_id, S.FAIL)


def test_a_trial_finished_elsewhere_between_the_read_and_the_write_is_named_not_raised(tmp_path):
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}"))
    a, b = study.ask(), study.ask()
    real = study.sampler.after_trial

    def after_trial(s, trial, state, values):  # runs between tell_many's read and its write
        if trial.number == a.number:
            _finish_elsewhere(study, a)
        return real(s, trial, state, values)

    study.sampler.after_trial = after_trial
    assert tell_many(study, [(a, 0.5, None, {"k": 1}), (b, 0.7, None, {"k": 2})]) == [a.number]
    assert [(t.state, t.value, t.user_attrs) for t in study.get_trials()] == [
        (S.FAIL, None, {"interrupted": True}), (S.COMPLETE, 0.7, {"k": 2})]


def test_the_pruners_records_skip_a_trial_finished_elsewhere_meanwhile(tmp_path):
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}"),
                                pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2))
    a, b = study.ask(), study.ask()
    report_many([(a, 0.1), (b, 0.2)], step=1)
    real = study.pruner.prune

    def prune(s, trial):  # runs before the records are written
        _finish_elsewhere(study, a)
        study.pruner.prune = real
        return real(s, trial)

    study.pruner.prune = prune
    assert len(should_prune_many([a, b])) == 2
    assert [t.state for t in study.get_trials()] == [S.FAIL, S.RUNNING]


@pytest.mark.parametrize("given", ["/tmp/x.db", "runs/x.db", "x.db"])
def test_a_bare_path_is_refused_with_the_url_to_write(given, tmp_path, monkeypatch):
    """From Python (tune(storage="/tmp/x.db")) as from --storage: refused, not taken as a file,
    the message giving the exact URL built from the absolute path."""
    import os

    import adamtune

    monkeypatch.chdir(tmp_path)
    said = (f"storage must be a URL like sqlite:///adamtune.db or postgresql://user@host/db, got {given!r}; "
            f"for a SQLite file at that path write sqlite:///{os.path.join(tmp_path, given)}")
    with pytest.raises(StorageError) as e:
        adamtune.load("tiny", given)
    assert str(e.value) == said
    with pytest.raises(StorageError) as e:
        adamtune.tune("digits-mlp", budget=1, storage=given)
    assert str(e.value) == said
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("given", ["", "  ", "me@host/db", "postgres://me:secret@host/db"])
def test_what_is_not_a_path_gets_no_sqlite_url(given):
    from adamtune.storage import check_url

    with pytest.raises(StorageError) as e:
        check_url(given)
    assert "for a SQLite file" not in str(e.value) and "secret" not in str(e.value)


# Another process reading the study: a sqlite3 shell in a transaction, a notebook's open cursor,
# another worker between the read and the write of its transaction. It holds its snapshot until
# told, then writes with no busy timeout: any lock left held makes that write fail at once.
_READER = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
con.execute("BEGIN")
con.execute("SELECT count(*) FROM trials").fetchone()
print("reading", flush=True)
sys.stdin.readline()
con.execute("COMMIT")
con.execute("BEGIN IMMEDIATE")
con.execute("CREATE TABLE IF NOT EXISTS probe (x)")
con.execute("INSERT INTO probe VALUES (1)")
con.execute("COMMIT")
print("wrote", flush=True)
sys.stdin.readline()
"""


def test_settle_neither_waits_for_nor_blocks_another_process_reading_the_study(tmp_path):
    path = tmp_path / "s.db"
    url = f"sqlite:///{path}"
    first = open_storage(url)
    optuna.create_study(storage=first, study_name="s").optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    settle(first)
    reader = subprocess.Popen([sys.executable, "-c", _READER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline() == "reading\n"
        # A storage whose busy handler would wait for days: the checkpoint must not use it.
        patient = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 10**6}})
        optuna.load_study(study_name="s", storage=patient).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
        settled = threading.Thread(target=settle, args=(patient,), daemon=True)
        settled.start()
        settled.join(timeout=300)  # only so that a checkpoint that waits fails the test instead of hanging it
        assert not settled.is_alive(), "settle() waited for the other process's snapshot"
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert reader.stdout.readline() == "wrote\n"  # its writes go through: no lock is left held
        assert len(optuna.load_study(study_name="s", storage=patient).trials) == 3
    finally:
        reader.kill()
        reader.wait()
    settle(patient)  # nobody else has the file open: the .db alone holds the study
    assert not os.path.exists(f"{path}-wal") and not os.path.exists(f"{path}-shm")


def test_checking_a_url_leaves_this_process_s_sqlite_locks_so_other_processes_keep_its_log(tmp_path):
    """check_url read the file's first bytes with open(): closing that descriptor dropped every
    POSIX lock of this process on the file, its SQLite connections' too. The next process to
    close a connection took itself for the last, checkpointed and deleted the -wal and -shm
    files this process still used; what workers wrote next never reached it (tune_on_ray in a
    notebook holding a study open returned none of its workers' trials)."""
    path = str(tmp_path / "s.db")
    url = f"sqlite:///{path}"
    store = open_storage(url)
    study = optuna.create_study(study_name="s", storage=store)
    assert study.get_trials() == []  # this process holds a connection, in WAL mode
    check_url(url)
    check_url(url, must_exist=True)
    other = ("import optuna, sys; s = optuna.load_study(study_name='s', storage=sys.argv[1]); "
             "s.tell(s.ask(), 1.0)")
    for _ in range(2):  # each closes its connection; the second writes into the log the first left
        subprocess.run([sys.executable, "-c", other, url], check=True, timeout=120)
    assert os.path.exists(path + "-wal")
    assert len(study.get_trials()) == 2
    settle(store)


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_a_storage_path_that_is_no_regular_file_is_refused_without_opening_it(tmp_path, kind):
    """A FIFO made every command wait forever on its open()."""
    import socket

    path = tmp_path / "s.db"
    if kind == "fifo":
        os.mkfifo(path)
        said = "a FIFO"
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        said = "a socket"
    with pytest.raises(StorageError, match=f"^cannot read '{path}': it is {said}, not a database file$"):
        check_url(f"sqlite:///{path}")
