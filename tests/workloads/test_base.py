"""What a Workload refuses when it is made: each common mistake is one line saying what must hold."""

import pytest
import torch
from torch import nn

import adamtune
from adamtune import WorkloadError


def _data(n=12, d=4):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    return x, (x.sum(1) > 0).long()


def _workload(**kw):
    args = dict(name="w", model=lambda: nn.Linear(4, 2), train_data=_data(), valid_data=_data(),
                metrics={"accuracy": adamtune.accuracy}, steps=4, batch_size=4, eval_every=2)
    return adamtune.Workload(**{**args, **kw})


@pytest.mark.parametrize("mistake, said", [
    (dict(train_data=list(_data())),
     r"workload 'w': train_data must be an \(inputs, targets\) tuple of tensors or a Dataset of \(input, target\) "
     r"pairs, got a list of 2 tensors; write \(inputs, targets\)"),
    (dict(valid_data=list(_data())), r"workload 'w': valid_data must be an \(inputs, targets\) tuple"),
    (dict(train_data=tuple(t.numpy() for t in _data())),
     r"workload 'w': train_data: data must be an \(inputs, targets\) pair of tensors or a Dataset, "
     r"got a tuple of \(ndarray, ndarray\)"),
    (dict(model=nn.Linear(4, 2)),
     r"workload 'w': model must be a function returning a new nn.Module for each trial "
     r"\(e.g. model=MyNet or model=lambda: MyNet\(...\)\), got a Linear instance"),
    (dict(metrics=[adamtune.accuracy], objective="val_loss"),
     r"workload 'w': metrics must be a dict of name to function, e.g. \{'accuracy': adamtune.accuracy\}, got list"),
    (dict(metrics={"accuracy": 0.5}), r"workload 'w': metrics must map names to functions metric\(output, target\), "
                                      r"got 'accuracy': float"),
    (dict(loss="cross_entropy"), r"workload 'w': loss must be a function loss\(output, target\), got str"),
])
def test_a_common_mistake_is_refused_saying_what_must_hold(mistake, said):
    with pytest.raises(WorkloadError, match=f"^{said}"):
        _workload(**mistake)


def test_a_list_of_examples_is_still_a_dataset():
    x, y = _data()
    w = _workload(train_data=list(zip(x, y)))
    assert adamtune.workloads.num_examples(w.train_data) == 12
