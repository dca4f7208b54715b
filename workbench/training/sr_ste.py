"""SR-STE: sparse-refined straight-through estimator for N:M training from scratch (Zhou et al., 2021,
"Learning N:M Fine-grained Structured Sparse Neural Networks From Scratch", Eq. 6-7).

Forward: the N:M mask E is recomputed from |W| at every forward pass and the layer computes with
W * E. Backward: the dense weights receive

    g + lambda_W * (1 - E) * W

where g is the gradient with respect to the masked weights, passed straight through to all weights.
The decay term pulls the pruned weights toward zero, so that they stop flipping in and out of the
mask (SAD falls). STE is the same with lambda_W = 0.

A short run needs a larger lambda_W than the paper's 2e-4 (tuned for 120 ImageNet epochs): the pull
on a pruned weight accumulates as lr * lambda_W per step, so it scales with the number of steps.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn.utils import parametrize

from workbench.training.registry import TrainingMethod
from workbench.training.sparsity import layer_nm_mask, weight_of


class SRSTEWeight(torch.autograd.Function):
    """W * E forward; straight-through gradient plus the refining decay on pruned weights backward."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, mask: torch.Tensor, decay: float) -> torch.Tensor:
        ctx.save_for_backward(weight, mask)
        ctx.decay = decay
        return weight * mask

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        weight, mask = ctx.saved_tensors
        return grad_output + ctx.decay * (~mask) * weight, None, None


class NMMaskedWeight(nn.Module):
    """A parametrization: the layer's weight is its dense original under a fresh N:M mask."""

    def __init__(self, keep: int, group: int, decay: float):
        super().__init__()
        self.keep, self.group, self.decay = keep, group, decay

    def mask(self, weight: torch.Tensor) -> torch.Tensor:
        return layer_nm_mask(weight.detach().abs(), self.keep, self.group)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return SRSTEWeight.apply(weight, self.mask(weight), self.decay)


class SRSTEParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decay: float = Field(2e-4, ge=0, description="lambda_W, the pull on pruned weights (paper: 2e-4)")


class STEParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SRSTE(TrainingMethod):
    name: ClassVar[str] = "sr-ste"
    version: ClassVar[str] = "1"
    Params: ClassVar[type[BaseModel]] = SRSTEParams
    nm_only: ClassVar[bool] = True

    @property
    def decay(self) -> float:
        return self.params.decay

    def setup(self) -> None:
        pattern = self.context.pattern
        for module in self.context.layers.values():
            parametrize.register_parametrization(module, "weight", NMMaskedWeight(pattern.keep, pattern.group, self.decay))

    # the mask lives in the forward pass; gradients and weights stay dense
    def before_optimizer_step(self, step: int) -> None:
        pass

    def after_optimizer_step(self, step: int) -> None:
        pass

    def masks(self) -> dict[str, torch.Tensor]:
        return {name: module.parametrizations["weight"][0].mask(weight_of(module))
                for name, module in self.context.layers.items()}

    def finish(self) -> None:
        """Bake W * E into plain weights: the model that leaves training is N:M sparse."""
        for module in self.context.layers.values():
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {}  # the mask is a function of the weights, which the checkpoint holds

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass


class STE(SRSTE):
    """Plain straight-through estimator: SR-STE without the decay (its baseline in the paper)."""

    name: ClassVar[str] = "ste"
    version: ClassVar[str] = "1"
    Params: ClassVar[type[BaseModel]] = STEParams

    @property
    def decay(self) -> float:
        return 0.0
