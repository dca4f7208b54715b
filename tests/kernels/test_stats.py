import time

import numpy as np
import pytest

from workbench.kernels.measure.stats import paired_speedup, quantile, summarize
from workbench.kernels.measure.timing import Launch, measure, measure_steady
from workbench.kernels.report.selection import headline_metrics, mark_best


def test_quartiles_by_hand():
    stats = summarize([4.0, 1.0, 3.0, 2.0])
    # h = (n - 1) q: median between 2 and 3, q1 at 1 + 0.75, q3 at 3 + 0.25
    assert (stats.median_us, stats.q1_us, stats.q3_us, stats.min_us, stats.max_us, stats.reps) == (2.5, 1.75, 3.25, 1, 4, 4)
    assert summarize([7.0]).median_us == 7.0


@pytest.mark.parametrize("n", [2, 5, 10, 101])
def test_quantiles_match_numpy_on_synthetic_timings(n):
    rng = np.random.default_rng(n)
    samples = rng.lognormal(mean=3.0, sigma=0.5, size=n)  # timings: skewed, positive
    stats = summarize(samples)
    assert stats.median_us == pytest.approx(np.percentile(samples, 50))
    assert stats.q1_us == pytest.approx(np.percentile(samples, 25))
    assert stats.q3_us == pytest.approx(np.percentile(samples, 75))
    assert stats.min_us == pytest.approx(samples.min())
    assert quantile(sorted(samples), 0.9) == pytest.approx(np.percentile(samples, 90))


def test_one_slow_repetition_does_not_move_the_median():
    steady = [10.0] * 9
    assert summarize(steady + [1000.0]).median_us == 10.0
    assert summarize(steady + [1000.0]).spread == 0.0


def test_bad_samples_are_refused():
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        summarize([1.0, float("nan")])
    with pytest.raises(ValueError):
        quantile([1.0], 1.5)


def test_paired_speedup_is_the_ratio_of_medians():
    assert paired_speedup([10, 12, 11], [5, 6, 5.5]) == pytest.approx(2.0)


def _row(backend, median, speedup=None, tokens=2048, dtype="bf16", timing="graph", status="ok"):
    return {"phase": "kernel", "backend": backend, "dtype": dtype, "out_features": 64, "in_features": 64,
            "tokens": tokens, "timing": timing, "median_us": median, "speedup": speedup, "status": status}


def test_the_fastest_backend_of_each_case_is_marked_best():
    rows = [_row("dense", 10.0, 1.0), _row("semi24", 8.0, 1.25), _row("csr", 30.0, 0.33),
            _row("dense", 5.0, 1.0, tokens=1), _row("semi24", 7.0, 0.7, tokens=1),
            _row("semi24", 1.0, 9.0, timing="eager"),  # eager figures never win
            _row("csr", None, None, status="failed")]
    mark_best(rows)
    assert [r.get("best") for r in rows] == [False, True, False, True, False, None, None]


def test_headline_speedup_is_the_geometric_mean_of_each_large_case_best():
    rows = [_row("dense", 10.0, 1.0), _row("semi24", 8.0, 1.25), _row("semi24-tuned", 6.25, 1.6),
            _row("dense", 10.0, 1.0, dtype="fp16"), _row("semi24-tuned", 4.0, 2.5, dtype="fp16"),
            _row("semi24-tuned", 20.0, 0.5, tokens=1), _row("csr", None, None, status="failed")]
    metrics = headline_metrics(rows)
    assert metrics["speedup"] == pytest.approx((1.6 * 2.5) ** 0.5)
    assert metrics["best_speedup"] == 2.5
    assert (metrics["cases"], metrics["failed"]) == (3, 1)


def test_steady_blocks_run_each_launch_on_its_own_in_the_order_a_b_b_a():
    order: list[str] = []
    launches = {name: Launch(lambda name=name: order.append(name), calls=1) for name in ("dense", "backend")}
    alternated = measure(launches, "cpu", budget_s=0.0, warmup=1, min_samples=3, max_samples=3)
    assert order[-6:] == ["dense", "backend"] * 3 and all(len(v) == 3 for v in alternated.values())
    order.clear()
    blocks: list[str | None] = []
    steady = measure_steady(launches, "cpu", block_s=0.0, settle_s=0.0, min_samples=3, max_samples=3,
                            on_block=blocks.append)
    # each block: an untimed settling run (at least one: it sizes the block), the timer's own sizing
    # round, then three timed samples
    assert order == ["dense"] * 5 + ["backend"] * 10 + ["dense"] * 5
    assert blocks == [None, "dense", None, "backend", None, "backend", None, "dense", None]
    assert set(steady) == {"dense", "backend"} and all(len(v) == 6 for v in steady.values())


def test_a_block_settles_for_its_time_before_it_is_timed_but_not_again_for_the_same_launch():
    runs = [0]
    launch = Launch(lambda: (runs.__setitem__(0, runs[0] + 1), time.sleep(0.002)), calls=1)
    timed_from: list[tuple[float, int]] = []
    started = time.perf_counter()
    measure_steady({"only": launch}, "cpu", block_s=0.0, settle_s=0.05, min_samples=2, max_samples=2,
                   on_block=lambda name: name and timed_from.append((time.perf_counter() - started, runs[0])))
    (first_s, runs_before_first), (_, runs_before_second) = timed_from
    assert first_s >= 0.05 and runs_before_first >= 10  # 50 ms of 2 ms runs, untimed
    assert runs_before_second - runs_before_first == 1 + 2 + 1  # sizing, samples, one run (no settling)
