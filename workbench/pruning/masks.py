"""Turning scores into masks with exact counts: per matrix, per row, per N:M group.

A mask is a bool tensor shaped like the weight, True where the weight is kept. Counts are exact
(top-k), never a `<=` threshold that over-prunes on ties.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from workbench.errors import PruningError
from workbench.values import Pattern


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
    """Keep the highest scores of each row (the last dim): every row prunes its int(sparsity * columns)
    lowest scores (stable: of equal scores, the lower column index goes first)."""
    columns = scores.shape[-1]
    prune = int(columns * sparsity)
    if prune >= columns:
        raise PruningError(f"sparsity {sparsity:g} leaves no weight in rows of {columns} inputs",
                           "lower the sparsity (or the OWL lambda that raised it)")
    if not prune:
        return torch.ones_like(scores, dtype=torch.bool)
    # The first `prune` entries of a stable ascending sort, without sorting: every score below the row's
    # prune-th smallest goes, and of the scores equal to it, the lowest columns go first.
    threshold = torch.kthvalue(scores, prune, dim=-1, keepdim=True).values
    below = scores < threshold
    ties = scores == threshold
    room = prune - below.sum(-1, keepdim=True)
    return ~(below | (ties & (ties.cumsum(-1) <= room)))


def check_nm_width(name: str, cols: int, group: int) -> None:
    if cols % group:
        raise PruningError(f"layer {name} has input width {cols}, which the N:M group size {group} does not divide",
                           f"choose an M that divides {cols}, or prune this model unstructured")


def input_widths(layers: Mapping[str, nn.Module]) -> dict[str, int]:
    """Each layer's input width: the axis N:M groups run along (a weight's last dimension)."""
    return {name: module.weight.shape[-1] for name, module in layers.items()}


def check_pattern_fits(widths: Mapping[str, int], pattern: Pattern) -> None:
    """N:M needs every layer's input width to be a multiple of M: say which layer is not, before any work."""
    if pattern.is_nm:
        for name, cols in widths.items():
            check_nm_width(name, cols, pattern.group)


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


def nm_kept(pattern: Pattern, sparsity: float) -> int:
    """Inputs an N:M layer keeps of every M at its target sparsity: N at the pattern's own sparsity; a searched
    N:M allocation hands each layer ``1 - N_layer / M``, and Wanda and SparseGPT keep ``N_layer``."""
    return round(pattern.group * (1 - sparsity))


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


_BIT_SHIFTS = (7, 6, 5, 4, 3, 2, 1, 0)  # the first weight of a byte in its highest bit, as numpy.packbits


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor as flat uint8 bytes, eight weights a byte in numpy.packbits' order (the last byte padded
    with False), packed where the mask lives: a GPU mask crosses to the host at one eighth of its size."""
    if mask.device.type == "cpu":  # numpy's packbits is ~15x faster than the tensor arithmetic on a CPU
        return torch.from_numpy(np.packbits(mask.to(torch.bool).reshape(-1).numpy()))
    return _pack_bits_on_device(mask)


def _pack_bits_on_device(mask: torch.Tensor) -> torch.Tensor:
    flat = mask.reshape(-1)
    if flat.numel() % 8:
        flat = torch.cat([flat, flat.new_zeros(8 - flat.numel() % 8)])
    shifts = torch.tensor(_BIT_SHIFTS, dtype=torch.uint8, device=mask.device)
    return (flat.view(-1, 8).to(torch.uint8) << shifts).sum(-1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: torch.Size | tuple[int, ...] | list[int]) -> torch.Tensor:
    """``pack_bits`` undone: the bool tensor of the given shape (multi-threaded tensor arithmetic)."""
    shifts = torch.tensor(_BIT_SHIFTS, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(-1)[: math.prod(shape)].view(torch.bool).reshape(tuple(shape))
