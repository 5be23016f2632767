"""The managed-mode workload: what to train, on which data, judged by which metric."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import numbers
import reprlib
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate

from adamtune import guide
from adamtune.errors import WorkloadError, first_line, name_problem

Data = Union[tuple[Tensor, Tensor], Dataset]
MetricFn = Callable[[Tensor, Tensor], Tensor]


def targets_per_prediction(target: Tensor, shape: torch.Size) -> Tensor:
    """``target`` in the predictions' ``shape`` when it holds one class per prediction in another
    shape (e.g. [B, 1] for [B], as :func:`cross_entropy` takes it too); otherwise as it is."""
    if target.shape != shape and target.numel() == shape.numel():
        return target.reshape(shape)
    return target


def accuracy(output: Tensor, target: Tensor) -> Tensor:
    """Mean top-1 accuracy; works for [B, C] logits and [B, T, C] sequence logits.

    Targets holding one class per prediction in another shape (e.g. [B, 1]) are compared
    prediction by prediction (:func:`targets_per_prediction`).
    """
    pred = output.argmax(dim=-1)
    return (pred == targets_per_prediction(target, pred.shape)).float().mean()


def cross_entropy(output: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy over the last dimension, for [B, C] or [B, T, C] logits."""
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


class FactoryError(WorkloadError):
    """``model()`` breaks what every trial needs: the workload itself is wrong, said once
    (not a failure of the trial that found it)."""


class ModelReused(FactoryError):
    """``model()`` handed out a module it had handed out before."""


class NotAModule(FactoryError):
    """``model()`` returned something other than an ``nn.Module``."""


class NoParameters(FactoryError):
    """``model()`` returned a module with no trainable parameter: nothing for an optimizer to tune."""


# every module model() built that is still alive: one seen again was handed out twice
_BUILT: weakref.WeakSet[nn.Module] = weakref.WeakSet()


# the factories already checked to build a new module on each call
_CHECKED: weakref.WeakSet[Any] = weakref.WeakSet()


def _checked(factory: Any) -> bool:
    """Whether ``factory`` was checked here already to build a new module on each call (never,
    for one that cannot be weakly referenced, such as a bound method: it is checked on every use)."""
    try:
        return factory in _CHECKED
    except TypeError:
        return False


def _mark_checked(factory: Any) -> None:
    with contextlib.suppress(TypeError):
        _CHECKED.add(factory)


def _materialize(model: nn.Module, x: Any) -> None:
    """Give a model's lazy parameters their shapes with one forward of ``x`` on its own device."""
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            model(x.to(device) if isinstance(x, Tensor) else x)
    finally:
        for m, training in modes.items():
            m.training = training


