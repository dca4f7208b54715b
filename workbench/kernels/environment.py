"""What a figure was measured on: device, versions, clocks (BENCHMARKS.md: record it with every figure)."""

from __future__ import annotations

import functools
import platform
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

import torch

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp8": torch.float8_e4m3fn,
    "int8": torch.int8,
}
# 8-bit matmuls accumulate wider: fp8 -> bf16 output (as torch._scaled_mm), int8 -> int32 (as torch._int_mm)
OUTPUT_DTYPES: dict[str, torch.dtype] = {"fp8": torch.bfloat16, "int8": torch.int32}


def output_dtype(dtype: str) -> torch.dtype:
    return OUTPUT_DTYPES.get(dtype, DTYPES[dtype])


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # "cpu" | "cuda"
    name: str
    capability: tuple[int, int] | None = None
    l2_bytes: int = 0
    memory_bytes: int = 0

    @property
    def label(self) -> str:
        return self.name if self.capability is None else f"{self.name} (sm_{self.capability[0]}{self.capability[1]})"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(kind: str) -> DeviceInfo:
    if kind == "cuda":
        props = torch.cuda.get_device_properties(0)
        return DeviceInfo("cuda", props.name, (props.major, props.minor), int(getattr(props, "L2_cache_size", 0)),
                          int(props.total_memory))
    return DeviceInfo("cpu", _cpu_name())


def _gpu_clocks() -> str | None:
    """SM and memory clocks as nvidia-smi reads them (None where it is missing)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.mem,clocks.max.sm,power.limit",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def versions(kind: str) -> dict[str, Any]:
    """Versions of everything that decides a kernel's speed."""
    info: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(),
                            "threads": torch.get_num_threads()}
    if kind == "cuda":
        info["cuda"] = torch.version.cuda
        try:
            info["cusparselt"] = torch.backends.cusparselt.version()
        except (AttributeError, RuntimeError):
            info["cusparselt"] = None
        try:
            import triton

            info["triton"] = triton.__version__
        except ImportError:
            info["triton"] = None
        info["clocks"] = _gpu_clocks()
    return info


@functools.lru_cache(maxsize=None)
def device_identity(kind: str) -> str:
    """What enters a benchmark's cache key: the same spec on another machine or stack is another job."""
    info = device_info(kind)
    stack = versions(kind)
    parts = [info.label, f"torch {stack['torch']}"]
    if kind == "cuda":
        parts += [f"cuda {stack['cuda']}", f"cusparselt {stack['cusparselt']}"]
    return " | ".join(parts)
