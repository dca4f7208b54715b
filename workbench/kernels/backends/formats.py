"""Weights pruned to the pattern a sparse format needs, and the 2:4 compressed layout.

Benchmarks use random values pruned to the pattern, never zeros (zeros make matmuls look faster
than real weights and hide unwritten outputs). Three patterns:

- 2:4 (N:M with 2 kept of every 4 inputs), the pattern of NVIDIA's sparse tensor cores
  (Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks", Sec. 3), kept by magnitude;
- blocks of ``block x block`` weights, the ones with the largest Frobenius norm kept (BSR kernels);
- unstructured, a uniformly random subset kept (CSR kernels; the positions do not change the
  arithmetic, only the count does).

The compressed 2:4 layout stores the kept half of the values plus 2 bits of position per kept value:
for 16-bit values 0.5 + 2/16 / 2 = 0.5625 of the dense bytes, the memory-bound ceiling of a 2:4
kernel (1/0.5625 = 1.78x).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.pruning.masks import nm_mask

SEMI24_KEEP, SEMI24_GROUP = 2, 4


def semi24_mask(weight: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest magnitudes of every 4 consecutive inputs of each row (True = kept)."""
    return nm_mask(weight.float().abs(), SEMI24_KEEP, SEMI24_GROUP)


def block_mask(weight: torch.Tensor, sparsity: float, block: int) -> torch.Tensor:
    """Keep the round((1 - sparsity) * blocks) blocks of largest Frobenius norm (True = kept)."""
    rows, cols = weight.shape
    if rows % block or cols % block:
        raise ValueError(f"a {rows}x{cols} weight does not tile into {block}x{block} blocks")
    norms = weight.float().reshape(rows // block, block, cols // block, block).pow(2).sum((1, 3))
    kept = max(1, int(round((1.0 - sparsity) * norms.numel())))
    keep = torch.zeros(norms.numel(), dtype=torch.bool, device=weight.device)
    keep[torch.topk(norms.flatten(), kept).indices] = True
    keep = keep.view_as(norms)
    return keep.repeat_interleave(block, 0).repeat_interleave(block, 1)


def unstructured_mask(weight: torch.Tensor, sparsity: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Keep each weight with probability 1 - sparsity (True = kept)."""
    return torch.rand(weight.shape, generator=generator, device=weight.device) >= sparsity


@dataclass
class Semi24Packed:
    """A 2:4 weight in the compressed layout of the CUTLASS sparse kernels: kept values and metadata."""

    values: torch.Tensor  # (rows, cols / 2)
    meta: torch.Tensor  # int16 position bits, 2 per kept value
    shape: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return self.values.numel() * self.values.element_size() + self.meta.numel() * self.meta.element_size()


def semi24_pack(weight: torch.Tensor) -> Semi24Packed:
    """Compress a weight that already satisfies 2:4 (16-bit float or int8) into values + metadata."""
    from torch.sparse._semi_structured_conversions import sparse_semi_structured_from_dense_cutlass

    if weight.dtype not in (torch.float16, torch.bfloat16, torch.int8):
        raise ValueError(f"the 2:4 layout holds 16-bit floats or int8, not {weight.dtype}")
    values, meta = sparse_semi_structured_from_dense_cutlass(weight)
    return Semi24Packed(values, meta, tuple(weight.shape))


def semi24_unpack(packed: Semi24Packed) -> torch.Tensor:
    """The dense weight a compressed 2:4 weight stands for (zeros where pruned)."""
    from torch.sparse._semi_structured_conversions import sparse_semi_structured_to_dense_cutlass

    return sparse_semi_structured_to_dense_cutlass(packed.values, packed.meta)


def compressed_bytes(tensor: torch.Tensor) -> int:
    """Bytes a sparse-compressed tensor (CSR/BSR) occupies: values plus index arrays."""
    if tensor.layout in (torch.sparse_csr, torch.sparse_bsr):
        parts = (tensor.values(), tensor.crow_indices(), tensor.col_indices())
    else:
        parts = (tensor,)
    return sum(p.numel() * p.element_size() for p in parts)


def pattern_mask(weight: torch.Tensor, pattern: str, sparsity: float, block: int,
                 generator: torch.Generator | None = None) -> torch.Tensor | None:
    """The mask a backend's pattern gives a random weight (None for a dense backend)."""
    if pattern == "2:4":
        return semi24_mask(weight)
    if pattern == "block":
        return block_mask(weight, sparsity, block)
    if pattern == "unstructured":
        return unstructured_mask(weight, sparsity, generator)
    return None
