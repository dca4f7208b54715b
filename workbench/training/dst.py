"""Dynamic sparse training: SET (Mocanu et al., 2018) and RigL (Evci et al., 2020, Algorithm 1).

Each layer keeps a constant sparsity (uniform or ERK, see ``density``) from the first step. Every
dT steps until T_end, a fraction

    f_t = f / 2 * (1 + cos(pi * t / T_end))                        (RigL Eq. 1, cosine decay)

of each layer's active weights with the smallest |W| is dropped, and as many connections are grown
among the positions not active after the drop: at random (SET) or where the dense gradient |dL/dW|
is largest (RigL). A grown connection that was not active before starts at zero with fresh
optimizer state, so it enters the network without disturbing it.
"""

from __future__ import annotations

import math
import zlib
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from workbench.training.density import layer_sparsities
from workbench.training.registry import TrainingMethod
from workbench.training.sparsity import apply_masks, magnitude_mask, reset_optimizer_state, weight_of


class DSTParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    drop_fraction: float = Field(0.3, gt=0, lt=1, description="f, the initial drop fraction")
    every: int = Field(100, ge=1, description="dT: steps between topology updates")
    end: float = Field(0.75, gt=0, le=1, description="T_end as a fraction of training")
    scaled_init: bool = Field(True, description="rescale each unit's kept initial weights to its sparse fan-in")


def drop_fraction(step: int, initial: float, end_step: int) -> float:
    """f_t = f / 2 * (1 + cos(pi * t / T_end)): cosine decay from f to 0 at T_end."""
    return initial / 2 * (1 + math.cos(math.pi * step / end_step))


def drop_and_grow(weight: torch.Tensor, mask: torch.Tensor, fraction: float,
                  grow_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The new mask and the newly active positions: drop ``fraction`` of the active weights with the
    smallest |W|, grow as many where ``grow_scores`` is highest among the positions left inactive."""
    flat_mask = mask.reshape(-1)
    count = int(fraction * int(flat_mask.sum()))
    if count == 0:
        return mask.clone(), torch.zeros_like(mask)
    magnitude = torch.where(flat_mask, weight.detach().abs().reshape(-1), torch.inf)
    dropped = torch.topk(magnitude, count, largest=False).indices
    after_drop = flat_mask.clone()
    after_drop[dropped] = False
    scores = torch.where(after_drop, -torch.inf, grow_scores.reshape(-1).float())
    grown = torch.topk(scores, count).indices
    new_mask = after_drop.clone()
    new_mask[grown] = True
    return new_mask.view_as(mask), (new_mask & ~flat_mask).view_as(mask)


@torch.no_grad()
def scale_to_sparse_fan_in(weight: torch.Tensor, mask: torch.Tensor) -> None:
    """Multiply each output unit's kept weights by sqrt(fan_in / kept fan_in), so that a sparse unit
    starts with the output variance of its dense initialisation (Evci et al., 2022, "Gradient Flow in
    Sparse Neural Networks", Sec. 3: without it, signals shrink with every sparse layer)."""
    rows = mask.reshape(mask.shape[0], -1)
    kept = rows.sum(1).clamp(min=1).to(weight.dtype)
    scale = (rows.shape[1] / kept).sqrt()
    weight.mul_(scale.view(-1, *([1] * (weight.dim() - 1))))


class DynamicSparse(TrainingMethod, ABC):
    """Shared prune-and-grow loop; subclasses say where connections grow."""

    Params: ClassVar[type[BaseModel]] = DSTParams
    supports_nm: ClassVar[bool] = False

    def setup(self) -> None:
        targets = layer_sparsities(self.context.layers, self.context.sparsity, self.context.density)
        self.end_step = max(1, int(self.params.end * self.context.total_steps))
        self.mask = {name: self.initial_mask(name, weight_of(m), targets[name]) for name, m in self.context.layers.items()}
        apply_masks(self.context.layers, self.mask)
        if self.params.scaled_init:
            for name, module in self.context.layers.items():
                scale_to_sparse_fan_in(weight_of(module), self.mask[name])

    def initial_mask(self, name: str, weight: torch.Tensor, sparsity: float) -> torch.Tensor:
        """A random mask at exactly the layer's sparsity (both papers start from Erdos-Renyi topologies)."""
        return magnitude_mask(self.uniform_noise(name, weight, step=0), sparsity)

    def uniform_noise(self, name: str, weight: torch.Tensor, step: int) -> torch.Tensor:
        """Uniform noise drawn from (seed, layer, step) alone, so that a resumed run draws what the
        uninterrupted one would have."""
        seed = (self.context.seed * 1_000_003 + step) * 65_537 + zlib.crc32(name.encode())
        generator = torch.Generator().manual_seed(seed % 2**63)
        return torch.rand(weight.shape, generator=generator).to(weight.device)

    def is_update_step(self, step: int) -> bool:
        return step > 0 and step % self.params.every == 0 and step < self.end_step

    @abstractmethod
    def grow_scores(self, name: str, weight: torch.Tensor, step: int) -> torch.Tensor:
        """Where to grow: the highest scores among the inactive positions win."""

    def before_optimizer_step(self, step: int) -> None:
        self.dense_grad = {}
        if self.is_update_step(step + 1):
            self.dense_grad = {name: weight_of(m).grad.detach().abs().clone()
                               for name, m in self.context.layers.items() if weight_of(m).grad is not None}
        super().before_optimizer_step(step)

    def after_optimizer_step(self, step: int) -> None:
        super().after_optimizer_step(step)
        done = step + 1
        if not self.is_update_step(done):
            return
        fraction = drop_fraction(done, self.params.drop_fraction, self.end_step)
        for name, module in self.context.layers.items():
            weight = weight_of(module)
            self.mask[name], grown = drop_and_grow(weight, self.mask[name], fraction,
                                                   self.grow_scores(name, weight, done))
            with torch.no_grad():
                weight.masked_fill_(grown, 0.0)
            reset_optimizer_state(self.context.optimizer, weight, grown)
        apply_masks(self.context.layers, self.mask)


class SET(DynamicSparse):
    name: ClassVar[str] = "set"
    version: ClassVar[str] = "1"

    def grow_scores(self, name: str, weight: torch.Tensor, step: int) -> torch.Tensor:
        return self.uniform_noise(name, weight, step)


class RigL(DynamicSparse):
    name: ClassVar[str] = "rigl"
    version: ClassVar[str] = "1"

    def grow_scores(self, name: str, weight: torch.Tensor, step: int) -> torch.Tensor:
        return self.dense_grad[name]
