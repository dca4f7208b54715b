"""The benchmark report's targets and latency table, judged on hand-made rows."""

import json

import pandas as pd

from workbench.kernels.report import latency_table, model_setup, targets


def _kernel(backend, dtype, shape, tokens, speedup, roofline=None):
    out_features, in_features = (int(v) for v in shape.split("x"))
    return {"phase": "kernel", "status": "ok", "timing": "graph", "backend": backend, "dtype": dtype,
            "out_features": out_features, "in_features": in_features, "tokens": tokens, "speedup": speedup,
            "roofline_fraction": roofline, "best": False, "extra": None}


def _prefill(backend, speedup, extra, tokens=2048):
    return {"phase": "prefill", "status": "ok", "timing": "graph", "backend": backend, "dtype": "bf16",
            "model": "llama-7b", "tokens": tokens, "batch": 1, "pattern": "dense" if backend == "dense" else "2:4",
            "speedup": speedup, "median_us": 5e4 / speedup, "tokens_per_s": 1.0, "best": False, "source_run": None,
            "extra": json.dumps(extra)}


def test_targets_judge_the_large_default_cases_per_dtype_and_each_model_setup():
    frame = pd.DataFrame([
        _kernel("dense", "bf16", "4096x4096", 2048, 1.0, roofline=0.9),
        _kernel("dense", "fp16", "4096x4096", 2048, 1.0, roofline=0.7),
        _kernel("semi24-tuned", "bf16", "4096x4096", 2048, 1.5),
        _kernel("semi24-tuned", "bf16", "4096x4096", 16, 0.6),  # decode-sized: not judged
        _kernel("semi24-tuned", "fp16", "4096x4096", 2048, 1.7),
        _prefill("semi24-tuned", 1.2, {"compiled": False, "fused": False}),
        _prefill("semi24-tuned", 1.35, {"compiled": True, "fused": False}),
        _prefill("semi24", 1.25, {"compiled": True, "fused": False}),
        _prefill("semi24-tuned", 1.9, {"compiled": True}, tokens=8192),  # not the 2048-token target
    ])
    judged = {t["target"].split(" ")[0]: t for t in targets(frame)}
    assert judged["dense"]["met"] is False and "min 0.70" in judged["dense"]["figure"]
    tuned = judged["semi24-tuned"]
    assert tuned["met"] is False
    assert tuned["figure"] == ("bf16: min 1.50x, median 1.50x, max 1.50x over 1 cases; "
                               "fp16: min 1.70x, median 1.70x, max 1.70x over 1 cases")
    prefill = judged["llama-7b"]
    assert prefill["met"] is True
    assert prefill["figure"] == "1.35x (semi24-tuned, compiled); 1.20x (semi24-tuned, plain)"


def test_latency_rows_say_how_both_models_were_built():
    assert model_setup(json.dumps({"fused": True, "compiled": True})) == "fused, compiled"
    assert model_setup(json.dumps({"fused": False})) == "plain" and model_setup(None) == "plain"
    frame = pd.DataFrame([_prefill("semi24-tuned", 1.2, {}), _prefill("semi24-tuned", 1.3, {"compiled": True})])
    table = latency_table(frame)
    assert list(table["setup"]) == ["compiled", "plain"]
    assert table["median_ms"].round(3).tolist() == [38.462, 41.667]
