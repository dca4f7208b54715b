"""Timing on a GPU (CUDA events, graph replay beside eager launches) and on a CPU (wall clock).

- Launch overhead: in eager mode every call pays the host's launch and planning cost (cuSPARSELt
  re-plans on every eager call), so small problems measure the host. A CUDA graph captures the calls
  once and replays them with one launch: the device time. Both are recorded.
- Caches: repeated calls on one weight measure the L2, not memory. Each sample cycles through
  ``copies`` distinct weights and inputs whose total is well beyond the L2 (BENCHMARKS.md, Weights).
- Noise: candidates are timed alternately in one process (A B A B ...), so a slow patch of the
  machine hits both; each sample is timed by its own pair of events.
- Drift: on an H200 one dense GEMM's median moved by up to 17% between blocks of samples seconds apart,
  more than alternation changed it; paired candidates are also timed each alone, so a reader can see
  both how far the blocks drift and that alternation slows neither side.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch


@dataclass
class Launch:
    """One sample: ``run()`` makes ``calls`` calls (one per rotated copy)."""

    run: Callable[[], None]
    calls: int
    graph: object | None = None  # keeps a captured graph (and its memory pool) alive


def rotation_copies(bytes_per_copy: int, rotate_bytes: int, max_copies: int = 512) -> int:
    """Distinct copies whose total working set exceeds ``rotate_bytes`` (at least 2)."""
    return int(min(max_copies, max(2, math.ceil(rotate_bytes / max(1, bytes_per_copy)))))


def eager_launch(calls: Sequence[Callable[[], object]]) -> Launch:
    def run() -> None:
        for call in calls:
            call()

    return Launch(run, len(calls))


def graph_launch(calls: Sequence[Callable[[], object]], warmup: int = 2) -> Launch:
    """Capture the calls into one CUDA graph (after warm-up on a side stream, as capture requires)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            for call in calls:
                call()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    return Launch(graph.replay, len(calls), graph)


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def sample_count(seconds_per_round: float, budget_s: float, min_samples: int, max_samples: int) -> int:
    """As many samples as fit in the budget, but never fewer than ``min_samples``."""
    if seconds_per_round <= 0:
        return max_samples
    return int(min(max_samples, max(min_samples, budget_s // seconds_per_round)))


def measure(launches: dict[str, Launch], device: str, budget_s: float, warmup: int = 3, min_samples: int = 10,
            max_samples: int = 200) -> dict[str, list[float]]:
    """Per-call times (microseconds) of each launch, sampled alternately; one list per launch."""
    for _ in range(warmup):
        for launch in launches.values():
            launch.run()
    _synchronize(device)
    started = time.perf_counter()
    for launch in launches.values():
        launch.run()
    _synchronize(device)
    samples = sample_count(time.perf_counter() - started, budget_s, min_samples, max_samples)
    names = list(launches)
    if device == "cuda":
        events = {name: [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                         for _ in range(samples)] for name in names}
        for i in range(samples):
            for name in names:
                start, end = events[name][i]
                start.record()
                launches[name].run()
                end.record()
        torch.cuda.synchronize()
        return {name: [start.elapsed_time(end) * 1e3 / launches[name].calls for start, end in events[name]]
                for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(samples):
        for name in names:
            start = time.perf_counter()
            launches[name].run()
            times[name].append((time.perf_counter() - start) * 1e6 / launches[name].calls)
    return times


def measure_alone(launches: dict[str, Launch], device: str, budget_s: float, warmup: int = 3, min_samples: int = 10,
                  max_samples: int = 200) -> dict[str, list[float]]:
    """Per-call times of each launch timed on its own, one launch after the other (no alternation)."""
    return {name: measure({name: launch}, device, budget_s, warmup, min_samples, max_samples)[name]
            for name, launch in launches.items()}
