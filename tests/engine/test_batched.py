import dataclasses
import math
import os
import warnings

import pytest
import torch
import torch.utils.checkpoint
from torch import nn

import adamtune
from adamtune import TrialState
from adamtune.engine import train_trial
from adamtune.engine.batched import NotBatchable, lost_updates, members_per_chunk, train_members
from adamtune.workloads import load_workload


def _digits(steps=60, eval_every=20):
    return dataclasses.replace(load_workload("digits-mlp"), steps=steps, eval_every=eval_every)


CONFIGS = [
    adamtune.Config(lr=3e-3, weight_decay=0.1),
    adamtune.Config(lr=1e-4, beta1=0.8, eps=1e-6),
    adamtune.Config(lr=1e-2, max_grad_norm=0.5, warmup=0.2, schedule="cosine"),
    adamtune.Config(optimizer="adamw", lr=5e-4, beta2=0.95, weight_decay=0.0),
]


class Wrapped(nn.Module):
    """digits-mlp's MLP behind a forward of its own: the vmap path, not the written-out one."""

    def __init__(self):
        super().__init__()
        self.net = load_workload("digits-mlp").model()

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("model", [None, Wrapped], ids=["written-out", "vmap"])
@pytest.mark.parametrize("optimizer", ["adamw", "adam", "adadelta"])
def test_each_member_matches_the_sequential_engine(optimizer, model):
    w = _digits() if model is None else dataclasses.replace(_digits(), model=model)
    configs = [dataclasses.replace(c, optimizer=optimizer, lr=c.lr * (100 if optimizer == "adadelta" else 1),
                                   eps=1e-6 if optimizer == "adadelta" else c.eps) for c in CONFIGS]
    seeds = [11, 12, 13, 14]
    batched = train_members(w, configs, init_seeds=seeds, data_seed=5)
    for cfg, seed, b in zip(configs, seeds, batched):
        s = train_trial(w, cfg, init_seed=seed, data_seed=5)
        assert (b.status, b.steps) == (s.status, s.steps)
        assert b.value == pytest.approx(s.value, rel=1e-4)
        for name in ("val_loss", "val_accuracy", "train_loss"):
            assert b.curve[name] == pytest.approx(s.curve[name], rel=1e-4, abs=1e-6), name
        assert b.grad_norms.p90 == pytest.approx(s.grad_norms.p90, rel=1e-4)
        assert b.grad_norms.clipped_fraction == s.grad_norms.clipped_fraction


def test_a_diverging_member_does_not_disturb_the_others():
    w = _digits()
    good = adamtune.Config(lr=1e-3)
    configs = [good, adamtune.Config(lr=50.0), good]
    out = train_members(w, configs, init_seeds=[1, 2, 3], data_seed=0)
    assert [o.status for o in out] == ["complete", "diverged", "complete"]
    assert out[1].value == math.inf and out[1].diverged_at is not None
    alone = train_trial(w, good, init_seed=3, data_seed=0)
    assert out[2].value == pytest.approx(alone.value, rel=1e-5)


def test_members_finish_as_they_end_and_are_dropped():
    w = _digits(steps=60, eval_every=20)
    finished = []
    configs = [adamtune.Config(lr=1e-3), adamtune.Config(lr=1e3), adamtune.Config(lr=2e-3)]
    train_members(w, configs, init_seeds=[0, 1, 2], data_seed=0,
                  on_done=lambda done: finished.append(sorted((i, o.status) for i, o in done)))
    # the diverged member is handed over at the first evaluation, before the others end;
    # the two that end together are handed over together
    assert finished == [[(1, "diverged")], [(0, "complete"), (2, "complete")]]


class WithBatchNorm(nn.Module):
    """BatchNorm with running statistics, updated in place in training: each member keeps its own.

    No bias before it: that bias's gradient is rounding noise (BatchNorm takes the mean out),
    which Adam scales up to lr-sized steps, so its values would differ by more than rounding
    between any two ways of computing the same model (here up to 0.6% in val_loss)."""

    def __init__(self, momentum: float | None = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 32, bias=False), nn.BatchNorm1d(32, momentum=momentum), nn.ReLU(),
                                 nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)


class CumulativeBatchNorm(WithBatchNorm):
    """momentum=None: a cumulative average, dividing by a step count read as a Python number."""

    def __init__(self):
        super().__init__(momentum=None)


class ConvBatchNorm(nn.Module):
    """A conv layer, BatchNorm2d and a linear head: the usual small CNN block."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.Linear(512, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x.view(-1, 1, 8, 8)))).flatten(1))


class NotVmappable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        # Python control flow on a per-member value: vmap cannot batch .item() of a stacked weight
        if self.fc.weight.sum().item() > float("-inf"):
            return self.fc(x)
        return self.fc(-x)


class Checkpointed(nn.Module):
    """Activation checkpointing: the recomputation in backward runs after functional_call returned."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(64, 64), nn.Linear(64, 10)

    def forward(self, x):
        return self.b(torch.utils.checkpoint.checkpoint(lambda t: torch.relu(self.a(t)), x, use_reentrant=False))


