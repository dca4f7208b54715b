"""What a figure was measured on: device, versions, clocks. Every row records it: a speedup holds only for
the GPU, driver and library versions it was measured with."""

from __future__ import annotations

import ctypes
import functools
import os
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


def loaded_cusparselt_version(library: str = "libcusparseLt.so.0") -> int | None:
    """The version of the cuSPARSELt this process has loaded, in the library's own encoding
    (major * 1000000 + minor * 100 + patch), or None where none is loaded.

    torch reports the version it was built against; a newer library installed into its environment
    (or preloaded) is what actually runs, and its kernels are what a figure measures."""
    try:  # RTLD_NOLOAD: the copy already in this process, never a fresh load from the search path
        handle = ctypes.CDLL(library, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except OSError:
        return None
    parts = []
    for prop in (0, 1, 2):  # libraryPropertyType: MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL
        value = ctypes.c_int()
        if handle.cusparseLtGetProperty(prop, ctypes.byref(value)) != 0:
            return None
        parts.append(value.value)
    major, minor, patch = parts
    return major * 1000000 + minor * 100 + patch


def cusparselt_version() -> int | None:
    """cuSPARSELt's version as it runs: the loaded library's, else the one torch was built against."""
    loaded = loaded_cusparselt_version()
    if loaded is not None:
        return loaded
    try:
        return torch.backends.cusparselt.version()
    except (AttributeError, RuntimeError):
        return None


def versions(kind: str) -> dict[str, Any]:
    """Versions of everything that decides a kernel's speed."""
    info: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(),
                            "threads": torch.get_num_threads()}
    if kind == "cuda":
        info["cuda"] = torch.version.cuda
        info["cusparselt"] = cusparselt_version()
        try:
            import triton

            info["triton"] = triton.__version__
        except ImportError:
            info["triton"] = None
        info["clocks"] = _gpu_clocks()
        info["sm90_sparse"] = sm90_sparse_library()
    return info


def sm90_sparse_library() -> str | None:
    """The semi24-sm90 backend's library as found here (a hash of the file: a rebuild with other kernels
    gives other figures), or None where there is none."""
    import hashlib

    from workbench.kernels.backends.sm90_sparse.library import LibraryUnavailable, library_path

    try:
        return hashlib.sha256(library_path().read_bytes()).hexdigest()[:12]
    except LibraryUnavailable:
        return None


@functools.lru_cache(maxsize=None)
def device_identity(kind: str) -> str:
    """What enters a benchmark's cache key: the same spec on another machine or stack is another job."""
    info = device_info(kind)
    stack = versions(kind)
    parts = [info.label, f"torch {stack['torch']}"]
    if kind == "cuda":
        parts += [f"cuda {stack['cuda']}", f"cusparselt {stack['cusparselt']}"]
        if stack.get("sm90_sparse"):
            parts.append(f"sm90-sparse {stack['sm90_sparse']}")
    return " | ".join(parts)
