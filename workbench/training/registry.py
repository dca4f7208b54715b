"""Sparse-training methods: one module each, one line in ``METHODS``.

A method is a class with a ``name``, a ``version`` (bump it when its result changes: it enters the
key), a pydantic ``Params`` model, and hooks the training loop calls in this order every step:

    begin_step(t)            before the forward pass (t = optimizer steps done so far)
    forward, loss, backward
    before_optimizer_step(t) gradients are there (mask them, keep RigL's dense gradient)
    optimizer.step()
    after_optimizer_step(t)  re-apply the mask to the weights, update the topology

``masks()`` is the current kept/pruned state of every sparse layer (what the store snapshots) and
``finish()`` leaves plain sparse weights in the model. Method state that a resumed run needs (the
masks) goes through ``state_tensors`` / ``load_state_tensors``.
"""

from __future__ import annotations

import importlib
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, ContextManager

import torch
from pydantic import BaseModel
from torch import nn

from workbench.errors import SpecError
from workbench.params import HasParams
from workbench.training.sparsity import apply_masks, mask_gradients
from workbench.values import Pattern

METHODS: dict[str, str] = {
    "dense": "workbench.training.dense:Dense",
    "ste": "workbench.training.sr_ste:STE",
    "sr-ste": "workbench.training.sr_ste:SRSTE",
    "gmp": "workbench.training.gmp:GradualMagnitude",
    "set": "workbench.training.dst:SET",
    "rigl": "workbench.training.dst:RigL",
    "sparse-finetune": "workbench.training.finetune:SparseFinetune",
    "structured-recovery": "workbench.training.recovery:StructuredRecovery",
}


@dataclass
class TrainContext:
    """What a method may read and change. ``optimizer`` is set after ``setup`` (SR-STE re-wires weights)."""

    model: nn.Module
    layers: dict[str, nn.Module]  # the sparse layers (Linear, Conv2d) by qualified name
    sparsity: float  # model-wide target
    pattern: Pattern
    density: str  # uniform | erk
    total_steps: int
    seed: int
    params: BaseModel
    optimizer: torch.optim.Optimizer | None = None
    calibration: torch.Tensor | None = None  # token windows for one-shot methods that need them
    family: str = "image"
    teacher: nn.Module | None = None  # a recovery's dense model (``model`` is then a pruned run's shrunk model)
    teacher_blocks: tuple[int, ...] | None = None  # the teacher's block under each student block


class TrainingMethod(HasParams):
    """Base: a fixed mask (``self.mask``) that gradients and weights are held to. Dense keeps none.
    One instance per run; the spec validates parameters on the class, before any run exists."""

    supports_nm: ClassVar[bool] = True
    nm_only: ClassVar[bool] = False
    # trains the model of an earlier structured prune run (``params.from_run``), dense, evaluated as that run
    starts_from_run: ClassVar[bool] = False
    what: ClassVar[str] = "training method"

    def __init__(self, context: TrainContext):
        self.context = context
        self.mask: dict[str, torch.Tensor] = {}

    @classmethod
    def validate_params(cls, params: dict[str, Any] | None) -> dict[str, Any]:  # type: ignore[override]
        return HasParams.validate_params(cls, params)  # type: ignore[arg-type]

    @property
    def params(self) -> Any:
        return self.context.params

    # ------------------------------------------------------------ hooks
    def setup(self) -> None:
        """Install the initial masks before the optimizer exists."""

    def begin_step(self, step: int) -> None:
        """Before the forward pass of step ``step`` (steps done so far)."""

    def before_optimizer_step(self, step: int) -> None:
        mask_gradients(self.context.layers, self.mask)

    def after_optimizer_step(self, step: int) -> None:
        apply_masks(self.context.layers, self.mask)

    def watch(self) -> ContextManager[Any]:
        """Entered around the forward pass and ``extra_loss`` of every step (to record features)."""
        return nullcontext()

    def extra_loss(self, step: int, run_model: Callable[[nn.Module], Any]) -> dict[str, torch.Tensor]:
        """Terms added to the task loss, by name; ``run_model(module)`` runs a module on this step's batch."""
        return {}

    def masks(self) -> dict[str, torch.Tensor]:
        return {name: mask.clone() for name, mask in self.mask.items()}

    def finish(self) -> None:
        apply_masks(self.context.layers, self.mask)

    # ------------------------------------------------------------ resuming
    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"mask/{name}": mask for name, mask in self.mask.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        device = {name: module.weight.device for name, module in self.context.layers.items()}
        self.mask = {key.removeprefix("mask/"): value.bool().to(device[key.removeprefix("mask/")])
                     for key, value in tensors.items() if key.startswith("mask/")}


def resolve_method(name: str) -> type[TrainingMethod]:
    if name not in METHODS:
        raise SpecError(f"unknown training method {name!r}", f"use one of: {', '.join(sorted(METHODS))}")
    module, attribute = METHODS[name].split(":")
    return getattr(importlib.import_module(module), attribute)
