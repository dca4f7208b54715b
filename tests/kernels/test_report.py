"""The benchmark report's targets and latency table, judged on hand-made rows."""

import json

import pandas as pd
import pytest

from workbench.kernels.report import kernel_table, latency_table, model_setup, targets, with_fastest_speedup


def _kernel(backend, dtype, shape, tokens, speedup, roofline=None, run="r1", timing="graph", extra=None, **values):
    """A kernel row whose dense baseline takes 100 us: ``speedup`` sets its time."""
    out_features, in_features = (int(v) for v in shape.split("x"))
    return {"run_id": run, "case_id": f"{shape}-t{tokens}", "phase": "kernel", "status": "ok", "timing": timing,
            "backend": backend, "dtype": dtype, "out_features": out_features, "in_features": in_features,
            "tokens": tokens, "speedup": speedup, "median_us": 100.0 / speedup, "roofline_fraction": roofline,
            "best": False, "extra": json.dumps(extra or {}), "device": "H200", "versions": "{}", **values}


def _prefill(backend, speedup, extra, tokens=2048, run="r1", timing="graph", **values):
    """A prefill row whose dense model takes 50 ms: ``speedup`` sets its time."""
    return {"run_id": run, "case_id": f"prefill-{tokens}", "phase": "prefill", "status": "ok", "timing": timing,
            "backend": backend, "dtype": "bf16", "model": "llama-7b", "tokens": tokens, "batch": 1,
            "pattern": "dense" if backend == "dense" else "2:4", "speedup": speedup, "median_us": 5e4 / speedup,
            "tokens_per_s": 1.0, "best": False, "source_run": None, "extra": json.dumps(extra), "device": "H200",
            "versions": json.dumps({"torch": "2.11.0"}), **values}


def test_targets_judge_the_large_default_cases_per_dtype_and_each_model_setup():
    frame = pd.DataFrame([
        _kernel("dense", "bf16", "4096x4096", 2048, 1.0, roofline=0.9),
        _kernel("dense", "fp16", "4096x4096", 2048, 1.0, roofline=0.7),
        _kernel("semi24-tuned", "bf16", "4096x4096", 2048, 1.5),
        _kernel("semi24-tuned", "bf16", "4096x4096", 16, 0.6),  # decode-sized: not judged
        _kernel("semi24-tuned", "fp16", "4096x4096", 2048, 1.7),
        *[_prefill("dense", 1.0, {"compiled": compiled}, tokens=tokens, run=run)
          for run, compiled, tokens in (("plain", False, 2048), ("compiled", True, 2048), ("compiled", True, 8192))],
        _prefill("semi24-tuned", 1.2, {"compiled": False, "fused": False}, run="plain"),
        _prefill("semi24-tuned", 1.35, {"compiled": True, "fused": False}, run="compiled"),
        _prefill("semi24", 1.25, {"compiled": True, "fused": False}, run="compiled"),
        _prefill("semi24-tuned", 1.9, {"compiled": True}, tokens=8192, run="compiled"),  # not the 2048-token target
    ])
    judged = {t["target"].split(" ")[0]: t for t in targets(frame)}
    assert judged["dense"]["met"] is False and "min 0.70" in judged["dense"]["figure"]
    tuned = judged["semi24-tuned"]
    assert tuned["met"] is False
    assert tuned["figure"] == ("bf16: min 1.50x, median 1.50x, max 1.50x over 1 cases (fastest to fastest: min 1.50x, "
                               "median 1.50x); fp16: min 1.70x, median 1.70x, max 1.70x over 1 cases (fastest to "
                               "fastest: min 1.70x, median 1.70x)")
    prefill = judged["llama-7b"]
    assert prefill["met"] is True
    assert prefill["figure"] == ("1.35x (semi24-tuned, compiled; fastest to fastest 1.35x); "
                                 "1.20x (semi24-tuned, plain; fastest to fastest 1.20x)")


