"""Masks as pictures and as numbers: images with N:M groups visible, per-row/column sparsity.

A mask is a bool array (rows = outputs, columns = inputs), True where a weight is kept. How much two
runs' masks overlap (SAD, IoU) is ``workbench.results.overlap``.
"""

from __future__ import annotations

import numpy as np

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
