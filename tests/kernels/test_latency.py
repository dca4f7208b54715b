import json

from workbench import queries
from workbench.runner import run_job


def test_latency_is_linked_to_the_pruning_run_whose_masks_it_used(store, tiny_spec, tiny_timing, monkeypatch):
    monkeypatch.delenv("WORKBENCH_STORE")  # the masks must be read from the store the job is given
    pruned = run_job({**tiny_spec, "sparsity": 0.5}, store)
    spec = {"kind": "bench", "target": "latency", "device": "cpu",
            "latency": {"model": "tiny-llama", "variants": ["csr"], "prefill_tokens": [16], "decode_batches": [2],
                        "decode_context": 8, "masks_key": pruned.key},
            "timing": tiny_timing}
    result = run_job(spec, store)
    rows = queries.kernel_results(store, [result.run_id])
    timed = rows[rows["phase"].isin(["prefill", "decode"])]
    assert set(zip(timed["phase"], timed["backend"])) == {("prefill", "dense"), ("prefill", "csr"),
                                                          ("decode", "dense"), ("decode", "csr")}
    assert (timed["status"] == "ok").all() and (timed["timing"] == "wall").all()
    assert (timed["tokens_per_s"] > 0).all() and timed["speedup"].notna().all()
    csr = timed[timed["backend"] == "csr"].set_index("phase")
    assert (csr["source_run"] == pruned.run_id).all()  # the link to the masks' run
    assert csr.loc["decode", "batch"] == 2 and csr.loc["prefill", "tokens"] == 16
    extra = json.loads(csr.loc["decode", "extra"])
    assert extra["context"] == 8 and extra["weight_bytes"] > 0 and extra["dense_median_us"] > 0
    assert extra["steady_median_us"] > 0 and extra["dense_steady_median_us"] > 0  # each also in steady blocks
    dense_extra = json.loads(timed[(timed["backend"] == "dense") & (timed["phase"] == "decode")]["extra"].iloc[0])
    assert dense_extra["steady_median_us"] == extra["dense_steady_median_us"]
    convert = rows[(rows["phase"] == "setup") & (rows["backend"] == "csr")]
    report = json.loads(convert["extra"].iloc[0])
    assert report["from_run"] and report["layers"] == 14 and abs(report["sparsity"] - 0.5) < 0.01
    # a bench run names the masks' run in its key: other masks, another job
    assert queries.run(store, result.run_id)["identity"]["masks"] == pruned.key


def _with_option(latency: dict, timing: dict, option: str) -> dict:
    """A CPU latency spec with ``option`` on, after checking its key: off (the default) keeps the plain
    spec's key, so runs stored before the option existed stay cached; on gives another key."""
    from workbench.spec import job_key, parse_spec

    plain = {"kind": "bench", "target": "latency", "device": "cpu", "latency": latency, "timing": timing}
    assert job_key(parse_spec(plain)) == job_key(parse_spec({**plain, "latency": {**latency, option: False}}))
    on = {**plain, "latency": {**latency, option: True}}
    assert job_key(parse_spec(plain)) != job_key(parse_spec(on))
    return on


def test_fused_latency_fuses_both_models_and_keeps_the_unfused_key(store, tiny_timing):
    latency = {"model": "tiny-llama", "variants": ["csr"], "prefill_tokens": [16], "decode_batches": [],
               "sparsity": 0.5}
    result = run_job(_with_option(latency, tiny_timing, "fuse"), store)
    rows = queries.kernel_results(store, [result.run_id])
    timed = rows[rows["phase"] == "prefill"]
    assert set(timed["backend"]) == {"dense", "csr"} and (timed["status"] == "ok").all()
    convert = rows[(rows["phase"] == "setup") & (rows["backend"] == "csr")]
    assert json.loads(convert["extra"].iloc[0])["layers"] == 14


def test_compiled_latency_compiles_both_models_and_records_it(store, tiny_timing, monkeypatch):
    # tracing only: the wiring is under test here, inductor's code generation on the GPU host
    monkeypatch.setenv("WORKBENCH_COMPILE_BACKEND", "eager")
    latency = {"model": "tiny-llama", "variants": ["csr"], "prefill_tokens": [16], "decode_batches": [2],
               "decode_context": 8, "sparsity": 0.5}
    result = run_job(_with_option(latency, tiny_timing, "compile"), store)
    rows = queries.kernel_results(store, [result.run_id])
    timed = rows[rows["phase"].isin(["prefill", "decode"])]
    assert set(zip(timed["phase"], timed["backend"])) == {("prefill", "dense"), ("prefill", "csr"),
                                                          ("decode", "dense"), ("decode", "csr")}
    assert (timed["status"] == "ok").all()
    for extra in map(json.loads, timed["extra"]):
        assert extra["compiled"] is True and extra["compile_s"] > 0  # each model compiled once per case
        assert extra["compiled_rel_error"] < 1e-6  # tracing alone changes no arithmetic


