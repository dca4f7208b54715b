"""Peak memory of a block of work: the process's resident set, sampled, and the GPU's allocator peak.

ru_maxrss is the peak of the whole process's life, useless when one process runs many jobs; so a
thread samples the resident set every few milliseconds while the block runs.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE / 2**20
    except OSError:  # not Linux: fall back to the lifetime peak
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakMemory:
    """``with PeakMemory() as peak: ...`` then ``peak.rss_mb`` / ``peak.gpu_mb`` (None without a GPU)."""

    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self.rss_mb = 0.0
        self.gpu_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.rss_mb = max(self.rss_mb, rss_mb())

    def __enter__(self) -> "PeakMemory":
        self.rss_mb = rss_mb()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.rss_mb = max(self.rss_mb, rss_mb())
        if torch.cuda.is_available():
            self.gpu_mb = torch.cuda.max_memory_allocated() / 2**20