class VmapsOnlyInTraining(nn.Module):
    """Takes a path in eval mode that vmap cannot batch (a per-member value read as a number)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        if not self.training and self.fc.weight.sum().item() > float("-inf"):
            return self.fc(x)
        return self.fc(x)


class BatchStatistics(nn.Module):
    """BatchNorm without running statistics: evaluation normalises with the evaluated batch."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32, track_running_stats=False), nn.ReLU(),
                                 nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)


class TiedWeights(nn.Module):
    """Two layers sharing one weight (as a tied embedding and output layer do): one parameter."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 10)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.out(torch.relu(self.b(torch.relu(self.a(x)))))


def _one_element_loss(output, target):
    return torch.nn.functional.cross_entropy(output, target).reshape(1)


def test_cumulative_batchnorm_and_non_vmappable_models_are_refused_by_the_engine():
    with pytest.raises(NotBatchable, match="BatchNorm1d at 'net.1' has momentum=None"):
        train_members(dataclasses.replace(_digits(), model=CumulativeBatchNorm), [adamtune.Config()] * 2,
                      init_seeds=[0, 1], data_seed=0)
    with pytest.raises(NotBatchable, match="vmap cannot run this model"):
        train_members(dataclasses.replace(_digits(), model=NotVmappable), [adamtune.Config()] * 2,
                      init_seeds=[0, 1], data_seed=0)


class RunningMean(nn.Module):
    """A running mean of its own hidden activations, updated in place in training (as RevIN or a
    VQ codebook's EMA are): each member keeps its own, as it would alone."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)
        self.register_buffer("mean", torch.zeros(32))

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        if self.training:
            self.mean.mul_(0.9).add_(0.1 * h.mean(0).detach())
        return self.fc2(h - self.mean)


class ReassignedMean(RunningMean):
    """The same running mean, assigned anew each step: a stack cannot keep it per member."""

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        if self.training:
            self.mean = 0.9 * self.mean + 0.1 * h.mean(0).detach()
        return self.fc2(h - self.mean)


@pytest.mark.parametrize("model, why", [(CumulativeBatchNorm, "BatchNorm1d at 'net.1' has momentum=None"), (NotVmappable, "vmap cannot run this model"),
                                        (VmapsOnlyInTraining, "vmap cannot evaluate this model"),
                                        (Checkpointed, "activation checkpointing recomputes the forward in backward"),
                                        (ReassignedMean, "its forward assigns the buffer 'mean' anew in training")])
def test_study_falls_back_to_sequential_with_one_notice(storage, model, why):
    notices, events = [], []
    w = dataclasses.replace(_digits(steps=20, eval_every=10), model=model)
    r = adamtune.tune(w, budget=3, storage=storage, pruner="none",
                      notice=lambda m: (notices.append(m), events.append("notice")),
                      on_trial=lambda record, so_far: events.append("trial"))
    assert len(notices) == 1 and why in notices[0] and notices[0].startswith("training trials one at a time")
    assert "\n" not in notices[0]  # one line, not torch's whole error message
    assert events == ["notice"] + ["trial"] * 3  # said before the trials run one at a time, not after
    assert [t.state for t in r.trials] == [TrialState.COMPLETE] * 3  # no trial lost to the fallback
    assert all(ft.user_attrs["engine"] == "sequential" for ft in r.study.trials)


def test_the_fallback_note_names_the_users_line_vmap_could_not_run(storage, user_line):
    """torch's words alone read as if adamtune's fallback had failed: the note says which line of the
    user's model vmap stopped at."""
    notices = []
    w = dataclasses.replace(_digits(steps=20, eval_every=10), model=NotVmappable)
    adamtune.tune(w, budget=2, storage=storage, pruner="none", notice=notices.append)
    [note] = notices
    assert note.startswith("training trials one at a time: torch.func.vmap cannot run this model: RuntimeError: ")
    assert note.endswith(user_line("if self.fc.weight.sum().item()")) and "\n" not in note


def test_without_a_notice_function_the_fallback_is_an_adamtune_warning_python_can_filter(storage):
    w = dataclasses.replace(_digits(steps=20, eval_every=10), model=NotVmappable)
    with pytest.warns(adamtune.AdamtuneWarning, match="^training trials one at a time"):
        adamtune.tune(w, budget=2, storage=storage, pruner="none")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", adamtune.AdamtuneWarning)
        adamtune.tune(w, budget=4, storage=storage, pruner="none")


def _loss_read_as_a_number(output, target):
    loss = adamtune.cross_entropy(output, target)
    if loss.item() > 1e6:  # a guard as research code writes it: vmap cannot batch .item()
        raise ValueError("loss exploded")
    return loss


def _accuracy_as_a_float(output, target):
    return float(adamtune.accuracy(output, target))  # sklearn-style: a Python number


@pytest.mark.parametrize("model", [None, Wrapped], ids=["written-out", "vmap"])
@pytest.mark.parametrize("change, why", [
    (dict(loss=_loss_read_as_a_number), "torch.func.vmap cannot run the workload's loss: RuntimeError: vmap: It looks "
                                        "like you're calling .item() on a Tensor"),
    (dict(metrics={"accuracy": _accuracy_as_a_float}), "torch.func.vmap cannot run metric 'accuracy': RuntimeError: "
                                                       "vmap: It looks like you're calling .item() on a Tensor"),
], ids=["loss-item", "float-metric"])
def test_the_fallback_note_names_the_loss_or_metric_vmap_cannot_run_not_the_model(storage, model, change, why):
    """The model stacks fine (written out or under vmap): the note blames what the user must change."""
    notices = []
    w = dataclasses.replace(_digits(steps=20, eval_every=10), **change, **({"model": model} if model else {}))
    r = adamtune.tune(w, budget=3, storage=storage, pruner="none", notice=notices.append)
    assert len(notices) == 1 and notices[0].startswith(f"training trials one at a time: {why}"), notices
    assert "\n" not in notices[0]
    assert [t.state for t in r.trials] == [TrialState.COMPLETE] * 3
    assert all(ft.user_attrs["engine"] == "sequential" for ft in r.study.trials)


class LogsNowAndThen(nn.Module):
    """Research code that logs a statistic with .item() every 15th training call: vmap fails only then."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.calls = nn.Linear(64, 32), nn.Linear(32, 10), 0
        self.logged: list[float] = []

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        if self.training:
            self.calls += 1
            if self.calls % 15 == 0:
                self.logged.append(h.std().item())
        return self.fc2(h)



class FailsAtCall25(LogsNowAndThen):
    """The user's own bug, reached only at a later step: not vmap's doing."""

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == 25:
                raise ValueError("user bug at call 25")
        return self.fc2(torch.relu(self.fc1(x)))


def test_a_users_own_error_at_a_later_step_is_not_blamed_on_vmap(storage, user_line):
    """Not a reason to train the study one at a time: the batch's trials train again alone (only
    those whose own training raises fail), and the next batches train batched."""
    notices = []
    w = dataclasses.replace(_digits(steps=40, eval_every=10), model=FailsAtCall25)
    with pytest.raises(adamtune.StudyError, match="Last error: ValueError: user bug at call 25"):
        adamtune.tune(w, budget=3, storage=storage, pruner="none", notice=notices.append)
    at = user_line('raise ValueError("user bug')  # where the user's model raised it
    assert notices == ["training 3 trials of a batch of 3 again one at a time: the batch stopped on ValueError: "
                       f"user bug at call 25{at}; only the trials whose own training raises an error fail"]
    r = adamtune.load(w.name, storage)
    assert [t.state for t in r.trials] == [TrialState.FAILED] * 3
    assert all(t.engine == "sequential" and t.error.strip().endswith("ValueError: user bug at call 25")
               for t in r.trials)

class MixedDtypes(nn.Module):
    """A float32 body with a float64 head."""

    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(64, 32), nn.Linear(32, 10).double()

    def forward(self, x):
        return self.head(torch.relu(self.body(x)).double()).float()


@pytest.mark.parametrize("model, why", [
    (LogsNowAndThen, "torch.func.vmap cannot run this model at step 15: RuntimeError: vmap: It looks like you're "
                     "calling .item()"),
    (MixedDtypes, "its parameters are of several dtypes or devices (float32 on cpu, float64 on cpu)"),
], ids=["item-at-step-15", "mixed-dtypes"])
def test_a_model_that_fails_batched_only_later_or_mixes_dtypes_trains_one_at_a_time(storage, tmp_path, model, why):
    """Not every trial failed and the study stopped: the members not yet stored train again one
    at a time, and reach what --batch 1 reaches."""
    notices = []
    w = dataclasses.replace(_digits(steps=40, eval_every=10), model=model)
    r = adamtune.tune(w, budget=3, storage=storage, pruner="none", notice=notices.append)
    assert len(notices) == 1 and notices[0].startswith(f"training trials one at a time: {why}"), notices
    assert [t.state for t in r.trials] == [TrialState.COMPLETE] * 3
    alone = adamtune.tune(w, budget=3, storage=f"sqlite:///{tmp_path / 'alone.db'}", pruner="none", batch=1)
    assert [t.value for t in r.trials] == pytest.approx([t.value for t in alone.trials], rel=1e-5)
    for t, u in zip(r.trials, alone.trials):  # the curves too: what was reported batched is not left half
        assert t.curve.steps == u.curve.steps == (10, 20, 30, 40)
        assert t.curve.metrics["val_loss"] == pytest.approx(u.curve.metrics["val_loss"], rel=1e-5)


@pytest.mark.parametrize("batch", ["auto", 1])
def test_a_factory_that_hands_out_one_network_is_refused_not_trained_on(storage, batch):
    """model=lambda: net: each sequential trial trained on from the last one's weights (the last
    trial looked best), and every batched member started from the same weights. Refused at the
    model's first build, before the study is made: nothing is stored."""
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    w = dataclasses.replace(_digits(steps=20, eval_every=10), model=lambda: net)
    with pytest.raises(adamtune.WorkloadError, match="model\\(\\) returned a module it had returned before; it must "
                                                     "build a new one on each call"):
        adamtune.tune(w, budget=3, storage=storage, pruner="none", batch=batch, notice=lambda m: None)
    assert not os.path.exists(storage.removeprefix("sqlite:///"))


