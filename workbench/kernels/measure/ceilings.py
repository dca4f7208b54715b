"""The machine's own ceilings, measured in the same run as the cases they judge.

A roofline (Williams, Waterman & Patterson 2009, "Roofline: an insightful visual performance model")
bounds a kernel's time from below by the larger of its arithmetic over the peak matmul rate and its
bytes over the memory bandwidth. Datasheet peaks are not reached in practice, so both ceilings are
measured here: a large device-to-device copy (bytes read plus bytes written) and a large dense matmul
in each dtype, on random data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.kernels.backends.dense import Dense
from workbench.kernels.measure.environment import DTYPES
from workbench.kernels.measure.harness import random_values
from workbench.kernels.measure.stats import summarize
from workbench.kernels.measure.timing import Launch, measure


@dataclass
class Ceiling:
    what: str  # "copy" | "matmul"
    dtype: str
    samples_us: list[float]
    bytes_moved: int = 0
    flops: float = 0.0

    @property
    def gbps(self) -> float:
        return self.bytes_moved / summarize(self.samples_us).median_us / 1e3

    @property
    def tflops(self) -> float:
        return self.flops / summarize(self.samples_us).median_us / 1e6


def copy_bandwidth(device: str, megabytes: int) -> Ceiling:
    """Copy ``megabytes`` from one buffer to another; bytes moved = read + written."""
    count = megabytes * 2**20
    source = torch.randint(0, 255, (count,), dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    times = measure({"copy": Launch(lambda: target.copy_(source), 1)}, device, budget_s=0.3, min_samples=10,
                    max_samples=50)
    return Ceiling("copy", "uint8", times["copy"], bytes_moved=2 * count)


def matmul_rate(device: str, dtype: str, size: int) -> Ceiling:
    """A ``size`` cubed dense matmul through the dense backend (the same call the cases time)."""
    generator = torch.Generator(device=device).manual_seed(0)
    dense = Dense()
    weight = dense.prepare(random_values((size, size), dtype, device, generator).to(DTYPES[dtype]), dtype)
    x = random_values((size, size), dtype, device, generator).to(DTYPES[dtype])
    times = measure({"mm": Launch(lambda: dense.matmul(weight, x), 1)}, device, budget_s=0.5, min_samples=5,
                    max_samples=30)
    return Ceiling("matmul", dtype, times["mm"], flops=2.0 * size**3)


def roofline_us(flops: float, math_fraction: float, bytes_moved: int, matmul_tflops: float | None,
                copy_gbps: float | None) -> float | None:
    """The floor: the larger of the (format-reduced) arithmetic time and the memory time, in microseconds."""
    if not matmul_tflops or not copy_gbps:
        return None
    return max(flops * math_fraction / (matmul_tflops * 1e6), bytes_moved / (copy_gbps * 1e3))
