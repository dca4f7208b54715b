"""Timing on a GPU (CUDA events, graph replay beside eager launches) and on a CPU (wall clock).

- Launch overhead: in eager mode every call pays the host's launch and planning cost (cuSPARSELt
  re-plans on every eager call), so small problems measure the host. A CUDA graph captures the calls
  once and replays them with one launch: the device time. Both are recorded.
- Caches: repeated calls on one weight measure the L2, not memory. Each sample cycles through
  ``copies`` distinct weights and inputs whose total is well beyond the L2: a weight that stays in the
  L2 between calls makes decode-sized problems look faster than they run in a model.
- Noise: candidates are timed alternately in one process (A B A B ...), so a slow patch of the
  machine hits both; each sample is timed by its own pair of events.
- Power: a GPU at its board power limit (an H200 running large GEMMs, at 700 W) lowers its clock to
  stay there, so each workload settles at a clock of its own. Timed in turns, two candidates share a
  clock set by their mix: a sparse 7B model's prefill took 41.0 ms alternated with its dense original
  and 40.0 ms on its own (1.50 against 1.44 GHz), the dense model 53.5 and 54.4 ms. So candidates are
  also timed in steady blocks: each runs untimed until its clock settles, then is timed on its own,
  in the order A B B A, so that a slow drift (warming) weighs both alike. The blocks give the figure a
  user running one model sees.
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


def measure_mode(launches: dict[str, Launch], device: str, mode: str, budget_s: float, steady_s: float,
                 settle_s: float, warmup: int, min_samples: int, max_samples: int,
                 tag: Callable[[str | None], None]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """One timing mode of a comparison: the launches alternated, then (two or more, and not in eager mode,
    whose figures measure the host) each in steady blocks. ``tag`` names what is being timed, as
    "<mode> alternated" or "<mode> <launch>" (None in between), for a clock sampler."""
    tag(f"{mode} alternated")
    times = measure(launches, device, budget_s, warmup, min_samples, max_samples)
    steady: dict[str, list[float]] = {}
    if len(launches) > 1 and mode != "eager":
        steady = measure_steady(launches, device, steady_s, settle_s, min_samples,
                                on_block=lambda name: tag(name and f"{mode} {name}"))
    tag(None)
    return times, steady


def measure_steady(launches: dict[str, Launch], device: str, block_s: float, settle_s: float, min_samples: int = 3,
                   max_samples: int = 5000, on_block: Callable[[str | None], None] | None = None
                   ) -> dict[str, list[float]]:
    """Per-call times of each launch timed on its own in steady blocks, in the order A B ... B A.

    Before a block the launch runs untimed for ``settle_s`` (the GPU's clock settles to that workload's
    power draw; the second of two blocks in a row needs none), then is timed for about ``block_s``.
    ``on_block`` is told the name of each timed block and None between them (a clock sampler's tag)."""
    names = list(launches)
    order = names + names[::-1]
    tell = on_block or (lambda name: None)
    times: dict[str, list[float]] = {name: [] for name in names}
    previous = None
    for name in order:
        launch = launches[name]
        tell(None)
        per_run = _settle(launch, device, settle_s if name != previous else 0.0)
        samples = int(min(max_samples, max(min_samples, block_s // max(per_run, 1e-9))))
        tell(name)
        times[name] += measure({name: launch}, device, 0.0, warmup=0, min_samples=samples,
                               max_samples=samples)[name]
        previous = name
    tell(None)
    return times


def _settle(launch: Launch, device: str, settle_s: float) -> float:
    """Runs ``launch`` untimed for ``settle_s`` (at least once); returns the seconds one run took."""
    runs, started = 0, time.perf_counter()
    while True:
        launch.run()
        _synchronize(device)
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= settle_s:
            return elapsed / runs