class GateAtCall20(nn.Module):
    """A curriculum gate on a Python call counter: the batched engine's planning probes ran the
    model once more, so the gate opened a step early."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.calls = nn.Linear(64, 32), nn.Linear(32, 10), 0

    def forward(self, x):
        if self.training:
            self.calls += 1
        h = torch.relu(self.fc1(x))
        return self.fc2(h * 3.0 if self.calls > 20 else h)


def test_python_state_kept_on_the_model_starts_training_as_the_sequential_engines_does(storage, tmp_path):
    w = dataclasses.replace(_digits(steps=40, eval_every=10), model=GateAtCall20)
    batched = adamtune.tune(w, budget=3, storage=storage, pruner="none", notice=lambda m: None)
    alone = adamtune.tune(w, budget=3, storage=f"sqlite:///{tmp_path / 'alone.db'}", pruner="none", batch=1)
    assert all(t.engine.startswith("batched") for t in batched.trials)
    for t, u in zip(batched.trials, alone.trials):
        assert t.curve.metrics["val_loss"] == pytest.approx(u.curve.metrics["val_loss"], rel=1e-5)


def test_lazy_modules_train_on_both_engines_alike(storage, tmp_path):
    """nn.LazyLinear gets its shape from a first forward: both engines failed every trial
    (the optimizer saw uninitialised parameters)."""
    w = dataclasses.replace(_digits(steps=20, eval_every=10),
                            model=lambda: nn.Sequential(nn.LazyLinear(32), nn.ReLU(), nn.Linear(32, 10)))
    batched = adamtune.tune(w, budget=3, storage=storage, pruner="none", notice=lambda m: None)
    alone = adamtune.tune(w, budget=3, storage=f"sqlite:///{tmp_path / 'alone.db'}", pruner="none", batch=1)
    assert [t.state for t in batched.trials] == [t.state for t in alone.trials] == [TrialState.COMPLETE] * 3
    assert all(t.engine.startswith("batched") for t in batched.trials)
    assert [t.value for t in batched.trials] == pytest.approx([t.value for t in alone.trials], rel=1e-5)

class Drop(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.drop, self.fc2 = nn.Linear(64, 64), nn.Dropout(0.5), nn.Linear(64, 10)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


@pytest.mark.parametrize("model", [
    Drop, lambda: nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 10)),
], ids=["vmap", "written-out"])
def test_dropout_members_get_different_masks(model):
    w = dataclasses.replace(_digits(steps=20, eval_every=10), model=model)
    # same seed and config for both members: only dropout's randomness can separate them
    out = train_members(w, [adamtune.Config()] * 2, init_seeds=[3, 3], data_seed=0)
    assert all(o.status == "complete" for o in out)
    assert out[0].curve["train_loss"] != out[1].curve["train_loss"]


@pytest.mark.parametrize("workload", [
    dataclasses.replace(_digits(steps=40, eval_every=20), model=BatchStatistics, eval_batch_size=64),
    dataclasses.replace(_digits(steps=40, eval_every=20), loss=_one_element_loss,
                        metrics={"accuracy": lambda o, t: adamtune.workloads.accuracy(o, t).reshape(1, 1)}),
    dataclasses.replace(_digits(steps=40, eval_every=20), model=TiedWeights),
    dataclasses.replace(_digits(steps=40, eval_every=20), model=RunningMean),
    dataclasses.replace(_digits(steps=40, eval_every=20), model=WithBatchNorm),
    dataclasses.replace(_digits(steps=40, eval_every=20), model=ConvBatchNorm),
    dataclasses.replace(_digits(steps=40, eval_every=20), model=lambda: nn.Sequential(
        nn.Dropout(0.0), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))),
], ids=["batch statistics in evaluation", "one-element loss and metric", "tied weights", "a buffer updated in place",
        "BatchNorm1d running statistics", "BatchNorm2d running statistics", "dropout on the input"])
def test_members_match_the_sequential_engine_on_awkward_models(workload):
    # Evaluated on a K-th of the sequential engine's chunks, batch statistics would change the
    # values with K; a [1]-shaped loss or metric counts as the scalar it holds, as it does alone.
    configs = CONFIGS[:3]
    batched = train_members(workload, configs, init_seeds=[1, 2, 3], data_seed=4)
    for cfg, seed, b in zip(configs, [1, 2, 3], batched):
        s = train_trial(workload, cfg, init_seed=seed, data_seed=4)
        assert (b.status, b.steps) == (s.status, s.steps) == ("complete", 40)
        for name in ("val_loss", "val_accuracy", "train_loss"):
            assert b.curve[name] == pytest.approx(s.curve[name], rel=1e-5, abs=1e-7), name


def test_batchnorm_with_running_statistics_trains_batched(storage):
    notices = []
    w = dataclasses.replace(_digits(steps=20, eval_every=10), model=ConvBatchNorm)
    r = adamtune.tune(w, budget=3, storage=storage, pruner="none", notice=notices.append)
    assert notices == [] and [t.state for t in r.trials] == [TrialState.COMPLETE] * 3
    assert {ft.user_attrs["engine"] for ft in r.study.trials} == {"batched (K=3)"}


def test_a_buffer_update_the_stack_lost_is_named():
    before = {"bn.running_mean": torch.zeros(3, 4), "bn.num_batches_tracked": torch.zeros(3, dtype=torch.long)}
    after = {"bn.running_mean": torch.tensor([[0.1] * 4, [0.0] * 4, [0.2] * 4]),
             "bn.num_batches_tracked": torch.ones(3, dtype=torch.long)}
    assert lost_updates(["bn.num_batches_tracked"], before, after) is None
    assert lost_updates([], before, after) is None
    why = lost_updates(["bn.num_batches_tracked", "bn.running_mean"], before, after)
    assert why.startswith("the buffer 'bn.running_mean', updated in place in training, did not change in member 1")


def test_a_member_diverging_between_evaluations_keeps_its_norms_up_to_its_step():
    w = _digits(steps=40, eval_every=20)
    out = train_members(w, [adamtune.Config(lr=1e-3), adamtune.Config(optimizer="adamw", lr=1e6, eps=1e-30)],
                        init_seeds=[1, 2], data_seed=0)
    bad = out[1]
    alone = train_trial(w, adamtune.Config(optimizer="adamw", lr=1e6, eps=1e-30), init_seed=2, data_seed=0)
    assert bad.status == alone.status == "diverged" and bad.steps == alone.steps < 20
    assert bad.grad_norms.count == alone.grad_norms.count == bad.steps
    assert bad.grad_norms.samples == pytest.approx(alone.grad_norms.samples, rel=1e-5, nan_ok=True)


def test_a_small_memory_budget_does_not_refuse_a_model_trained_one_at_a_time(storage):
    notices = []
    w = dataclasses.replace(_digits(steps=20, eval_every=10), model=CumulativeBatchNorm)
    r = adamtune.tune(w, budget=2, storage=storage, max_memory=1024, pruner="none", notice=notices.append)
    assert [t.state for t in r.trials] == [TrialState.COMPLETE] * 2
    assert len(notices) == 1 and "momentum=None" in notices[0]


@pytest.mark.parametrize("batch", [1, 8])
def test_a_trial_trained_to_the_end_is_complete_not_pruned(storage, batch):
    # ASHA's top rung here is the last evaluation (60 steps): a trial that reaches it has cost
    # all it will cost, and its last value is a full trial's (batched, trial 4 was pruned there).
    w = _digits(steps=60, eval_every=20)
    r = adamtune.tune(w, budget=8, batch=batch, storage=storage, pruner="asha", notice=lambda m: None)
    states = [(t.state, t.steps) for t in r.trials]
    assert all(steps < 60 for state, steps in states if state == TrialState.PRUNED)
    assert all(steps == 60 for state, steps in states if state == TrialState.COMPLETE)
    assert sum(state == TrialState.PRUNED for state, _ in states) >= 5


def test_memory_budget_splits_into_chunks(storage):
    w = _digits(steps=20, eval_every=10)
    one = members_per_chunk(w, "cpu", 10**12)
    assert one > 1000
    per_member = 10**12 // one
    assert members_per_chunk(w, "cpu", per_member * 3) == 3
    notices = []
    r = adamtune.tune(w, budget=7, storage=storage, batch=7, max_memory=per_member * 3, notice=notices.append, pruner="none")
    assert notices == ["7 members do not fit the memory budget; training in chunks of 3"]
    engines = [ft.user_attrs["engine"] for ft in r.study.trials]
    assert engines == ["batched (K=3)"] * 6 + ["sequential"]


def test_batch_1_and_batch_8_give_the_same_study(tmp_path):
    w = _digits(steps=60, eval_every=20)
    runs = {}
    for k in (1, 8):
        runs[k] = adamtune.tune(w, budget=8, storage=f"sqlite:///{tmp_path / f'k{k}.db'}", batch=k,
                                pruner="none", seed=3, space=["lr=1e-4:10"])
    a, b = runs[1].trials, runs[8].trials
    assert [t.params for t in a] == [t.params for t in b]
    assert [t.state for t in a] == [t.state for t in b]
    assert any(t.state == TrialState.DIVERGED for t in a)  # the top of the lr window diverges
    for x, y in zip(a, b):
        if x.value is not None:
            assert y.value == pytest.approx(x.value, rel=1e-4)
    assert {t.engine for t in runs[8].trials} == {"batched (K=8)"}
    assert {t.engine for t in runs[1].trials} == {"sequential"}


def test_pruned_and_diverged_members_show_with_curves(storage):
    from typer.testing import CliRunner
    from adamtune.cli import app
    w = _digits(steps=100, eval_every=10)
    r = adamtune.tune(w, budget=9, storage=storage, batch=9, space=["lr=1e-6:30"], seed=1, study="mixed")
    states = {t.state for t in r.trials}
    assert {TrialState.PRUNED, TrialState.DIVERGED, TrialState.COMPLETE} <= states
    for t in r.trials:
        if t.state == TrialState.PRUNED:
            assert 0 < len(t.curve.steps) and t.steps < 100 and t.curve.steps[-1] == t.steps
    out = CliRunner().invoke(app, ["show", "--storage", storage, "--study", "mixed"], env={"COLUMNS": "160"})
    assert out.exit_code == 0
    assert "pruned" in out.stdout and "diverged" in out.stdout and "complete" in out.stdout


def test_bad_batch_values(storage, tiny_ref):
    from adamtune import StudyError
    for bad in (0, -2, "many", 2.5):
        with pytest.raises(StudyError, match="batch must be a whole number >= 1 or 'auto'"):
            adamtune.tune(tiny_ref, budget=2, storage=storage, batch=bad)

    def objective(config, trial):
        return 1.0
    with pytest.raises(StudyError, match="batching needs a managed workload"):
        adamtune.tune(objective, budget=2, storage=storage, batch=4)


def _exploding_metric(output, target):
    raise RuntimeError("metric exploded")


def _stored_states(storage, name):
    import optuna

    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    return [t.state.name for t in trials], [bool(t.user_attrs.get("interrupted")) for t in trials]


def test_a_failing_batch_ends_every_member_before_the_study_stops(storage):
    w = dataclasses.replace(_digits(steps=20, eval_every=10), metrics={"boom": _exploding_metric})
    notices = []
    with pytest.raises(adamtune.StudyError, match="3 trials in a row failed; stopping. Last error: RuntimeError: metric exploded"):
        adamtune.tune(w, budget=6, batch=6, storage=storage, pruner="none", notice=notices.append)
    states, interrupted = _stored_states(storage, w.name)
    # three failed alone, as with --batch 1; the others end cut short (a rerun makes them up); none left running
    assert states == ["FAIL"] * 6 and interrupted == [False] * 3 + [True] * 3
    # the metric fails for one model alone too: the user's bug, not vmap's (no "training trials one at a time:")
    assert len(notices) == 1 and notices[0].startswith("training 6 trials of a batch of 6 again one at a time: the "
                                                       "batch stopped on RuntimeError: metric exploded")


def _raise_on_call(n, real, error=KeyboardInterrupt):
    """``real``, except that its ``n``-th call raises ``error`` instead."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise error
        return real(*args, **kwargs)

    return wrapped


