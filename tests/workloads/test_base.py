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
     r"got a tuple of \(ndarray, ndarray\); make numpy arrays tensors: torch.as_tensor\(X, dtype=torch.float32\) "
     r"\(class labels: torch.as_tensor\(y\)\)$"),
    # sklearn's X, y as they come: the way forward, not only the refusal
    (dict(train_data=(_data()[0].numpy(), _data()[1])), r"workload 'w': train_data: data must be .*, got a tuple of "
                                                        r"\(ndarray, Tensor\); make numpy arrays tensors: "),
    # ids and extra features as (x1, x2, y): a model of several inputs
    (dict(train_data=(*_data(), torch.zeros(12))),
     r"workload 'w': train_data: data must be an \(inputs, targets\) pair of tensors or a Dataset, got a tuple of "
     r"\(Tensor, Tensor, Tensor\); several inputs: pack them into one tensor and unpack them in forward, or tune "
     r"with an objective function \(adamtune.tune\(objective, ...\)\)$"),
    (dict(model=nn.Linear(4, 2)),
     r"workload 'w': model must be a function returning a new nn.Module for each trial "
     r"\(e.g. model=MyNet or model=lambda: MyNet\(...\)\), got a Linear instance"),
    (dict(metrics=[adamtune.accuracy], objective="val_loss"),
     r"workload 'w': metrics must be a dict of name to function, e.g. \{'accuracy': adamtune.accuracy\}, got list"),
    (dict(metrics={"accuracy": 0.5}), r"workload 'w': metrics must map names to functions metric\(output, target\), "
                                      r"got 'accuracy': float"),
    (dict(loss="cross_entropy"), r"workload 'w': loss must be a function loss\(output, target\), got str"),
    # a metric recorded as val_loss replaced the loss's own value: the study tuned the wrong number
    (dict(metrics={"loss": adamtune.accuracy}),
     r"workload 'w': no metric may be named 'loss': recorded as val_loss, it would replace the loss's own value; "
     r"name it after what it measures$"),
    (dict(metrics={"": adamtune.accuracy}),
     r"workload 'w': a metric's name must be a non-empty printable string \(it is recorded as val_<name>\), got ''$"),
    # maximising the loss pasted the worst lr
    (dict(direction="maximize"),
     r"workload 'w': objective 'val_loss' is a loss: direction must be 'minimize'; to maximise a metric, name it: "
     r"objective='val_accuracy'$"),
    (dict(direction="maximize", metrics={}),
     r"workload 'w': objective 'val_loss' is a loss: direction must be 'minimize'; to maximise a metric, add it and "
     r"name it: metrics=\{'accuracy': adamtune.accuracy\}, objective='val_accuracy'$"),
    # the default study name: held to --study's rule, or a study no command could read again was made
    (dict(name=None), r"workload name must be a non-empty string, got None$"),
    (dict(name=7), r"workload name must be a non-empty string, got 7$"),
    (dict(name=""), r"workload name must be a non-empty string, got ''$"),
    (dict(name=" "), r"workload name must be a non-empty string, got ' '$"),
    # minimised silently: the "best" trial was below chance and ASHA pruned the good ones
    (dict(objective="val_accuracy"),
     r"workload 'w': objective 'val_accuracy' is adamtune.accuracy, higher is better: set direction='maximize'$"),
    # a string or None raised TypeError from the comparison
    (dict(divergence_factor="3"), r"workload 'w': divergence_factor must be a number > 1, got '3'$"),
    (dict(divergence_factor=None), r"workload 'w': divergence_factor must be a number > 1, got None$"),
    (dict(divergence_factor=1.0), r"workload 'w': divergence_factor must be a number > 1, got 1.0$"),
    # 0-d tensors raised IndexError: no first dimension to count examples by
    (dict(train_data=(torch.tensor(1.0), torch.tensor(1))),
     r"workload 'w': train_data: inputs and targets must have one row per example \(a first dimension\), "
     r"got shapes \(\), \(\)$"),
    (dict(name="[bold]x\n2"),
     r"workload name must be printable \(no newline, tab or other control character\), got '\[bold\]x\\n2'$"),
])
def test_a_common_mistake_is_refused_saying_what_must_hold(mistake, said):
    with pytest.raises(WorkloadError, match=f"^{said}"):
        _workload(**mistake)


def test_a_workload_names_and_metric_names_other_than_those_are_taken():
    w = _workload(name="my net [v2] / ü", metrics={"loss2": adamtune.cross_entropy, "top-1": adamtune.accuracy},
                  objective="val_top-1", direction="maximize")
    assert w.metric_names == ("val_loss", "val_loss2", "val_top-1")


@pytest.mark.parametrize("name", [7, "", "a\tb"])
def test_a_workload_name_is_held_to_the_rule_of_a_study_name(name, tmp_path):
    with pytest.raises(WorkloadError) as made:
        _workload(name=name)
    with pytest.raises(adamtune.StudyError) as given:
        adamtune.tune(lambda config, trial: 0.0, study=name, storage=f"sqlite:///{tmp_path / 's.db'}")
    assert str(made.value).removeprefix("workload name ") == str(given.value).removeprefix("study name ")
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("made", [lambda: 5, lambda: None, lambda: [nn.Linear(4, 2)]], ids=["int", "None", "list"])
def test_a_model_factory_returning_no_module_is_refused_at_its_first_build(made):
    from adamtune.workloads._base import FactoryError

    w = _workload(model=made)
    with pytest.raises(FactoryError, match=r"^workload 'w': model\(\) must return an nn.Module, a new network for each "
                                           r"trial, got \w+ "):
        w.build_model()


