import dataclasses

import pytest
import torch

import adamtune
from adamtune import TrialState, WorkloadError
from adamtune.workloads import BUILTIN, load_workload, num_examples


@pytest.mark.parametrize("name, task", [("digits-mlp", "generic"), ("digits-cnn", "cnn"), ("charlm", "llm")])
def test_builtin_workload_runs_a_tiny_study(name, task, storage):
    w = load_workload(name)
    assert w.task == task and w.objective == "val_loss" and "val_accuracy" in w.metric_names
    # fixed split, no overlap in size terms and deterministic
    again = load_workload(name)
    assert torch.equal(w.valid_data[0], again.valid_data[0])
    assert num_examples(w.train_data) > num_examples(w.valid_data) > 0
    # 20 steps judged on 64 validation examples: the whole pipeline runs, in seconds.
    short = dataclasses.replace(w, steps=20, eval_every=10, valid_data=tuple(t[:64] for t in w.valid_data))
    r = adamtune.tune(short, budget=2, storage=storage, pruner="none")
    assert [t.state for t in r.trials] == [TrialState.COMPLETE] * 2
    for t in r.trials:
        assert len(t.curve.steps) == 2
        assert 0.0 <= t.curve.metrics["val_accuracy"][-1] <= 1.0


def test_digits_mlp_learns():
    from adamtune.engine import train_trial
    w = load_workload("digits-mlp")
    out = train_trial(w, adamtune.Config(lr=3e-3), init_seed=0, data_seed=0)
    assert out.status == "complete" and out.curve["val_accuracy"][-1] > 0.9


def test_builtin_names():
    assert set(BUILTIN) == {"digits-mlp", "digits-cnn", "charlm"}


def test_malformed_workload_is_refused():
    w = load_workload("digits-mlp")
    with pytest.raises(WorkloadError, match="objective must be one of val_loss, val_accuracy, got 'val_f1'"):
        dataclasses.replace(w, objective="val_f1")
    with pytest.raises(WorkloadError, match="steps must be an integer >= 1, got 0"):
        dataclasses.replace(w, steps=0)
    with pytest.raises(WorkloadError, match="inputs and targets must have the same length"):
        dataclasses.replace(w, train_data=(torch.zeros(3, 64), torch.zeros(2)))


def test_dataset_data_works_like_tensors(storage):
    from torch.utils.data import TensorDataset
    w = load_workload("digits-mlp")
    ds = dataclasses.replace(w, train_data=TensorDataset(*w.train_data), valid_data=TensorDataset(*w.valid_data),
                             steps=20, eval_every=10)
    tens = dataclasses.replace(w, steps=20, eval_every=10)
    from adamtune.engine import train_trial
    a = train_trial(ds, adamtune.Config(), init_seed=1, data_seed=1)
    b = train_trial(tens, adamtune.Config(), init_seed=1, data_seed=1)
    assert a.curve == b.curve