# (what stops the study, where, the stored states and interrupted marks of the 5 trials)
CUT_SHORT = {
    "ctrl-c in the 2nd trial's training": (KeyboardInterrupt, ["COMPLETE"] + ["FAIL"] * 4, [False] + [True] * 4),
    "ctrl-c while the 1st trial is told": (KeyboardInterrupt, ["FAIL"] * 5, [True] * 5),
    # trial 2's own end (one transaction) is interrupted, so it stays RUNNING and unmarked: it
    # uses up the budget until it is lost (its process gone), then it is rerun; the trials after
    # it are still ended
    "ctrl-c again while the cut-short trials end": (KeyboardInterrupt, ["COMPLETE", "FAIL", "RUNNING", "FAIL", "FAIL"],
                                                    [False, True, False, True, True]),
    "repeated failures": (adamtune.StudyError, ["FAIL"] * 5, [False] * 3 + [True] * 2),
    "the notice raises": (RuntimeError, ["FAIL"] * 5, [True] * 5),
}


@pytest.mark.parametrize("stop", list(CUT_SHORT))
def test_a_fallback_cut_short_leaves_no_trial_running(storage, monkeypatch, stop):
    """The batch's trials not finished when the sequential fallback stops end as cut short:
    none stays running, and they do not use up the budget."""
    import adamtune.study as study_module

    w = dataclasses.replace(_digits(steps=20, eval_every=10), model=NotVmappable)
    def notice(message):
        if stop == "the notice raises":
            raise RuntimeError("a notice handler that raises")

    if stop == "ctrl-c in the 2nd trial's training":
        monkeypatch.setattr(study_module, "train_trial", _raise_on_call(2, study_module.train_trial))
    elif stop == "ctrl-c while the 1st trial is told":
        monkeypatch.setattr(study_module, "_tell_many", _raise_on_call(1, study_module._tell_many))
    elif stop == "ctrl-c again while the cut-short trials end":
        monkeypatch.setattr(study_module, "train_trial", _raise_on_call(2, study_module.train_trial))
        # the first cut-short end is trial 1's; the second, trial 2's, is interrupted too
        monkeypatch.setattr(study_module, "fail_if_running", _raise_on_call(2, study_module.fail_if_running))
    elif stop == "repeated failures":
        w = dataclasses.replace(w, metrics={"boom": _exploding_metric})
    error, states, interrupted = CUT_SHORT[stop]
    with pytest.raises(error):
        adamtune.tune(w, budget=5, storage=storage, pruner="none", notice=notice)
    monkeypatch.undo()
    assert _stored_states(storage, w.name) == (states, interrupted)
    if error is KeyboardInterrupt:
        if "RUNNING" in states:  # its worker, this process, is gone by the next run: say so
            _process_gone(storage)
        r = adamtune.tune(dataclasses.replace(w, model=NotVmappable), budget=5, storage=storage, pruner="none",
                          notice=lambda m: None)
        assert r.count(TrialState.COMPLETE) == 5  # the cut-short trials did not use up the budget