def test_latency_rows_say_how_both_models_were_built():
    assert model_setup(json.dumps({"fused": True, "compiled": True})) == "fused, compiled"
    assert model_setup(json.dumps({"fused": False})) == "plain" and model_setup(None) == "plain"
    frame = pd.DataFrame([_prefill("semi24-tuned", 1.2, {}, run="a"), _prefill("semi24-tuned", 1.3, {"compiled": True}, run="b")])
    table = latency_table(frame)
    assert list(table["setup"]) == ["compiled", "plain"]
    assert table["median_ms"].round(3).tolist() == [38.462, 41.667]


def test_the_fastest_to_fastest_bound_weighs_the_dense_timed_alone_and_in_every_timing_mode():
    # kernels: the dense alternated with 2:4 took 120 us, alone 100 (its own worker's rows: 100 graph, 110 eager)
    paired = {"dense_median_us": 120.0, "dense_alone_median_us": 101.0, "alone_median_us": 62.0}
    rows = [_kernel("dense", "bf16", "4096x4096", 2048, 1.0),
            _kernel("dense", "bf16", "4096x4096", 2048, 100 / 110, timing="eager"),
            _kernel("semi24-tuned", "bf16", "4096x4096", 2048, 120 / 60, extra=paired, median_us=60.0)]
    # a compiled model: the dense runs faster from eager launches (49 ms) than from its graph (52 ms)
    rows += [_prefill("dense", 5e4 / 52e3, {"compiled": True}, run="p"),
             _prefill("dense", 5e4 / 49e3, {"compiled": True}, run="p", timing="eager"),
             _prefill("semi24-tuned", 52 / 41, {"compiled": True}, run="p", median_us=41e3),
             _prefill("semi24-tuned", 5e4 / 150e3, {"compiled": True}, run="p", timing="eager")]
    frame = with_fastest_speedup(pd.DataFrame(rows))
    tuned = frame[(frame["backend"] == "semi24-tuned") & (frame["phase"] == "kernel")].iloc[0]
    assert tuned["speedup"] == pytest.approx(2.0)  # alternated, as timed
    assert tuned["speedup_fastest"] == pytest.approx(100 / 60)  # fastest dense over fastest 2:4
    prefill = frame[(frame["backend"] == "semi24-tuned") & (frame["phase"] == "prefill")]
    assert prefill["speedup_fastest"].tolist() == pytest.approx([49 / 41, 49 / 41])
    # targets are judged on the alternated speedup; the bound stands beside it
    judged = {t["target"].split(" ")[0]: t for t in targets(pd.DataFrame(rows))}
    assert judged["semi24-tuned"]["met"] and judged["semi24-tuned"]["figure"] == (
        "bf16: min 2.00x, median 2.00x, max 2.00x over 1 cases (fastest to fastest: min 1.67x, median 1.67x)")
    assert judged["llama-7b"]["met"] is False
    assert judged["llama-7b"]["figure"] == "1.27x (semi24-tuned, compiled; fastest to fastest 1.20x)"


def test_rows_of_several_runs_stay_apart_and_say_what_they_were_measured_on():
    stack = {"device": "NVIDIA H200 (sm_90)"}
    old = {**stack, "versions": json.dumps({"torch": "2.11.0", "cusparselt": 800})}
    new = {**stack, "versions": json.dumps({"torch": "2.11.0", "cusparselt": 1000})}
    rows = [_kernel("dense", "bf16", "4096x4096", 2048, 1.0, run="a", **old),
            _kernel("semi24-tuned", "bf16", "4096x4096", 2048, 1.45, run="a", **old),
            _kernel("dense", "bf16", "4096x4096", 2048, 1.0, run="b", **new),
            _kernel("semi24-tuned", "bf16", "4096x4096", 2048, 1.5, run="b", **new)]
    table = kernel_table(pd.DataFrame(rows))
    assert len(table) == 2 and table["semi24-tuned"].tolist() == [1.45, 1.5]
    assert table["measured_on"].tolist() == ["NVIDIA H200 (sm_90) | torch 2.11.0 | cuSPARSELt 0.8.0",
                                             "NVIDIA H200 (sm_90) | torch 2.11.0 | cuSPARSELt 0.10.0"]
    single = kernel_table(pd.DataFrame(rows[:2]))
    assert "measured_on" not in single and "run_id" not in single and len(single) == 1
