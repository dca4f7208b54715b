"""Masks as compact, content-addressed blobs: 1 bit per weight (numpy packbits), then zlib.

The hash covers the shape and the bits, so the same mask is stored once whichever run or step made it.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

# numpy and torch are imported where masks are encoded or decoded: the store and its readers start without them
if TYPE_CHECKING:
    import torch

ENCODING = "packbits-zlib-v1"


@dataclass(frozen=True)
class EncodedMask:
    hash: str
    data: bytes
    rows: int
    cols: int
    kept: int


def _shape2d(mask: torch.Tensor) -> tuple[int, int]:
    if mask.dim() == 1:
        return 1, mask.numel()
    return mask.shape[0], mask[0].numel()


def encode_mask(mask: torch.Tensor) -> EncodedMask:
    import numpy as np
    import torch

    bits = mask.detach().to("cpu", torch.bool).contiguous()
    rows, cols = _shape2d(bits)
    packed = np.packbits(bits.reshape(-1).numpy())
    data = zlib.compress(packed.tobytes(), level=1)
    digest = hashlib.sha256(f"{ENCODING}:{rows}x{cols}:".encode() + packed.tobytes()).hexdigest()
    return EncodedMask(digest, data, rows, cols, int(bits.sum()))


def decode_mask(data: bytes, rows: int, cols: int) -> torch.Tensor:
    import numpy as np
    import torch

    packed = np.frombuffer(zlib.decompress(data), dtype=np.uint8)
    bits = np.unpackbits(packed, count=rows * cols).astype(bool)
    return torch.from_numpy(bits.reshape(rows, cols))
