"""2:4 through torch's semi-structured sparse tensor: cuSPARSELt's default algorithm, or CUTLASS."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from workbench.kernels.backends.base import Backend, PreparedWeight


class Semi24Torch(Backend):
    """2:4 through torch's public API: ``to_sparse_semi_structured`` then ``F.linear``."""

    name = "semi24"
    pattern = "2:4"
    dtypes = {"cuda": frozenset({"bf16", "fp16"})}
    force_cutlass: ClassVar[bool] = False

    def math_fraction(self, density: float) -> float:
        return 0.5

    def prepare(self, weight: torch.Tensor, dtype: str) -> PreparedWeight:
        from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

        SparseSemiStructuredTensor._FORCE_CUTLASS = self.force_cutlass
        sparse = to_sparse_semi_structured(weight)
        parts = [getattr(sparse, name, None) for name in ("packed", "meta")]
        return PreparedWeight(sparse, sum(p.numel() * p.element_size() for p in parts if p is not None), dtype,
                              tuple(weight.shape))

    def matmul(self, prepared: PreparedWeight, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, prepared.data)


class Semi24Cutlass(Semi24Torch):
    """CUTLASS's 2:4 kernels compress on Hopper but multiply only on sm_8x; a failed call is recorded."""

    name = "semi24-cutlass"
    force_cutlass = True
