import json

import pytest

from workbench import queries
from workbench.kernels.measure.isolation import run_isolated
from workbench.runner import run_job
from workbench.spec import parse_spec

METHODOLOGY = ["median_us", "q1_us", "q3_us", "min_us", "reps", "tflops", "gbps", "bytes_moved", "roofline_us",
               "roofline_fraction", "speedup", "rel_error", "device", "versions"]


def _spec(tiny_timing, **kernels):
    return {"kind": "bench", "device": "cpu", "kernels": {"shapes": ["64x128"], "tokens": [1, 16], **kernels},
            "timing": tiny_timing}


def test_cpu_bench_stores_a_row_per_case_with_every_methodology_field(store, tiny_timing, monkeypatch):
    # the second csr case crashes its worker: a row with the error, a fresh worker for the rest
    monkeypatch.setenv("WORKBENCH_KERNEL_FAULT", "csr:64x128-t1:crash")
    result = run_job(_spec(tiny_timing, backends=["csr", "semi24"]), store)
    rows = queries.kernel_results(store, [result.run_id])

    ceilings = rows[rows["phase"] == "ceiling"]
    assert set(ceilings["backend"]) == {"copy", "matmul"} and (ceilings["status"] == "ok").all()
    assert ceilings["gbps"].max() > 0 and ceilings["tflops"].max() > 0

    kernels = rows[rows["phase"] == "kernel"]
    dense = kernels[kernels["backend"] == "dense"]
    assert len(dense) == 2 and (dense["status"] == "ok").all() and (dense["timing"] == "wall").all()
    assert dense[METHODOLOGY].notna().all().all()
    assert (dense["speedup"] == 1.0).all() and (dense["rel_error"] < 1e-5).all()
    assert (dense["q1_us"] <= dense["median_us"]).all() and (dense["median_us"] <= dense["q3_us"]).all()
    assert (dense["min_us"] <= dense["q1_us"]).all()
    assert json.loads(dense["versions"].iloc[0])["torch"]

    csr = kernels[kernels["backend"] == "csr"].set_index("case_id")
    assert csr.loc["64x128-t1", "status"] == "failed" and "worker died" in csr.loc["64x128-t1", "error"]
    measured = csr.loc["64x128-t16"]
    assert measured["status"] == "ok" and 0.85 < measured["sparsity"] < 0.95
    assert measured[METHODOLOGY].notna().all()
    extra = json.loads(measured["extra"])
    assert extra["dense_median_us"] > 0  # the paired baseline, timed alternately
    # and each of the two in steady blocks of its own after that: the speedup they give is stored beside
    assert extra["steady_median_us"] > 0 and extra["dense_steady_median_us"] > 0
    assert extra["speedup_steady"] == pytest.approx(extra["dense_steady_median_us"] / extra["steady_median_us"])
    assert "clocks" not in extra  # a CPU has no GPU clock to record

    semi = kernels[kernels["backend"] == "semi24"]
    assert len(semi) == 2 and (semi["status"] == "unsupported").all() and semi["error"].str.contains("cuda").all()

    # the fastest backend of each measured case is marked; one-time costs are rows of their own
    best = kernels[kernels["best"] == True]  # noqa: E712
    assert sorted(best["case_id"]) == ["64x128-t1", "64x128-t16"]
    setup = rows[rows["phase"] == "setup"]
    assert {"first_call", "convert_s_per_weight"} <= {json.loads(e)["what"] for e in setup["extra"]}
    assert result.metrics["failed"] == 1 and result.metrics["unsupported"] == 2

    again = run_job(_spec(tiny_timing, backends=["csr", "semi24"]), store)
    assert again.cached and again.run_id == result.run_id


def test_a_hanging_case_is_killed_and_recorded_as_a_timeout(monkeypatch):
    monkeypatch.setenv("WORKBENCH_KERNEL_FAULT", "dense:b:hang")
    settings = {"dtype": "fp32", "budget_ms": 1, "min_samples": 2, "max_samples": 3, "rotate_mb": 0}
    cases = [{"case_id": c, "out_features": 32, "in_features": 32, "tokens": 2} for c in "abc"]
    records = run_isolated({"mode": "kernels", "device": "cpu", "backend": "dense", "settings": settings,
                            "cases": cases}, case_timeout_s=6, startup_s=60)
    status = {r["case_id"]: r["status"] for r in records if r["kind"] == "case"}
    assert status == {"a": "ok", "b": "timeout", "c": "ok"}


