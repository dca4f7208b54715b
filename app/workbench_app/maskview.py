"""Masks as pictures and as numbers: images with N:M groups visible, per-row/column sparsity, overlaps.

A mask is a bool array (rows = outputs, columns = inputs), True where a weight is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Mapping

import numpy as np
import pandas as pd

# Kept weights dark, pruned ones light; alternate N:M groups get a second shade of each so that the
# groups of M consecutive inputs stand out when zoomed in.
PALETTE = np.array([[244, 244, 244],   # pruned, even group
                    [222, 226, 236],   # pruned, odd group
                    [28, 58, 115],     # kept, even group
                    [64, 112, 196]],   # kept, odd group
                   dtype=np.uint8)
MAX_PIXELS = 2_000_000  # beyond this the overview is block-averaged (a browser draws it without stalling)


def mask_image(mask: np.ndarray, group: int | None = None) -> np.ndarray:
    """RGB picture of a mask: one pixel per weight; with ``group`` (M of N:M), alternate groups shaded."""
    mask = np.asarray(mask, dtype=bool)
    code = mask.astype(np.uint8) * 2
    if group and group > 1:
        code += ((np.arange(mask.shape[1]) // group) % 2).astype(np.uint8)[None, :]
    return PALETTE[code]


def density_image(mask: np.ndarray, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, int]:
    """Fraction kept per square block, with the smallest block side that fits ``max_pixels``: (image, side)."""
    mask = np.asarray(mask, dtype=bool)
    rows, cols = mask.shape
    side = 1
    while (-(-rows // side)) * (-(-cols // side)) > max_pixels:
        side += 1
    if side == 1:
        return mask.astype(np.float32), 1
    padded = np.zeros((-(-rows // side) * side, -(-cols // side) * side), dtype=np.float32)
    counts = np.zeros_like(padded)
    padded[:rows, :cols] = mask
    counts[:rows, :cols] = 1
    shape = (padded.shape[0] // side, side, padded.shape[1] // side, side)
    return padded.reshape(shape).sum(axis=(1, 3)) / counts.reshape(shape).sum(axis=(1, 3)), side


def row_sparsity(mask: np.ndarray) -> np.ndarray:
    """Fraction of zeros in each output row (a per-row method like Wanda makes it constant)."""
    return 1.0 - np.asarray(mask, dtype=bool).mean(axis=1)


def column_sparsity(mask: np.ndarray) -> np.ndarray:
    """Fraction of zeros in each input column (dead inputs show up as columns at 1.0)."""
    return 1.0 - np.asarray(mask, dtype=bool).mean(axis=0)


# set bits of every byte value: popcount by table lookup works on any numpy version
_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


@dataclass(frozen=True)
class PackedMask:
    """A mask at 1 bit per weight (numpy packbits, zero padding), for overlaps over whole models."""

    bits: np.ndarray
    shape: tuple[int, ...]

    @classmethod
    def of(cls, mask: np.ndarray) -> "PackedMask":
        mask = np.asarray(mask, dtype=bool)
        return cls(np.packbits(mask.ravel()), mask.shape)


def _ones(bits: np.ndarray) -> int:
    return int(_POPCOUNT[bits].sum(dtype=np.int64))


def overlap(masks_a: Mapping[str, PackedMask], masks_b: Mapping[str, PackedMask]) -> tuple[int, int, int]:
    """(kept in both, kept in either, weights compared) over the layers both hold with the same shape.

    IoU = both / either; SAD (Zhou et al. 2021) = positions that differ = either - both. Counted on the
    packed bits, so a whole model's masks stay at 1 bit per weight in memory.
    """
    both = either = numel = 0
    for layer in masks_a.keys() & masks_b.keys():
        a, b = masks_a[layer], masks_b[layer]
        if a.shape != b.shape:
            continue  # not the same weights
        both += _ones(a.bits & b.bits)
        either += _ones(a.bits | b.bits)
        numel += int(np.prod(a.shape))
    return both, either, numel


def overlap_matrices(masks: Mapping[str, Mapping[str, PackedMask]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs x runs IoU and SAD fraction of the given runs' masks ({run: {layer: mask}}); NaN where disjoint."""
    runs = list(masks)
    iou = pd.DataFrame(np.nan, index=runs, columns=runs)
    sad = pd.DataFrame(np.nan, index=runs, columns=runs)
    for run in runs:
        if masks[run]:
            iou.loc[run, run], sad.loc[run, run] = 1.0, 0.0
    for a, b in combinations(runs, 2):
        both, either, numel = overlap(masks[a], masks[b])
        if numel:
            iou.loc[a, b] = iou.loc[b, a] = both / either if either else 1.0
            sad.loc[a, b] = sad.loc[b, a] = (either - both) / numel
    return iou, sad
