"""The clock sampler files each NVML reading under the timing block it was taken in."""

import time

from workbench.kernels.measure.clocks import POWER_CAP, ClockReading, ClockSampler, clock_sampler, clocks_by_mode


def test_readings_are_filed_under_their_block_and_summarised():
    readings = iter([ClockReading(1980, 300.0, 0), ClockReading(1500, 690.0, POWER_CAP),
                     ClockReading(1400, 700.0, POWER_CAP), ClockReading(1470, 695.0, 0x1)])
    sampler = ClockSampler(lambda: next(readings))
    sampler.tag("graph alternated")
    sampler.sample_once()
    sampler.sample_once()
    sampler.tag(None)
    sampler.sample_once()  # between blocks: not read
    sampler.tag("graph dense")
    sampler.sample_once()
    sampler.sample_once()
    summary = sampler.summary()
    assert summary["graph alternated"] == {"sm_mhz": 1740.0, "power_w": 495.0, "power_capped": 0.5, "thermal": 0.0,
                                           "readings": 2}
    assert summary["graph dense"]["sm_mhz"] == 1435.0 and summary["graph dense"]["power_capped"] == 0.5
    assert clocks_by_mode(summary)["graph"]["dense"]["readings"] == 2


def test_the_thread_samples_while_a_block_runs():
    sampler = ClockSampler(lambda: ClockReading(1000, 100.0, 0), interval_s=0.001)
    with sampler:
        sampler.tag("wall backend")
        deadline = time.monotonic() + 5
        while not sampler.summary() and time.monotonic() < deadline:
            time.sleep(0.005)
    assert sampler.summary()["wall backend"]["sm_mhz"] == 1000


def test_a_cpu_records_no_clocks():
    with clock_sampler("cpu") as sampler:
        sampler.tag("wall dense")
        sampler.sample_once()
    assert sampler.summary() == {}
