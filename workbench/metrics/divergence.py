"""Sparse architecture divergence between masks (SR-STE, Zhou et al. 2021) and mask IoU.

SAD(E1, E2) = sum |E2 - E1|: the number of positions whose kept/pruned state differs (popcount of
XOR). IoU = |E1 and E2| / |E1 or E2| over the kept positions.
"""

from __future__ import annotations

import torch


def sad(mask_a: torch.Tensor, mask_b: torch.Tensor) -> int:
    if mask_a.shape != mask_b.shape:
        raise ValueError(f"masks differ in shape: {tuple(mask_a.shape)} vs {tuple(mask_b.shape)}")
    return int((mask_a.bool() ^ mask_b.bool()).sum())


def iou(mask_a: torch.Tensor, mask_b: torch.Tensor) -> float:
    a, b = mask_a.bool(), mask_b.bool()
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0
