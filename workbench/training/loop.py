"""The training loop: small enough to read in one sitting.

Per step: the method's ``begin_step`` (GMP prunes here), forward and loss (plus the method's extra
terms, e.g. distillation), backward, ``before_optimizer_step`` (gradients masked), the optimizer
step at the scheduled learning rate, ``after_optimizer_step`` (weights masked, RigL/SET rewire).
Every ``log_every`` steps the mean loss is logged; every ``snapshot_every`` the masks are snapshot
and their SAD against the previous snapshot logged; every ``eval_every`` the model is evaluated
(also before the first step and after the last); every ``checkpoint_every`` a checkpoint is written.
"""

from __future__ import annotations

import math
import time

import torch

from workbench import progress
from workbench.faults import faultpoint
from workbench.records import Metric
from workbench.training.checkpoint import Checkpoints
from workbench.training.evolution import MaskEvolution
from workbench.training.registry import TrainingMethod
from workbench.training.sparsity import sparsity_of
from workbench.training.spec import Optimizer, TrainSpec
from workbench.training.tasks import Task


def build_optimizer(config: Optimizer, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def learning_rate(config: Optimizer, step: int, total: int) -> float:
    """Linear warm-up, then constant or cosine decay to zero at the last step."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


def _fault_point(step: int) -> None:
    faultpoint(f"train:step={step}")  # lets a test kill the job here, as a crash would


class TrainLoop:
    def __init__(self, spec: TrainSpec, task: Task, method: TrainingMethod, checkpoints: Checkpoints,
                 progress: bool = False):
        self.spec, self.task, self.method, self.checkpoints = spec, task, method, checkpoints
        self.model = method.context.model
        self.progress = progress
        self.metrics: list[Metric] = []
        self.evolution = MaskEvolution()
        self.resumed_from = 0
        self.eval_seconds = 0.0
        self._loss_sums: dict[str, float] = {}
        self._loss_count = 0

    # ------------------------------------------------------------ records
    def evaluate(self, step: int) -> dict[str, float]:
        started = time.perf_counter()
        result = self.task.evaluate(self.model)
        self.eval_seconds += time.perf_counter() - started
        self.metrics.extend(Metric(name, value, step) for name, value in result.items())
        return result

    def snapshot(self, step: int) -> None:
        masks = self.method.masks()
        self.metrics.extend(self.evolution.snapshot(step, masks))
        if masks:
            self.metrics.append(Metric("mask_sparsity", sparsity_of(masks), step))

    def log_losses(self, step: int, lr: float) -> None:
        for name, total in self._loss_sums.items():
            self.metrics.append(Metric(name, total / self._loss_count, step))
            progress.metric(name, total / self._loss_count)
        self.metrics.append(Metric("lr", lr, step))
        self._loss_sums, self._loss_count = {}, 0

    # ------------------------------------------------------------ resuming
    def save(self, step: int) -> None:
        self.checkpoints.save(step, self.model, self.method.context.optimizer, self.method.state_tensors(),
                              self.metrics, self.evolution.snapshots,
                              {"loss_sums": self._loss_sums, "loss_count": self._loss_count,
                               "eval_seconds": self.eval_seconds})

    def resume(self) -> int:
        restored = self.checkpoints.load_latest(self.model, self.method.context.optimizer)
        if restored is None:
            return 0
        state, method_tensors = restored
        self.method.load_state_tensors(method_tensors)
        self.metrics = state.metrics
        for step, masks in state.snapshots:
            self.evolution.snapshot(step, masks)
        self._loss_sums = state.extra["loss_sums"]
        self._loss_count = state.extra["loss_count"]
        self.eval_seconds = state.extra["eval_seconds"]
        self.resumed_from = state.step
        return state.step

    # ------------------------------------------------------------ the loop
    def run(self) -> None:
        spec, task, method, model = self.spec, self.task, self.method, self.model
        method.setup()
        optimizer = method.context.optimizer = build_optimizer(spec.optimizer, model)
        start = self.resume()
        if start == 0:
            self.snapshot(0)
            self.evaluate(0)
        model.train()
        progress.phase("training")
        bar = progress.Bar(range(start, spec.steps), desc=f"train {spec.method}", unit="step", enabled=self.progress,
                           initial=start, total=spec.steps)
        for step in bar:
            method.begin_step(step)
            batch = task.batch(step)
            with method.watch():
                outputs = task.run(model, batch)
                losses = {"loss_task": task.loss(outputs, batch)}
                extra = method.extra_loss(step, lambda m, batch=batch: task.run(m, batch))
                losses.update({f"loss_{k}": v for k, v in extra.items()})
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            method.before_optimizer_step(step)
            lr = learning_rate(spec.optimizer, step, spec.steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            method.after_optimizer_step(step)

            done = step + 1
            self._accumulate(loss, losses)
            if done % spec.log_every == 0 or done == spec.steps:
                self.log_losses(done, lr)
            if done % spec.snapshot_every == 0 or done == spec.steps:
                self.snapshot(done)
            if done % spec.eval_every == 0 or done == spec.steps:
                result = self.evaluate(done)
                bar.set_postfix({k: f"{v:.4g}" for k, v in result.items()})
            if done % spec.checkpoint_every == 0 and done < spec.steps:
                self.save(done)
                _fault_point(done)
        method.finish()

    def _accumulate(self, loss: torch.Tensor, losses: dict[str, torch.Tensor]) -> None:
        values = {"loss": float(loss.detach())}
        if len(losses) > 1:
            values.update({name: float(value.detach()) for name, value in losses.items()})
        for name, value in values.items():
            self._loss_sums[name] = self._loss_sums.get(name, 0.0) + value
        self._loss_count += 1
