"""Block-sparse (BSR, torch's dispatch or its Triton kernel) and unstructured (CSR) weights."""

from __future__ import annotations

import warnings
from abc import abstractmethod

import torch

from workbench.kernels.backends.base import Backend, PreparedWeight
from workbench.kernels.backends.formats import compressed_bytes
from workbench.kernels.measure.environment import DeviceInfo


class _Compressed(Backend):
    """Shared by the CSR/BSR backends: ``torch.mm(W_sparse, x^T)`` read back as (tokens, out)."""

    @abstractmethod
    def _convert(self, weight: torch.Tensor) -> torch.Tensor:
        """The dense weight as this format's torch sparse tensor."""

    def prepare(self, weight: torch.Tensor, dtype: str) -> PreparedWeight:
        with warnings.catch_warnings():  # torch flags its sparse compressed layouts as beta on every conversion
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            sparse = self._convert(weight)
        return PreparedWeight(sparse, compressed_bytes(sparse), dtype, tuple(weight.shape))

    def matmul(self, prepared: PreparedWeight, x: torch.Tensor) -> torch.Tensor:
        return torch.mm(prepared.data, x.t()).t()


class Bsr(_Compressed):
    name = "bsr"
    pattern = "block"
    devices = frozenset({"cpu", "cuda"})
    dtypes = {"cpu": frozenset({"fp32"}), "cuda": frozenset({"fp32", "bf16", "fp16"})}

    def _convert(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.to_sparse_bsr((self.block, self.block))


class BsrTriton(Bsr):
    name = "bsr-triton"
    devices = frozenset({"cuda"})
    dtypes = {"cuda": frozenset({"fp32", "bf16", "fp16"})}

    def unsupported(self, device: DeviceInfo, dtype: str) -> str | None:
        reason = super().unsupported(device, dtype)
        if reason is None:
            try:
                import triton  # noqa: F401
            except ImportError:
                reason = "triton is not installed"
        return reason

    def token_multiple(self, dtype: str) -> int:
        return 16  # bsr_dense_mm needs the dense operand's columns divisible by 16

    def matmul(self, prepared: PreparedWeight, x: torch.Tensor) -> torch.Tensor:
        from torch.sparse._triton_ops import bsr_dense_mm

        return bsr_dense_mm(prepared.data, x.t()).t()


class Csr(_Compressed):
    name = "csr"
    pattern = "unstructured"
    devices = frozenset({"cpu", "cuda"})
    dtypes = {"cpu": frozenset({"fp32"}), "cuda": frozenset({"fp32", "bf16", "fp16"})}

    def _convert(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.to_sparse_csr()