def test_fused_layers_compile_too(store, tiny_timing, monkeypatch):
    monkeypatch.setenv("WORKBENCH_COMPILE_BACKEND", "eager")
    latency = {"model": "tiny-llama", "variants": ["csr"], "prefill_tokens": [16], "decode_batches": [],
               "sparsity": 0.5, "fuse": True, "compile": True}
    result = run_job({"kind": "bench", "target": "latency", "device": "cpu", "latency": latency,
                      "timing": tiny_timing}, store)
    timed = queries.kernel_results(store, [result.run_id]).query("phase == 'prefill'")
    assert set(timed["backend"]) == {"dense", "csr"} and (timed["status"] == "ok").all()
    for extra in map(json.loads, timed["extra"]):
        assert extra["fused"] is True and extra["compiled"] is True and extra["compiled_rel_error"] < 1e-6


def test_compiled_model_runs_each_program_eagerly_first_then_compiles_it_once(monkeypatch):
    from types import SimpleNamespace

    import torch

    from workbench.kernels.latency import CompiledModel

    monkeypatch.setenv("WORKBENCH_COMPILE_BACKEND", "eager")

    class Scale(torch.nn.Module):
        config = SimpleNamespace()

        def forward(self, input_ids, past_key_values=None, use_cache=False):
            return SimpleNamespace(logits=input_ids.float() * 2 + (0 if past_key_values is None else 1))

    runner = CompiledModel(Scale())
    ids = torch.ones(1, 8, dtype=torch.long)
    assert torch.equal(runner(input_ids=ids).logits, torch.full((1, 8), 2.0)) and not runner.compile_s
    runner(input_ids=ids)
    assert set(runner.compile_s) == {(1, 8, False)} and runner.rel_error[(1, 8, False)] == 0.0
    # the same shape with a cache is another program: eager first, its own compile, its own error
    runner(input_ids=ids, past_key_values=1)
    assert set(runner.compile_s) == {(1, 8, False)}
    assert torch.equal(runner(input_ids=ids, past_key_values=1).logits, torch.full((1, 8), 3.0))
    assert set(runner.compile_s) == {(1, 8, False), (1, 8, True)} and runner.rel_error[(1, 8, True)] == 0.0


def test_shrunk_model_latency_from_a_structured_run_and_from_a_structure(store, tiny_spec, tiny_timing, monkeypatch):
    """A structured run's smaller model is timed against dense, linked to the run; a random-weight model can be
    shrunk by a structure alone (the GPU's Llama-7B case)."""
    monkeypatch.delenv("WORKBENCH_STORE")
    tiny_timing = {**tiny_timing, "case_timeout_s": 600}  # a worker's start (torch import) on a loaded machine
    pruned = run_job({**tiny_spec, "method": "magnitude-sp", "structure": "channels", "sparsity": 0.3}, store)
    cases = {"prefill_tokens": [16], "decode_batches": [2], "decode_context": 8}
    from_run = run_job({"kind": "bench", "target": "latency", "device": "cpu", "timing": tiny_timing,
                        "latency": {"model": "tiny-llama", "random_weights": False, "variants": ["shrunk"],
                                    "masks_key": pruned.key, **cases}}, store)
    rows = queries.kernel_results(store, [from_run.run_id])
    shrunk = rows[(rows["backend"] == "shrunk") & rows["phase"].isin(["prefill", "decode"])]
    assert len(shrunk) == 2 and (shrunk["status"] == "ok").all() and (shrunk["source_run"] == pruned.run_id).all()
    dense = rows[(rows["backend"] == "dense") & (rows["phase"] == "prefill")]
    shrunk_bytes = json.loads(shrunk[shrunk["phase"] == "prefill"]["extra"].iloc[0])["weight_bytes"]
    assert shrunk_bytes < json.loads(dense["extra"].iloc[0])["weight_bytes"]  # the smaller model's linear layers
    by_structure = run_job({"kind": "bench", "target": "latency", "device": "cpu", "timing": tiny_timing,
                            "latency": {"model": "tiny-llama", "variants": ["shrunk"], "structure": "heads+channels",
                                        "sparsity": 0.3, **cases}}, store)
    rows = queries.kernel_results(store, [by_structure.run_id])
    assert ((rows["backend"] == "shrunk") & (rows["status"] == "ok")).sum() == 2


def test_shrunk_variant_needs_a_run_or_a_structure():
    import pytest

    from workbench.errors import SpecError
    from workbench.spec import parse_spec

    with pytest.raises(SpecError, match="needs the structured pruning run"):
        parse_spec({"kind": "bench", "target": "latency", "device": "cpu",
                    "latency": {"model": "tiny-llama", "variants": ["shrunk"]}})
