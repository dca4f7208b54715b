"""Achieved sparsity, measured on the weights themselves (not on what a method says it did)."""

from __future__ import annotations

import torch
from torch import nn


def weight_sparsity(weight: torch.Tensor) -> float:
    return float((weight == 0).sum()) / weight.numel()


def overall_sparsity(layers: dict[str, nn.Module]) -> float:
    """Fraction of zeros over all prunable weights, counted by weight (big layers weigh more)."""
    zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
    total = sum(m.weight.numel() for m in layers.values())
    return zeros / total if total else 0.0
