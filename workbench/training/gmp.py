"""Gradual magnitude pruning (Zhu and Gupta, 2017, "To prune, or not to prune", Eq. 1).

Sparsity follows the cubic schedule

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3     for t = t0, t0 + dt, ..., t0 + n * dt

and stays at s_f afterwards. At each pruning step every layer's mask is recomputed by magnitude at
its own s_t (already pruned weights are zero, so they stay pruned); between steps the gradients are
masked before the optimizer step and the weights after it, so pruned weights stay exactly zero.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from workbench.training.density import layer_sparsities
from workbench.training.registry import TrainingMethod
from workbench.training.sparsity import apply_masks, magnitude_mask, weight_of


class GMPParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    initial_sparsity: float = Field(0.0, ge=0, lt=1, description="s_i")
    start: float = Field(0.1, ge=0, lt=1, description="t0 as a fraction of training")
    end: float = Field(0.7, gt=0, le=1, description="t0 + n * dt as a fraction of training")
    every: int = Field(50, ge=1, description="dt: steps between pruning steps")

    @model_validator(mode="after")
    def _ordered(self) -> "GMPParams":
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must come after start ({self.start})")
        return self


def cubic_sparsity(step: int, final: float, initial: float, t0: int, n: int, dt: int) -> float:
    """s_t of Zhu and Gupta's Eq. 1 (s_i before t0, s_f after t0 + n * dt)."""
    if step < t0:
        return initial
    if n == 0 or step >= t0 + n * dt:
        return final
    return final + (initial - final) * (1 - (step - t0) / (n * dt)) ** 3


class GradualMagnitude(TrainingMethod):
    name: ClassVar[str] = "gmp"
    version: ClassVar[str] = "1"
    Params: ClassVar[type[BaseModel]] = GMPParams
    supports_nm: ClassVar[bool] = False

    def setup(self) -> None:
        total, params = self.context.total_steps, self.params
        self.dt = params.every
        self.t0 = int(params.start * total)
        self.n = max(0, (int(params.end * total) - self.t0) // self.dt)
        self.final = layer_sparsities(self.context.layers, self.context.sparsity, self.context.density)
        self.mask = {name: torch.ones_like(weight_of(m), dtype=torch.bool) for name, m in self.context.layers.items()}
        self.prune_to(self.params.initial_sparsity)

    def is_pruning_step(self, step: int) -> bool:
        return self.t0 <= step <= self.t0 + self.n * self.dt and (step - self.t0) % self.dt == 0

    def target(self, name: str, step: int) -> float:
        return cubic_sparsity(step, self.final[name], self.params.initial_sparsity, self.t0, self.n, self.dt)

    def prune_to(self, sparsity: float | dict[str, float]) -> None:
        for name, module in self.context.layers.items():
            level = sparsity[name] if isinstance(sparsity, dict) else min(sparsity, self.final[name])
            self.mask[name] = magnitude_mask(weight_of(module) * self.mask[name], level)
        apply_masks(self.context.layers, self.mask)

    def begin_step(self, step: int) -> None:
        if self.is_pruning_step(step):
            self.prune_to({name: self.target(name, step) for name in self.context.layers})