def test_bench_specs_fill_device_defaults_and_reject_unknown_names():
    spec = parse_spec({"kind": "bench", "device": "cpu", "kernels": {"backends": ["csr"]}})
    assert spec.kernels.backends == ("dense", "csr")  # the baseline always runs, first
    assert spec.kernels.dtypes == ("fp32",) and spec.kernels.tokens == (1, 16, 128)
    assert "latency" not in spec.canonical() and "kernels" in spec.canonical()
    gpu = parse_spec({"kind": "bench", "device": "cuda", "kernels": {"shapes": ["4096X11008"]}})
    assert gpu.kernels.shapes == ("4096x11008",) and "semi24-tuned" in gpu.kernels.backends
    assert gpu.kernels.tokens == (1, 16, 128, 2048, 8192) and "fp8" in gpu.kernels.dtypes
    latency = parse_spec({"kind": "bench", "target": "latency", "device": "cuda", "latency": {"model": "llama-7b"}})
    assert latency.latency.variants[0] == "dense" and latency.latency.dtype == "bf16"
    assert "kernels" not in latency.canonical()
    from workbench.errors import SpecError

    for bad in ({"kernels": {"backends": ["cusparse-magic"]}}, {"kernels": {"shapes": ["4096"]}},
                {"target": "latency", "latency": {"model": "gpt-5"}}, {"kernels": {"dtypes": ["fp4"]}}):
        with pytest.raises(SpecError):
            parse_spec({"kind": "bench", **bad})


def test_cases_past_the_suite_deadline_are_rows_that_say_so():
    import time

    cases = [{"case_id": c, "out_features": 32, "in_features": 32, "tokens": 2} for c in "ab"]
    records = run_isolated({"mode": "kernels", "device": "cpu", "backend": "dense", "settings": {"dtype": "fp32"},
                            "cases": cases}, case_timeout_s=60, deadline=time.time() - 1)
    assert [(r["case_id"], r["status"]) for r in records] == [("a", "skipped"), ("b", "skipped")]
    assert "time budget" in records[0]["error"]


def test_a_run_cut_short_by_its_time_budget_is_stored_but_never_served_as_finished(store, tiny_timing):
    from workbench.records import INCOMPLETE, JobOutput, Metric
    from workbench.spec import job_key

    plain = _spec(tiny_timing, backends=["csr"])
    budgeted = {**plain, "timing": {**tiny_timing, "time_budget_s": 0}}
    assert "time_budget_s" not in parse_spec(plain).canonical()["timing"]  # no budget: the key it always had
    assert job_key(parse_spec(budgeted)) != job_key(parse_spec(plain))  # a budgeted spec is a job of its own

    first = run_job(budgeted, store)  # the budget is spent before the first case: every case is left out
    rows = queries.kernel_results(store, [first.run_id])
    assert (rows["status"] == "skipped").all() and rows["error"].str.contains("time budget").all()
    assert first.metrics[INCOMPLETE] == 1 and first.metrics["skipped"] == 4  # dense and csr, two cases each
    again = run_job(budgeted, store)
    assert not again.cached and again.run_id != first.run_id  # measured again, not served from the cache
    assert list(queries.runs(store)["run_id"]) == [again.run_id]  # and the cut-short run is replaced

    key = job_key(parse_spec(budgeted))  # a budgeted run that measured every case is served as any other
    run_id = store.start_run(key, "bench", parse_spec(budgeted).canonical_json(), {}, {})
    store.finish_run(run_id, key, JobOutput(metrics=[Metric("skipped", 0)]), 1.0)
    served = run_job(budgeted, store)
    assert served.cached and served.run_id == run_id


def test_the_suite_parts_share_its_time_budget(store, tiny_timing, capsys):
    from workbench.cli.bench_kernels import run_specs

    specs = [parse_spec({**_spec(tiny_timing, backends=[backend]), "name": backend}) for backend in ("csr", "bsr")]
    results = run_specs(specs, store, force=False, as_json=True, budget_s=0)
    assert [r.metrics["incomplete"] for r in results] == [1, 1] and not any(r.cached for r in results)
    stored = [queries.run(store, r.run_id)["spec"] for r in results]
    assert [s["timing"]["time_budget_s"] for s in stored] == [0, 0]
    assert len(json.loads(capsys.readouterr().out)["runs"]) == 2


def test_the_suite_runs_in_named_parts_and_an_unknown_part_names_the_choices():
    from workbench.cli.bench_kernels import select_parts
    from workbench.kernels.spec import BenchError
    from workbench.kernels.suites import gpu_suite

    specs = gpu_suite()
    chosen = select_parts(specs, ["2:4 8-bit", "llama-7b latency"])
    assert [s.name for s in chosen] == ["llama-7b latency", "2:4 8-bit"]  # the suite's order
    assert select_parts(specs, None) == specs
    with pytest.raises(BenchError, match="no part 'fp4'.*'2:4 bf16', '2:4 fp16'"):
        select_parts(specs, ["fp4"])
