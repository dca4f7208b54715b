"""Masks of training layers: N:M along input channels, holding gradients and weights to a mask,
resetting optimizer state where a connection is new.

Convolution weights (out, in, kh, kw) form N:M groups along the input channels at each kernel
position, the order in which an implicit GEMM reads them (as NVIDIA's sparse tensor cores and the
SR-STE reference need); linear weights (out, in) along the input. Masks keep the weight's shape.
"""

from __future__ import annotations

import torch
from torch import nn

from workbench.pruning.masks import nm_mask, nm_valid, nm_weight_valid, topk_mask


def weight_of(module: nn.Module) -> torch.Tensor:
    """The trainable dense weight (under a parametrization, its original)."""
    parametrizations = getattr(module, "parametrizations", None)
    if parametrizations is not None and "weight" in parametrizations:
        return parametrizations["weight"].original
    return module.weight


def _channels_last(tensor: torch.Tensor) -> torch.Tensor:
    """(out, in, kh, kw) -> (out * kh * kw, in): each row is one kernel position's input channels."""
    return tensor.permute(0, 2, 3, 1).reshape(-1, tensor.shape[1]) if tensor.dim() == 4 else tensor


def layer_nm_mask(scores: torch.Tensor, keep: int, group: int) -> torch.Tensor:
    """Keep the ``keep`` highest scores of every ``group`` consecutive input channels (N = kept)."""
    if scores.dim() != 4:
        return nm_mask(scores, keep, group)
    out, channels, kh, kw = scores.shape
    mask = nm_mask(_channels_last(scores), keep, group)
    return mask.view(out, kh, kw, channels).permute(0, 3, 1, 2).contiguous()


def layer_nm_valid(mask: torch.Tensor, keep: int, group: int) -> bool:
    """Every group keeps exactly ``keep`` positions."""
    return nm_valid(_channels_last(mask), keep, group)


def layer_nm_weight_valid(weight: torch.Tensor, keep: int, group: int) -> bool:
    """Every group holds at most ``keep`` non-zero weights (what a sparse kernel needs)."""
    return nm_weight_valid(_channels_last(weight.detach()), keep, group)


def nm_width(module: nn.Module) -> int:
    """The width N:M groups run along: input channels of a convolution, inputs of a linear layer."""
    return weight_of(module).shape[1]


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Exactly round(sparsity * numel) smallest |W| pruned (see pruning.masks.topk_mask)."""
    return topk_mask(weight.detach().abs(), sparsity)


@torch.no_grad()
def apply_masks(layers: dict[str, nn.Module], masks: dict[str, torch.Tensor]) -> None:
    for name, mask in masks.items():
        weight_of(layers[name]).mul_(mask)


@torch.no_grad()
def mask_gradients(layers: dict[str, nn.Module], masks: dict[str, torch.Tensor]) -> None:
    for name, mask in masks.items():
        grad = weight_of(layers[name]).grad
        if grad is not None:
            grad.mul_(mask)


@torch.no_grad()
def reset_optimizer_state(optimizer: torch.optim.Optimizer | None, weight: torch.Tensor,
                          positions: torch.Tensor) -> None:
    """Zero every per-weight optimizer buffer (momentum, Adam moments) at ``positions``: a connection
    that was just grown starts with no history (RigL, Evci et al. 2020, Sec. 3)."""
    if optimizer is None or weight not in optimizer.state:
        return
    for value in optimizer.state[weight].values():
        if isinstance(value, torch.Tensor) and value.shape == weight.shape:
            value.masked_fill_(positions, 0)


def sparsity_of(masks: dict[str, torch.Tensor]) -> float:
    """Fraction of pruned positions over all masks, weighted by size."""
    total = sum(mask.numel() for mask in masks.values())
    return sum(int((~mask).sum()) for mask in masks.values()) / total if total else 0.0
