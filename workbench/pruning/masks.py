"""Turning scores into masks with exact counts: per matrix, per row, per N:M group.

A mask is a bool tensor shaped like the weight, True where the weight is kept. Counts are exact
(top-k), never a `<=` threshold that over-prunes on ties.
"""

from __future__ import annotations

import torch

from workbench.errors import PruningError


def pruned_count(total: int, sparsity: float) -> int:
    """How many of ``total`` weights a sparsity removes (rounded to nearest, as torch.nn.utils.prune)."""
    return int(round(sparsity * total))


def topk_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the highest scores of the whole matrix; exactly round(sparsity * numel) are pruned."""
    flat = scores.reshape(-1)
    prune = pruned_count(flat.numel(), sparsity)
    mask = torch.ones(flat.numel(), dtype=torch.bool, device=scores.device)
    if prune:
        mask.scatter_(0, torch.topk(flat, prune, largest=False).indices, False)  # no host value: CUDA-graph safe
    return mask.view_as(scores)


def row_topk_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the highest scores of each row (the last dim); every row prunes int(sparsity * cols),
    rounded down so that a row always keeps at least one weight when sparsity < 1."""
    prune = int(scores.shape[-1] * sparsity)
    mask = torch.ones_like(scores, dtype=torch.bool)
    if prune:
        mask.scatter_(-1, torch.topk(scores, prune, dim=-1, largest=False).indices, False)
    return mask


def check_nm_width(name: str, cols: int, group: int) -> None:
    if cols % group:
        raise PruningError(f"layer {name} has input width {cols}, which the N:M group size {group} does not divide",
                           f"choose an M that divides {cols}, or prune this model unstructured")


def nm_mask(scores: torch.Tensor, keep: int, group: int) -> torch.Tensor:
    """In every run of ``group`` consecutive inputs of a row, keep the ``keep`` highest scores."""
    rows, cols = scores.shape[0], scores[0].numel()
    check_nm_width("(matrix)", cols, group)
    grouped = scores.reshape(rows, cols // group, group)
    mask = torch.zeros_like(grouped, dtype=torch.bool)
    mask.scatter_(-1, torch.topk(grouped, keep, dim=-1).indices, True)
    return mask.view_as(scores)


def nm_prune_mask(scores: torch.Tensor, keep: int, group: int) -> torch.Tensor:
    """Keep mask pruning, in every run of ``group`` consecutive inputs of a row, the ``group - keep`` lowest
    scores (``nm_mask`` selects the other way round: the ``keep`` highest). Ties go as torch.topk (smallest
    first) breaks them, the reference implementations' order for Wanda and SparseGPT: quantised weights
    make exact ties between different inputs happen, and one broken the other way changes every later
    block's calibration."""
    rows, columns = scores.shape
    check_nm_width("(matrix)", columns, group)
    grouped = scores.reshape(rows, columns // group, group)
    mask = torch.ones_like(grouped, dtype=torch.bool)
    mask.scatter_(-1, torch.topk(grouped, group - keep, dim=-1, largest=False).indices, False)
    return mask.view_as(scores)


def nm_valid(mask: torch.Tensor, keep: int, group: int) -> bool:
    """True when every group of ``group`` consecutive inputs keeps exactly ``keep`` weights."""
    rows = mask.shape[0]
    cols = mask[0].numel()
    if cols % group:
        return False
    return bool((mask.reshape(rows, cols // group, group).sum(-1) == keep).all())


def nm_weight_valid(weight: torch.Tensor, keep: int, group: int) -> bool:
    """True when every group holds at most ``keep`` non-zeros (what a 2:4 kernel needs of the weights)."""
    rows = weight.shape[0]
    cols = weight[0].numel()
    if cols % group:
        return False
    return bool(((weight.reshape(rows, cols // group, group) != 0).sum(-1) <= keep).all())
