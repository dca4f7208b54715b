"""The dense baseline: F.linear on the unpruned weight; ``_scaled_mm`` for fp8, ``_int_mm`` for int8."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from workbench.kernels.backends.base import Backend, PreparedWeight
from workbench.kernels.measure.environment import DeviceInfo


class Dense(Backend):
    name = "dense"
    devices = frozenset({"cpu", "cuda"})
    dtypes = {"cpu": frozenset({"fp32", "bf16"}), "cuda": frozenset({"fp32", "bf16", "fp16", "fp8", "int8"})}

    def unsupported(self, device: DeviceInfo, dtype: str) -> str | None:
        reason = super().unsupported(device, dtype)
        if reason is None and dtype == "fp8" and device.capability is not None and device.capability < (8, 9):
            reason = "fp8 matmuls need compute capability 8.9 or newer"
        return reason

    def token_multiple(self, dtype: str) -> int:
        return {"fp8": 16, "int8": 8}.get(dtype, 1)

    def min_tokens(self, dtype: str) -> int:
        return 32 if dtype == "int8" else 1  # torch._int_mm needs more than 16 rows

    def math_fraction(self, density: float) -> float:
        return 1.0

    def prepare(self, weight: torch.Tensor, dtype: str) -> PreparedWeight:
        data: Any = weight
        if dtype == "fp8":
            one = torch.ones((), device=weight.device, dtype=torch.float32)
            data = (weight, one)
        return PreparedWeight(data, weight.numel() * weight.element_size(), dtype, tuple(weight.shape))

    def matmul(self, prepared: PreparedWeight, x: torch.Tensor) -> torch.Tensor:
        if prepared.dtype == "fp8":
            weight, one = prepared.data
            return torch._scaled_mm(x, weight.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
        if prepared.dtype == "int8":
            return torch._int_mm(x, prepared.data.t())
        return F.linear(x, prepared.data)
