"""Train one trial: the plain PyTorch loop with the real torch.optim optimizer."""

from __future__ import annotations

import math

import optuna
import torch

from adamtune.config import Config, clip_gradients, make_optimizer, make_scheduler
from adamtune.engine.evaluate import evaluate, metric_fault
from adamtune.engine.monitor import CurveLog, DivergenceMonitor, GradNormLog
from adamtune.engine.outcome import Outcome
from adamtune.errors import WorkloadError
from adamtune.workloads import Workload, batch_stream, one_value


def prunes(trial: optuna.trial.Trial | None) -> bool:
    """Whether asking ``trial``'s pruner can ever say yes (NopPruner never does; asking reads storage)."""
    return trial is not None and not isinstance(trial.study.pruner, optuna.pruners.NopPruner)


def better(a: float, b: float, direction: str) -> bool:
    """Whether objective value ``a`` beats ``b``."""
    return a < b if direction == "minimize" else a > b


def infeasible(direction: str) -> float:
    """The value a diverged trial is told to Optuna with: never the best, steers samplers away."""
    return math.inf if direction == "minimize" else -math.inf


def first_step(workload: Workload, model: torch.nn.Module, device: torch.device | str = "cpu") -> None:
    """One training step's forward, loss and backward of ``model`` on one minibatch, as every
    trial's first step runs them: code wrong for every trial (data of another dtype than the
    model's, a shape the model does not take, a loss of one value per example or one autograd
    cannot differentiate) raises here, before a study stores anything. ``model`` is a model built
    for this and for planning only (not copied: some models cannot be); it is left on ``device``
    in training mode, its gradients dropped (its normalisation statistics have seen the minibatch).
    The random state is left as it was.

    Raises:
        Whatever the workload's code raises; WorkloadError for a loss that is not one value or
        does not require grad.
    """
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        model.to(dev).train()
        x, y = next(batch_stream(workload.train_data, workload.batch_size, 0))
        try:
            loss = workload.loss(model(x.to(dev)), y.to(dev))
            one_value(loss, "loss")
            if not loss.requires_grad:
                raise WorkloadError("the workload's loss does not require grad (computed under torch.no_grad(), "
                                    "detached, or of .item() values): training cannot differentiate it")
            loss.backward()
        finally:
            for p in model.parameters():
                p.grad = None
            if dev.type == "cuda":
                torch.cuda.empty_cache()  # the batch plan that follows measures free memory


def train_trial(
    workload: Workload,
    config: Config,
    *,
    init_seed: int,
    data_seed: int,
    trial: optuna.trial.Trial | None = None,
    device: torch.device | str = "cpu",
) -> Outcome:
    """Train ``workload`` with ``config``; report each evaluation to ``trial`` and obey its pruner.

    Args:
        init_seed: seed set before the model is built (its initial weights).
        data_seed: seed of the minibatch order (shared by all trials of a study).
        trial: the Optuna trial to report to; None trains without reporting.
    """
    torch.manual_seed(init_seed)
    model = workload.build_model().to(device)
    model.train()
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, workload.steps)
    batches = batch_stream(workload.train_data, workload.batch_size, data_seed)
    monitor = DivergenceMonitor(1, workload.divergence_factor, device)
    norms = GradNormLog()
    curve = CurveLog(1)
    evals = set(workload.evaluation_steps)
    best = infeasible(workload.direction)

    def finish(status: str, value: float, steps: int, diverged_at: int | None = None,
               error: str | None = None) -> Outcome:
        return Outcome(status, value, steps, curve.member(0), norms.summary(0, config.max_grad_norm), diverged_at,
                       error)

    for step in range(1, workload.steps + 1):
        x, y = next(batches)
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = workload.loss(model(x), y)
        if step == 1:  # backward() would say only "grad can be implicitly created only for scalar outputs"
            one_value(loss, "loss")
        loss.backward()
        norms.append(torch.tensor([clip_gradients(model, config)]))
        monitor.update(step, loss.reshape(1))
        if not math.isfinite(loss.item()):
            return finish("diverged", infeasible(workload.direction), step, step)
        optimizer.step()
        scheduler.step()
        if step not in evals:
            continue
        train_loss, diverged = monitor.end_interval()
        model.eval()
        metrics = evaluate(model, workload, device)
        model.train()
        curve.append(step, {"train_loss": train_loss, **metrics})
        value = float(metrics[workload.objective][0])
        if not bool(diverged[0]):
            fault = metric_fault(workload, {name: float(v[0]) for name, v in metrics.items()}, step)
            if fault is not None:
                return finish("failed", math.nan, step, error=fault)
        if bool(diverged[0]) or not math.isfinite(value):
            return finish("diverged", infeasible(workload.direction), step, step)
        if better(value, best, workload.direction):
            best = value
        if trial is not None:
            trial.report(value, step)
            # Not at the last step: a trial trained to the end is complete, whatever its rung says.
            if step < workload.steps and prunes(trial) and trial.should_prune():
                return finish("pruned", best, step)
    return finish("complete", best, workload.steps)