def _process_gone(storage):
    """Mark the running trials' worker as a process of this machine that has ended."""
    import sqlite3
    import subprocess

    from adamtune.heartbeat import _start_of, this_process

    ended = subprocess.Popen(["sleep", "60"])
    start = _start_of(ended.pid)
    ended.kill()
    ended.wait()
    boot, ns, _, _ = this_process().split()
    with sqlite3.connect(storage[len("sqlite:///"):]) as db:
        db.execute("update trial_user_attributes set value_json = json_quote(?) where key = 'process' and trial_id in "
                   "(select trial_id from trials where state = 'RUNNING')", (f"{boot} {ns} {ended.pid} {start}",))


# batched, with the quasi-random sampler, the batch's 5 trials are all made before any draws
@pytest.mark.parametrize("batch, states", [("auto", ["FAIL"] * 5), (1, ["COMPLETE", "COMPLETE", "FAIL"])])
def test_ctrl_c_while_a_trial_is_asked_ends_the_trials_made_so_far(storage, monkeypatch, batch, states):
    import adamtune.study as study_module

    # the 3rd trial is made, then Ctrl-C comes before its hyperparameters are drawn
    monkeypatch.setattr(study_module, "writes_kept", _raise_on_call(3, study_module.writes_kept))
    with pytest.raises(KeyboardInterrupt):
        adamtune.tune(_digits(steps=20, eval_every=10), budget=5, batch=batch, storage=storage, pruner="none")
    monkeypatch.undo()
    assert _stored_states(storage, "digits-mlp") == (states, [s == "FAIL" for s in states])



