"""The GPU's SM clock and board power while a case is timed, read through NVML in a background thread.

Why: a Hopper GPU running large GEMMs sits at its board power limit, and its power controller lowers
the SM clock to stay there (an H200 at 700 W: 1.35-1.56 GHz instead of 1.98). The clock a workload gets
depends on its own power draw, so two kernels timed in turns share a clock set by the mix, while a
workload run on its own settles at its own clock. Each timing block is tagged, and the row keeps the
median clock, power and the share of samples the power cap was holding the clock down, wherever
the clocks are readable. Without NVML (no NVIDIA driver, no ``pynvml``) nothing
is recorded.
"""

from __future__ import annotations

import statistics
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

# NVML's clocks event reasons (nvml.h): the software power cap, and the thermal slowdowns
POWER_CAP = 0x4
THERMAL = 0x20 | 0x40


@dataclass(frozen=True)
class ClockReading:
    sm_mhz: float
    power_w: float
    reasons: int  # NVML clocks event reason bits


class ClockSampler:
    """Samples ``read()`` every ``interval_s`` in a daemon thread and files each reading under the current tag."""

    def __init__(self, read: Callable[[], ClockReading], interval_s: float = 0.02):
        self._read, self._interval = read, interval_s
        self._tag: str | None = None
        self._readings: dict[str, list[ClockReading]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tag(self, name: str | None) -> None:
        """Readings from now on belong to ``name`` (None: not filed)."""
        self._tag = name

    def sample_once(self) -> None:
        tag = self._tag
        if tag is not None:
            self._readings[tag].append(self._read())

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.sample_once()
            except Exception:  # noqa: BLE001 - a failed reading loses a sample, never the measurement
                continue

    def __enter__(self) -> ClockSampler:
        self._thread = threading.Thread(target=self._loop, name="clock-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self) -> dict[str, dict[str, float]]:
        """Per tag: median SM clock (MHz) and power (W), and the share of readings power-capped or thermally slowed."""
        out = {}
        for tag, readings in self._readings.items():
            if readings:
                out[tag] = {"sm_mhz": statistics.median(r.sm_mhz for r in readings),
                            "power_w": round(statistics.median(r.power_w for r in readings), 1),
                            "power_capped": round(sum(bool(r.reasons & POWER_CAP) for r in readings) / len(readings), 3),
                            "thermal": round(sum(bool(r.reasons & THERMAL) for r in readings) / len(readings), 3),
                            "readings": len(readings)}
        return out


class _NoSampler(ClockSampler):
    """Where NVML cannot be read: tags are accepted and nothing is recorded."""

    def __init__(self) -> None:
        super().__init__(lambda: ClockReading(0.0, 0.0, 0))

    def sample_once(self) -> None:
        return None

    def __enter__(self) -> ClockSampler:
        return self


def _nvml_reader(device_index: int) -> Callable[[], ClockReading] | None:
    """A reader of the NVML device that is torch's CUDA device ``device_index`` (matched by PCI address,
    since CUDA_VISIBLE_DEVICES may renumber devices), or None where NVML is not readable."""
    try:
        import pynvml
        import torch

        pynvml.nvmlInit()
        props: Any = torch.cuda.get_device_properties(device_index)
        address = f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
        handle = pynvml.nvmlDeviceGetHandleByPciBusId(address)
        reasons = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            pynvml.nvmlDeviceGetCurrentClocksThrottleReasons
        pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)  # fails here, not in the thread
    except Exception:  # noqa: BLE001 - no driver, no pynvml, a device NVML does not list: no clocks
        return None

    def read() -> ClockReading:
        return ClockReading(float(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)),
                            pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0, int(reasons(handle)))

    return read


def clock_sampler(device: str) -> ClockSampler:
    """A sampler of the current CUDA device's clocks; one that records nothing on a CPU or without NVML."""
    if device != "cuda":
        return _NoSampler()
    import torch

    read = _nvml_reader(torch.cuda.current_device())
    return _NoSampler() if read is None else ClockSampler(read)


def clocks_by_mode(summary: dict[str, dict[str, float]]) -> dict[str, dict[str, dict[str, float]]]:
    """A sampler's summary under ``timing.measure_mode``'s tags ("graph alternated", "graph dense", ...)
    as timing mode -> what was timed -> clocks."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for tag, figures in summary.items():
        mode, timed = tag.split(" ", 1)
        out.setdefault(mode, {})[timed] = figures
    return out
