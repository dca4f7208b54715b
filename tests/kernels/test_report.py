"""The benchmark report's targets and latency table, judged on hand-made rows."""

import json

import pandas as pd

from workbench.kernels.report.tables import kernel_table, latency_table, model_setup, targets, with_steady_speedup


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
        _kernel("semi24-sm90", "bf16", "4096x4096", 2048, 1.55),  # per case the fastest tuned path is judged
        _kernel("semi24-sm90", "fp16", "4096x4096", 2048, 1.45),
        *[_prefill("dense", 1.0, {"compiled": compiled}, tokens=tokens, run=run)
          for run, compiled, tokens in (("plain", False, 2048), ("compiled", True, 2048), ("compiled", True, 8192))],
        _prefill("semi24-tuned", 1.2, {"compiled": False, "fused": False}, run="plain"),
        _prefill("semi24-tuned", 1.35, {"compiled": True, "fused": False}, run="compiled"),
        _prefill("semi24", 1.25, {"compiled": True, "fused": False}, run="compiled"),
        _prefill("semi24-tuned", 1.9, {"compiled": True}, tokens=8192, run="compiled"),  # not the 2048-token target
    ])
    judged = {t["target"].split(" ")[0]: t for t in targets(frame)}
    assert judged["dense"]["met"] is False and "min 0.70" in judged["dense"]["figure"]
    tuned = judged["tuned"]
    assert tuned["met"] is False
    assert tuned["figure"] == ("bf16: min 1.55x, median 1.55x, max 1.55x over 1 cases (alternated; fastest: "
                               "semi24-sm90 1); fp16: min 1.70x, median 1.70x, max 1.70x over 1 cases (alternated; "
                               "fastest: semi24-tuned 1)")
    prefill = judged["llama-7b"]
    assert prefill["met"] is True
    assert prefill["figure"] == "1.35x (semi24-tuned, compiled; alternated); 1.20x (semi24-tuned, plain; alternated)"


def test_latency_rows_say_how_both_models_were_built():
    assert model_setup(json.dumps({"fused": True, "compiled": True})) == "fused, compiled"
    assert model_setup(json.dumps({"fused": False})) == "plain" and model_setup(None) == "plain"
    frame = pd.DataFrame([_prefill("semi24-tuned", 1.2, {}, run="a"), _prefill("semi24-tuned", 1.3, {"compiled": True}, run="b")])
    table = latency_table(frame)
    assert list(table["setup"]) == ["compiled", "plain"]
    assert table["median_ms"].round(3).tolist() == [38.462, 41.667]


def test_targets_judge_the_steady_blocks_where_a_run_measured_them_and_show_the_alternated_beside():
    # a 2:4 kernel at 2.0x alternated and 1.5x in steady blocks; a prefill at 1.27x alternated, 1.36x steady
    steady_kernel = {"dense_steady_median_us": 120.0, "steady_median_us": 80.0, "speedup_steady": 1.5}
    steady_prefill = {"compiled": True, "dense_steady_median_us": 54.4e3, "steady_median_us": 40e3,
                      "speedup_steady": 1.36}
    rows = [_kernel("dense", "bf16", "4096x4096", 2048, 1.0),
            _kernel("semi24-tuned", "bf16", "4096x4096", 2048, 2.0, extra=steady_kernel),
            _prefill("dense", 1.0, {"compiled": True}),
            _prefill("semi24-tuned", 1.27, steady_prefill),
            _prefill("semi24-tuned", 1.29, {}, run="old")]  # a run from before the steady blocks
    frame = with_steady_speedup(pd.DataFrame(rows))
    assert frame["speedup_steady"].tolist()[1] == 1.5
    assert [frame["judged_speedup"].tolist()[i] for i in (1, 3, 4)] == [1.5, 1.36, 1.29]
    judged = {t["target"].split(" ")[0]: t for t in targets(pd.DataFrame(rows))}
    assert judged["tuned"]["met"] is False and judged["tuned"]["figure"] == (
        "bf16: min 1.50x, median 1.50x, max 1.50x over 1 cases (steady blocks; alternated: min 2.00x, median 2.00x; "
        "fastest: semi24-tuned 1)")
    assert judged["llama-7b"]["met"] is True
    assert judged["llama-7b"]["figure"] == (
        "1.36x (semi24-tuned, compiled; steady blocks; alternated 1.27x); 1.29x (semi24-tuned, plain; alternated)")
    # the tables show both figures
    table = kernel_table(pd.DataFrame(rows[:2]))
    assert table[["semi24-tuned", "semi24-tuned steady"]].values.tolist() == [[2.0, 1.5]]
    assert latency_table(pd.DataFrame(rows[2:4]))["speedup_steady"].tolist()[1] == 1.36


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


def test_the_chosen_configuration_in_words():
    from workbench.kernels.report.tables import tuned_choice

    sm90 = {"config": "128x256x64_1x2x1_cooperative", "us": {"128x256x64_1x2x1_cooperative": 240.0}}
    cuslt = {"alg_id": 3, "split_k": 2, "split_k_mode": 1, "transpose_result": True}
    assert tuned_choice(json.dumps({"tuned": sm90})) == "128x256x64_1x2x1_cooperative"
    assert tuned_choice(json.dumps({"tuned": cuslt})) == "alg 3, split-k 2, transposed result"
    fastest = {"backend": "semi24-sm90", "us": {"semi24-tuned": 250.0, "semi24-sm90": 240.0},
               "semi24-tuned": cuslt, "semi24-sm90": sm90}
    assert tuned_choice(json.dumps({"tuned": fastest})) == "semi24-sm90: 128x256x64_1x2x1_cooperative"
    assert tuned_choice(json.dumps({"steady_median_us": 3.0})) is None and tuned_choice(None) is None
