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
    convert = rows[(rows["phase"] == "setup") & (rows["backend"] == "csr")]
    report = json.loads(convert["extra"].iloc[0])
    assert report["from_run"] and report["layers"] == 14 and abs(report["sparsity"] - 0.5) < 0.01
    # a bench run names the masks' run in its key: other masks, another job
    assert queries.run(store, result.run_id)["identity"]["masks"] == pruned.key