@dataclasses.dataclass(frozen=True)
class Workload:
    """A model, its data, and how a trial is trained and judged.

    Attributes:
        name: shown in tables; the default study name, so held to ``--study``'s rule: a
            non-empty string with no newline, tab or other control character.
        model: builds a fresh model; called for each trial after the trial's seed is set, so
            the initial weights depend only on the study's seed and the trial's point (a trial
            run again gets its point's weights). It is called a few times more: twice at its
            first use (a check that it builds a new module each call), and once to measure a
            batch's memory, so keep it cheap (load pretrained weights from a local file or a
            cache, not a download).
        train_data, valid_data: ``(inputs, targets)`` tensors or a ``torch.utils.data.Dataset``
            returning ``(input, target)`` pairs that collate to an inputs tensor and a targets
            tensor (numbers and numpy arrays do). Not a ``DataLoader`` or an ``IterableDataset``:
            adamtune reads examples by index and batches them itself, ``batch_size`` at a time.
        loss: ``loss(output, target) -> scalar`` with mean reduction.
        metrics: extra metrics evaluated on the validation data, e.g. ``{"accuracy": accuracy}``;
            recorded as ``val_<name>`` at every evaluation. Like ``loss``, a mean over the
            examples: the validation data is evaluated in chunks and the chunks' values are
            averaged by their sizes. A metric returns a one-value tensor or a Python number.
            No metric is named ``"loss"`` (its ``val_loss`` would replace the loss's own). An
            objective metric that turns NaN/inf while the loss stays finite fails its trial
            (the metric is at fault, not the training): the trial is not counted as diverged.
        objective: the metric the study optimises: ``"val_loss"`` or ``"val_<name>"``.
        direction: ``"minimize"`` or ``"maximize"``; ``"minimize"`` for ``val_loss``, a loss.
        steps, batch_size, eval_every: training length, minibatch size, evaluation interval.
        eval_batch_size: validation examples per evaluation call of one model; K batched
            members share a call, each seeing ``eval_batch_size / K``.
        task: the kind of model and training, choosing the preset windows: generic, cnn,
            transformer (fine-tuning a pretrained Transformer: lr 3e-6..3e-4; one trained from
            scratch wants generic, or llm for a language model), llm (pretraining).
        divergence_factor: a trial is stopped as diverged when its mean training loss over an
            evaluation interval exceeds this multiple of its first loss (or is NaN/inf).

    Raises:
        WorkloadError: a field breaks what must hold, in one line; a Dataset's first two
            examples are read and collated here, so data of the wrong kind is refused before
            any trial trains.
    """

    name: str
    model: Callable[[], nn.Module]
    train_data: Data
    valid_data: Data
    loss: MetricFn = cross_entropy
    metrics: Mapping[str, MetricFn] = dataclasses.field(default_factory=dict)
    objective: str = "val_loss"
    direction: str = "minimize"
    steps: int = 500
    batch_size: int = 64
    eval_every: int = 50
    task: str = "generic"
    eval_batch_size: int = 1024
    divergence_factor: float = 3.0

    def __post_init__(self) -> None:
        if (wrong := name_problem(self.name)) is not None:  # the default study name: --study's rule
            raise WorkloadError(f"workload name {wrong}")
        if isinstance(self.model, nn.Module):  # callable too: it would be called on no input
            raise WorkloadError(
                f"workload {self.name!r}: model must be a function returning a new nn.Module for each trial "
                f"(e.g. model=MyNet or model=lambda: MyNet(...)), got a {type(self.model).__name__} instance"
            )
        if not callable(self.model):
            raise WorkloadError(f"workload {self.name!r}: model must be a callable returning an nn.Module")
        if not callable(self.loss):
            raise WorkloadError(f"workload {self.name!r}: loss must be a function loss(output, target), "
                                f"got {type(self.loss).__name__}")
        if not isinstance(self.metrics, Mapping):
            raise WorkloadError(f"workload {self.name!r}: metrics must be a dict of name to function, "
                                f"e.g. {{'accuracy': adamtune.accuracy}}, got {type(self.metrics).__name__}")
        for key, fn in self.metrics.items():
            if not isinstance(key, str) or not callable(fn):
                raise WorkloadError(f"workload {self.name!r}: metrics must map names to functions "
                                    f"metric(output, target), got {key!r}: {type(fn).__name__}")
            if not key.strip() or not key.isprintable():
                raise WorkloadError(f"workload {self.name!r}: a metric's name must be a non-empty printable string "
                                    f"(it is recorded as val_<name>), got {key!r}")
            if key == "loss":  # the evaluation would record it as val_loss, over the loss's own value
                raise WorkloadError(f"workload {self.name!r}: no metric may be named 'loss': recorded as val_loss, "
                                    "it would replace the loss's own value; name it after what it measures")
        for attr in ("steps", "batch_size", "eval_every", "eval_batch_size"):
            v = getattr(self, attr)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise WorkloadError(f"workload {self.name!r}: {attr} must be an integer >= 1, got {v!r}")
        if self.direction not in ("minimize", "maximize"):
            raise WorkloadError(f"workload {self.name!r}: direction must be minimize or maximize, got {self.direction!r}")
        if self.task not in guide.TASKS:
            raise WorkloadError(f"workload {self.name!r}: task must be one of {', '.join(guide.TASKS)}, got {self.task!r}")
        if self.objective not in self.metric_names:
            raise WorkloadError(
                f"workload {self.name!r}: objective must be one of {', '.join(self.metric_names)}, got {self.objective!r}"
            )
        if self.objective == "val_loss" and self.direction != "minimize":
            metric = next(iter(self.metrics), None)
            how = (f"name it: objective='val_{metric}'" if metric is not None
                   else "add it and name it: metrics={'accuracy': adamtune.accuracy}, objective='val_accuracy'")
            raise WorkloadError(f"workload {self.name!r}: objective 'val_loss' is a loss: direction must be "
                                f"'minimize'; to maximise a metric, {how}")
        if (self.direction == "minimize" and self.objective != "val_loss"
                and self.metrics[self.objective[len("val_"):]] is accuracy):
            raise WorkloadError(f"workload {self.name!r}: objective {self.objective!r} is adamtune.accuracy, higher "
                                "is better: set direction='maximize'")
        if (isinstance(self.divergence_factor, bool) or not isinstance(self.divergence_factor, numbers.Real)
                or not self.divergence_factor > 1):
            raise WorkloadError(f"workload {self.name!r}: divergence_factor must be a number > 1, got {self.divergence_factor!r}")
        for data, which in ((self.train_data, "train_data"), (self.valid_data, "valid_data")):
            if isinstance(data, DataLoader):
                raise WorkloadError(f"workload {self.name!r}: {which} must be a Dataset or (inputs, targets) tensors, "
                                    "not a DataLoader: adamtune shuffles the examples and batches them itself, "
                                    "batch_size at a time; pass the loader's dataset")
            if isinstance(data, IterableDataset):
                raise WorkloadError(f"workload {self.name!r}: {which} must be a Dataset with __len__ and __getitem__ "
                                    "or (inputs, targets) tensors, not an IterableDataset: adamtune reads examples by "
                                    "index to shuffle them and batches them itself, batch_size at a time")
            if isinstance(data, list) and data and isinstance(data[0], Tensor):
                # [x, y] would be taken as a data set of two examples, each a bare tensor
                raise WorkloadError(f"workload {self.name!r}: {which} must be an (inputs, targets) tuple of tensors "
                                    f"or a Dataset of (input, target) pairs, got a list of {len(data)} tensors; "
                                    "write (inputs, targets)")
            try:
                n = num_examples(data)
            except WorkloadError as e:
                raise WorkloadError(f"workload {self.name!r}: {which}: {e}") from None
            if n < 1:
                raise WorkloadError(f"workload {self.name!r}: {which} is empty")
            if not isinstance(data, tuple):
                _check_examples(data, n, f"workload {self.name!r}: {which}")

    def build_model(self) -> nn.Module:
        """``model()``, checked to be a new module: a factory that hands out one network
        (``model=lambda: net``) would train every trial on from the last one's weights.

        The first time a factory is used it is called twice (the second call under a forked
        random state, from the random state the first call started from, so the model returned
        is the one a single call makes), which catches such a factory before its first trial
        trains.

        Raises:
            FactoryError: ``model()`` returned no ``nn.Module`` (NotAModule), a module it had
                returned before (ModelReused), or one with no trainable parameter (NoParameters):
                the workload is wrong for every trial.
        """
        check = not _checked(self.model)
        drawn_from = torch.random.get_rng_state() if check else None
        model = self.model()
        if not isinstance(model, nn.Module):
            raise NotAModule(f"workload {self.name!r}: model() must return an nn.Module, a new network for each "
                             f"trial, got {type(model).__name__} {reprlib.repr(model)}")
        reused = model in _BUILT
        if not reused and check:
            # The check's call draws the random numbers the first call drew, so a factory that
            # fails by them (a choice seeded with the trial's seed) raises in both calls or in
            # neither: the check fails no trial a single call builds. What the check's call
            # raises anyway (a factory that counts its calls) is the user's code failing, the
            # error of the trial being built; the factory is then checked at its next use.
            with torch.random.fork_rng(devices=[]):
                torch.random.set_rng_state(drawn_from)
                reused = self.model() is model
            _mark_checked(self.model)
        _BUILT.add(model)  # a reused one too: every later call is refused as well
        if reused:
            raise ModelReused(f"workload {self.name!r}: model() returned a module it had returned before; it "
                              "must build a new one on each call (model=MyNet, or a function that makes the "
                              "network, not lambda: net), or every trial trains on from the last one's weights")
        if any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters()):
            # lazy modules (nn.LazyLinear) take their shapes from a first forward: one on two
            # training examples, in eval mode (no running statistics move), where the model is
            _materialize(model, take(self.train_data, torch.arange(min(2, num_examples(self.train_data))))[0])
        if not any(p.requires_grad for p in model.parameters()):
            raise NoParameters(f"workload {self.name!r}: model() returned a {type(model).__name__} with no trainable "
                               "parameter (none, or all with requires_grad=False): there is nothing for the optimizer "
                               "to tune")
        return model

    @property
    def metric_names(self) -> tuple[str, ...]:
        return ("val_loss",) + tuple(f"val_{m}" for m in self.metrics)

    @property
    def evaluation_steps(self) -> tuple[int, ...]:
        """Steps after which the model is evaluated: every ``eval_every`` and the last step."""
        s = list(range(self.eval_every, self.steps + 1, self.eval_every))
        if not s or s[-1] != self.steps:
            s.append(self.steps)
        return tuple(s)