def test_a_list_of_examples_is_still_a_dataset():
    x, y = _data()
    w = _workload(train_data=list(zip(x, y)))
    assert adamtune.workloads.num_examples(w.train_data) == 12


class _Pairs(torch.utils.data.Dataset):
    """A map-style Dataset returning ``make(i)`` for example i of ``_data()``."""

    def __init__(self, make):
        self.x, self.y = _data()
        self.make = make

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.make(self.x[i], self.y[i])


class _Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        return iter(zip(*_data()))


@pytest.mark.parametrize("data, said", [
    (torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*_data()), batch_size=4),
     r"workload 'w': train_data must be a Dataset or \(inputs, targets\) tensors, not a DataLoader: adamtune "
     r"shuffles the examples and batches them itself, batch_size at a time; pass the loader's dataset$"),
    (_Stream(),
     r"workload 'w': train_data must be a Dataset with __len__ and __getitem__ or \(inputs, targets\) tensors, not an "
     r"IterableDataset: adamtune reads examples by index to shuffle them and batches them itself, batch_size at a "
     r"time$"),
    (_Pairs(lambda x, y: ({"pixels": x}, y)),
     r"workload 'w': train_data: inputs must collate to a tensor \(adamtune moves each minibatch's inputs and "
     r"targets to the device and calls model\(inputs\)\), got a dict; several inputs: pack them into one tensor and "
     r"unpack them in forward, or tune with an objective function \(adamtune.tune\(objective, ...\)\)$"),
    (_Pairs(lambda x, y: ((x, x[:2]), y)),
     r"workload 'w': train_data: inputs must collate to a tensor .*, got a list; several inputs: pack them into one "
     r"tensor and unpack them in forward, or tune with an objective function \(adamtune.tune\(objective, ...\)\)$"),
    (_Pairs(lambda x, y: (str(x), y)),
     r"workload 'w': train_data: inputs must collate to a tensor .*, got a (tuple|list); return \(input tensor, target\) "
     r"pairs from the Dataset$"),
    (_Pairs(lambda x, y: (x, str(int(y)))), r"workload 'w': train_data: targets must collate to a tensor .*, got a (tuple|list);"),
    (_Pairs(lambda x, y: x), r"workload 'w': train_data must hold \(input, target\) pairs, but its examples collate "
                             r"to Tensor$"),
    (_Pairs(lambda x, y: (x, y, 0)), r"workload 'w': train_data must hold \(input, target\) pairs, but its examples "
                                     r"collate to list of 3; several inputs: pack them into one tensor and unpack "
                                     r"them in forward, or tune with an objective function "
                                     r"\(adamtune.tune\(objective, ...\)\)$"),
    (_Pairs(lambda x, y: 1 / 0), r"workload 'w': train_data: reading and collating its first examples failed: "
                                 r"ZeroDivisionError: division by zero$"),
], ids=["DataLoader", "IterableDataset", "dict-inputs", "list-inputs", "str-inputs", "str-targets", "bare-tensors", "triples", "raises"])
def test_data_no_trial_could_train_on_is_refused_when_the_workload_is_made(data, said):
    with pytest.raises(WorkloadError, match=f"^{said}"):
        _workload(train_data=data)


def test_a_dataset_of_numpy_arrays_and_numbers_collates_to_tensors_and_is_taken():
    w = _workload(train_data=_Pairs(lambda x, y: (x.numpy(), int(y))))
    assert adamtune.workloads.num_examples(w.train_data) == 12


class _OpensOnFirstRead(torch.utils.data.Dataset):
    """The h5py/LMDB habit: the file is opened on first access, so the Dataset pickles until then."""

    def __init__(self, path):
        self.path, self.file = path, None
        self.x, self.y = _data()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if self.file is None:
            self.file = open(self.path, "rb")  # noqa: SIM115 - held open, as a dataset's file handle is
        return self.x[i], self.y[i]


def test_checking_a_dataset_leaves_it_unread(tmp_path):
    import pickle

    (tmp_path / "data.bin").write_bytes(b"x")
    ds = _OpensOnFirstRead(str(tmp_path / "data.bin"))
    _workload(train_data=ds)
    assert ds.file is None
    pickle.dumps(ds)  # still sendable to workers


def test_a_metric_returning_a_python_number_counts_as_its_tensor_would():
    from adamtune.engine import train_trial

    def float_accuracy(output, target):
        return float(adamtune.accuracy(output, target))

    as_tensor = train_trial(_workload(), adamtune.Config(lr=1e-2), init_seed=0, data_seed=0)
    as_float = train_trial(_workload(metrics={"accuracy": float_accuracy}), adamtune.Config(lr=1e-2),
                           init_seed=0, data_seed=0)
    assert as_float.status == "complete"
    assert as_float.curve["val_accuracy"] == pytest.approx(as_tensor.curve["val_accuracy"])


def test_a_loss_returning_a_python_number_is_still_refused():
    from adamtune.engine import train_trial

    w = _workload(loss=lambda output, target: adamtune.cross_entropy(output, target).item())
    with pytest.raises(WorkloadError, match=r"^the workload's loss must return a tensor holding one value "
                                            r"\(the mean over the minibatch\), got float$"):
        train_trial(w, adamtune.Config(), init_seed=0, data_seed=0)
