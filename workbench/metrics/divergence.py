"""Sparse architecture divergence between masks (SR-STE, Zhou et al. 2021) and mask IoU, on tensors.

SAD(E1, E2) = sum |E2 - E1|: the number of positions whose kept/pruned state differs (popcount of
XOR). IoU = |E1 and E2| / |E1 or E2| over the kept positions. Both are read off one
``workbench.results.Overlap`` (the same definitions the readers apply to bit-packed masks). Pure
functions: comparing two stored runs (and caching the result) is ``workbench.api.compare``.
"""

from __future__ import annotations

import torch

from workbench.results import Overlap


def tensor_overlap(mask_a: torch.Tensor, mask_b: torch.Tensor) -> Overlap:
    """Kept in both, kept in either and positions compared, of two masks of the same shape."""
    if mask_a.shape != mask_b.shape:
        raise ValueError(f"masks differ in shape: {tuple(mask_a.shape)} vs {tuple(mask_b.shape)}")
    a, b = mask_a.bool(), mask_b.bool()
    return Overlap(int((a & b).sum()), int((a | b).sum()), a.numel())


def sad(mask_a: torch.Tensor, mask_b: torch.Tensor) -> int:
    return tensor_overlap(mask_a, mask_b).sad


def iou(mask_a: torch.Tensor, mask_b: torch.Tensor) -> float:
    return tensor_overlap(mask_a, mask_b).iou