# The way forward for a model of several inputs, which managed mode cannot pass: model(inputs) takes one tensor.
SEVERAL_INPUTS = ("several inputs: pack them into one tensor and unpack them in forward, or tune with an objective "
                  "function (adamtune.tune(objective, ...))")


def _check_examples(data: Data, n: int, where: str) -> None:
    """Collate a Dataset's first two examples as every minibatch is, and refuse what no trial
    could train on: examples that are not ``(input, target)`` pairs, or that do not collate to
    tensors (a dict of inputs: the engines move a tensor to the device and call ``model`` on it).

    They are read from a shallow copy of a Dataset, which stays as the user made it: one that
    opens its file on first access (h5py, LMDB) stays unopened, so still picklable for workers.

    Raises:
        WorkloadError: naming ``where`` (``workload 'w': train_data``).
    """
    if not isinstance(data, (tuple, list)):
        try:
            data = copy.copy(data)
        except Exception:  # noqa: BLE001 - a Dataset that cannot be copied is read as it is
            pass
    try:
        batch = take(data, torch.arange(min(2, n)))
    except Exception as e:  # noqa: BLE001 - the user's Dataset: every trial would fail the same way
        raise WorkloadError(f"{where}: reading and collating its first examples failed: "
                            f"{type(e).__name__}: {first_line(e)}") from None
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        several = isinstance(batch, (tuple, list)) and len(batch) > 2
        raise WorkloadError(f"{where} must hold (input, target) pairs, but its examples collate to "
                            f"{type(batch).__name__}{f' of {len(batch)}' if isinstance(batch, (tuple, list)) else ''}"
                            f"{f'; {SEVERAL_INPUTS}' if several else ''}")
    for part, t in zip(("inputs", "targets"), batch):
        if not isinstance(t, Tensor):
            # a dict, or a list of tensors (a list of strings is one input: a batch of texts)
            several = part == "inputs" and (isinstance(t, Mapping) or (
                isinstance(t, (tuple, list)) and all(isinstance(v, Tensor) for v in t)))
            how = SEVERAL_INPUTS if several else "return (input tensor, target) pairs from the Dataset"
            raise WorkloadError(f"{where}: {part} must collate to a tensor (adamtune moves each minibatch's "
                                f"inputs and targets to the device and calls model(inputs)), got a "
                                f"{type(t).__name__}; {how}")