class _Own(nn.Module):
    """A small MLP behind a forward of its own: the batched engine runs it under vmap."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))

    def forward(self, x):
        return self.net(x)


def _small(**kw):
    x = torch.randn(96, 8, generator=torch.Generator().manual_seed(0))
    data = (x, (x.sum(1) > 0).long())
    args = dict(name="small", model=lambda: nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2)),
                train_data=data, valid_data=data, steps=4, batch_size=32, eval_every=2)
    return adamtune.Workload(**{**args, **kw})


def _vector_loss(o, t):
    return nn.functional.cross_entropy(o, t, reduction="none")


def _float_loss(o, t):
    return float(nn.functional.cross_entropy(o, t))


def _vector_metric(o, t):
    return (o.argmax(-1) == t).float()


MUST = r"^the workload's {} must return a tensor holding one value \(the mean over the minibatch\), got {}$"


@pytest.mark.parametrize("engine", ["sequential", "batched"])
@pytest.mark.parametrize("model", [None, _Own], ids=["written-out", "vmap"])
@pytest.mark.parametrize("mistake, said", [
    (dict(loss=_vector_loss), MUST.format("loss", r"a tensor of shape \[32\]")),
    (dict(loss=_float_loss), MUST.format("loss", "float")),
    (dict(metrics={"acc": _vector_metric}), MUST.format("metric 'acc'", r"a tensor of shape \[\d+\]")),
], ids=["vector-loss", "float-loss", "vector-metric"])
@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True to a scalar")
def test_a_loss_or_metric_not_giving_one_value_is_named(engine, model, mistake, said):
    w = _small(**mistake, **({"model": model} if model else {}))
    with pytest.raises(adamtune.WorkloadError, match=said):
        if engine == "sequential":
            train_trial(w, CONFIGS[0], init_seed=0, data_seed=0)
        else:
            train_members(w, CONFIGS[:2], init_seeds=[0, 1], data_seed=0)


def _padded_tokens(n, seed, vocab=20, length=8):
    """Token ids padded with 0 after a random length, labelled by how many ids are small."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, vocab, (n, length), generator=g)
    lengths = torch.randint(3, length + 1, (n,), generator=g)
    x = torch.where(torch.arange(length)[None] < lengths[:, None], x, torch.zeros_like(x))
    return x, ((x > 0) & (x < vocab // 2)).sum(1).gt(lengths // 2).long()


class PaddedEncoder(nn.Module):
    """A standard nn.TransformerEncoder (enable_nested_tensor left True) with a padding mask: in
    eval mode PyTorch's fast path packs its batch into a nested tensor, which vmap cannot batch."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 16, padding_idx=0)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        pad = x == 0
        keep = (~pad).unsqueeze(-1).float()
        return self.head((self.enc(self.emb(x), src_key_padding_mask=pad) * keep).sum(1) / keep.sum(1))


class CausalAttention(nn.Module):
    """Causal self-attention through F.scaled_dot_product_attention (vmap runs its CPU kernel
    member by member), whose forward warns as user code may."""

    def __init__(self):
        super().__init__()
        self.emb, self.qkv, self.head = nn.Embedding(20, 16), nn.Linear(16, 48), nn.Linear(16, 2)

    def forward(self, x):
        warnings.warn("the user's own warning")
        q, k, v = self.qkv(self.emb(x)).view(x.shape[0], x.shape[1], 3, 2, 8).unbind(2)
        a = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                             v.transpose(1, 2), is_causal=True)
        return self.head(a.transpose(1, 2).reshape(x.shape[0], x.shape[1], 16).mean(1))


def _attention(model):
    return adamtune.Workload(name="attention", model=model, train_data=_padded_tokens(96, 0),
                             valid_data=_padded_tokens(48, 1), steps=10, batch_size=16, eval_every=5)


# --batch 1 evaluates on PyTorch's fast path, as the model alone would, which warns of this
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
def test_a_padded_transformer_encoder_trains_batched_with_the_values_of_batch_1(tmp_path):
    runs = {}
    for k in (1, 3):
        notices = []
        runs[k] = adamtune.tune(_attention(PaddedEncoder), budget=3, storage=f"sqlite:///{tmp_path / f'k{k}.db'}",
                                batch=k, pruner="none", notice=notices.append)
        assert notices == []
    assert [t.engine for t in runs[3].trials] == ["batched (K=3)"] * 3
    for a, b in zip(runs[1].trials, runs[3].trials):
        assert (a.params, a.state) == (b.params, b.state)
        assert b.curve.metrics["val_loss"] == pytest.approx(a.curve.metrics["val_loss"], rel=1e-5)
    assert torch.backends.mha.get_fastpath_enabled()  # the user's setting again afterwards


@pytest.mark.parametrize("was", [True, False])
def test_the_attention_fast_path_is_put_back_as_it_was_also_after_an_error(was):
    torch.backends.mha.set_fastpath_enabled(was)
    try:
        with pytest.raises(NotBatchable):
            train_members(dataclasses.replace(_digits(), model=NotVmappable), [adamtune.Config()] * 2,
                          init_seeds=[0, 1], data_seed=0)
        assert torch.backends.mha.get_fastpath_enabled() is was
    finally:
        torch.backends.mha.set_fastpath_enabled(True)


@pytest.mark.parametrize("model", [PaddedEncoder, CausalAttention])
def test_vmaps_own_performance_notes_are_not_shown_the_users_warnings_are(storage, model):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", append=True)  # after adamtune's own filters, as a user's config adds them
        r = adamtune.tune(_attention(model), budget=2, storage=storage, pruner="none")
    assert {t.engine for t in r.trials} == {"batched (K=2)"}
    said = [str(w.message) for w in seen]
    assert not [m for m in said if "performance drop" in m or "nested tensors" in m or "Please file" in m]
    assert ("the user's own warning" in said) is (model is CausalAttention)


def test_stacks_in_two_threads_leave_the_attention_fast_path_as_it_was():
    """Each stack saved and put back the process-wide setting: one thread's stack ending after
    another's began left the fast path off for good."""
    import threading

    from adamtune.engine.batched import as_a_stack

    inside, out = threading.Event(), threading.Event()

    def first():
        with as_a_stack():
            inside.set()
            out.wait(10)

    t = threading.Thread(target=first)
    t.start()
    inside.wait(10)
    with as_a_stack():  # begins while the first runs, ends after it
        out.set()
        t.join(10)
        assert not torch.backends.mha.get_fastpath_enabled()
    assert torch.backends.mha.get_fastpath_enabled()