def one_value(value: Any, what: str, *, number: bool = False) -> Tensor:
    """``value``, what the function ``what`` (``loss``, ``metric 'accuracy'``) returned, as a [1] tensor.

    Args:
        number: a Python number counts too (a metric's ``float(...)``, as sklearn-style code
            returns; a loss must be a tensor, which training differentiates).

    Raises:
        WorkloadError: ``value`` is not a tensor of one element (a Python float where ``number``
            is False, or a value per example as ``reduction="none"`` gives).
    """
    if number and isinstance(value, numbers.Real):
        return torch.tensor([float(value)], dtype=torch.float64)
    must = f"the workload's {what} must return a tensor holding one value (the mean over the minibatch)"
    if not isinstance(value, Tensor):
        raise WorkloadError(f"{must}, got {type(value).__name__}")
    if value.numel() != 1:
        raise WorkloadError(f"{must}, got a tensor of shape {list(value.shape)}")
    return value.reshape(1)


def num_examples(data: Data) -> int:
    if isinstance(data, tuple):
        if len(data) != 2 or not all(isinstance(t, Tensor) for t in data):
            got = ", ".join(type(t).__name__ for t in data)
            if any(type(t).__module__ == "numpy" for t in data):
                how = ("; make numpy arrays tensors: torch.as_tensor(X, dtype=torch.float32) (class labels: "
                       "torch.as_tensor(y))")
            else:
                how = f"; {SEVERAL_INPUTS}" if len(data) > 2 else ""
            raise WorkloadError(f"data must be an (inputs, targets) pair of tensors or a Dataset, got a tuple of ({got})"
                                f"{how}")
        if any(t.dim() == 0 for t in data):  # a 0-d tensor has no first dimension to index examples by
            shapes = ", ".join(str(tuple(t.shape)) for t in data)
            raise WorkloadError(f"inputs and targets must have one row per example (a first dimension), "
                                f"got shapes {shapes}")
        if data[0].shape[0] != data[1].shape[0]:
            raise WorkloadError(
                f"inputs and targets must have the same length, got {data[0].shape[0]} and {data[1].shape[0]}"
            )
        return int(data[0].shape[0])
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        raise WorkloadError("a Dataset must define __len__") from None


def take(data: Data, index: Tensor) -> tuple[Tensor, Tensor]:
    """The examples at ``index`` as a collated ``(inputs, targets)`` batch."""
    if isinstance(data, tuple):
        return data[0][index], data[1][index]
    return default_collate([data[int(i)] for i in index])


def batch_stream(data: Data, batch_size: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless shuffled minibatches, reshuffled every epoch; the order depends on ``seed`` only.

    Every trial of a study sees the same minibatch sequence, which is what lets the batched
    engine share one minibatch across K members and still match the sequential engine.
    """
    n = num_examples(data)
    g = torch.Generator().manual_seed(seed)
    bs = min(batch_size, n)
    while True:
        perm = torch.randperm(n, generator=g)
        for start in range(0, n - bs + 1, bs):
            yield take(data, perm[start:start + bs])


def eval_batches(data: Data, batch_size: int) -> Iterator[tuple[int, tuple[Tensor, Tensor]]]:
    """``(size, batch)`` over the whole data set in order."""
    n = num_examples(data)
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(n, start + batch_size))
        yield len(idx), take(data, idx)


def describe(workload: Workload) -> dict[str, Any]:
    """Plain facts about a workload for storage and reports."""
    return {
        "name": workload.name,
        "task": workload.task,
        "objective": workload.objective,
        "direction": workload.direction,
        "steps": workload.steps,
        "batch_size": workload.batch_size,
        "eval_every": workload.eval_every,
        "train_examples": num_examples(workload.train_data),
        "valid_examples": num_examples(workload.valid_data),
    }
