"""The notebook API: runs as DataFrames, masks as tensors and on models, jobs from dicts, SAD/IoU."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from tests.widgets.synthetic import LAYERS, write_run
from workbench import api
from workbench.data import evaluation_windows
from workbench.errors import PruningError, SpecError
from workbench.metrics.language import perplexity
from workbench.models import load_model

TINY = {"model": "tiny-llama", "data": "shakespeare", "calibration": {"samples": 4, "seq_len": 64, "seed": 0},
        "evaluation": {"windows": 4, "seq_len": 64}}


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Real tiny-llama runs: magnitude and random at 50%, magnitude 2:4, dense."""
    store = api.open_store(tmp_path_factory.mktemp("api") / "workbench.duckdb")
    results = api.sweep({"base": TINY, "grid": {"method": ["magnitude", "random"]},
                         "include": [{"method": "magnitude", "pattern": "2:4"}, {"method": "dense"}]},
                        store=store, progress=False)
    assert (results["status"] == "finished").all()
    return store, dict(zip(["magnitude", "random", "2:4", "dense"], results["run_id"]))


def test_runs_are_a_dataframe_filtered_by_any_run_column(tiny_runs):
    store, ids = tiny_runs
    frame = api.runs(store=store)
    assert isinstance(frame, pd.DataFrame) and set(frame["run_id"]) == set(ids.values())
    assert list(api.runs(store=store, pattern="2:4")["run_id"]) == [ids["2:4"]]
    assert set(api.runs(store=store, method=["random", "dense"])["run_id"]) == {ids["random"], ids["dense"]}
    assert api.runs(store=store, method="magnitude", pattern="unstructured")["perplexity"].notna().all()
    with pytest.raises(SpecError, match="unknown run filter 'colour'"):
        api.runs(store=store, colour="red")


def test_masks_load_as_bool_tensors_that_match_the_layer_stats(tiny_runs):
    store, ids = tiny_runs
    masks = api.masks(ids["2:4"][:12], store=store)  # a prefix of the id is enough
    layers = api.layers(ids["2:4"], store=store).set_index("layer")
    assert set(masks) == set(layers.index) and len(masks) == 14
    for name, mask in masks.items():
        assert mask.dtype == torch.bool
        assert (~mask).float().mean().item() == pytest.approx(layers.loc[name, "achieved_sparsity"])
        groups = mask.reshape(mask.shape[0], -1, 4).sum(-1)
        assert bool((groups == 2).all())  # 2 of every 4 kept


def test_load_pruned_model_reproduces_the_runs_perplexity(tiny_runs):
    store, ids = tiny_runs
    loaded = api.load_pruned_model(ids["magnitude"], store=store)
    windows = evaluation_windows("shakespeare", loaded.tokenizer, 4, 64)
    assert perplexity(loaded.model, windows) == pytest.approx(api.get_run(ids["magnitude"], store=store)
                                                              ["metrics"]["perplexity"], rel=1e-5)
    dense = load_model("tiny-llama")
    assert perplexity(dense.model, windows) != pytest.approx(perplexity(loaded.model, windows), rel=1e-5)


def test_apply_masks_zeroes_exactly_the_pruned_weights_and_refuses_foreign_masks(tiny_runs):
    store, ids = tiny_runs
    masks = api.masks(ids["random"], store=store)
    model = load_model("tiny-llama").model
    before = {name: model.get_submodule(name).weight.detach().clone() for name in masks}
    assert api.apply_masks(model, masks) == pytest.approx(0.5, abs=1e-3)
    for name, mask in masks.items():
        assert torch.equal(model.get_submodule(name).weight, before[name] * mask)
    with pytest.raises(PruningError, match="has no layer 'encoder.layer.0.q'"):
        api.apply_masks(model, {"encoder.layer.0.q": torch.ones(2, 2, dtype=torch.bool)})
    name = next(iter(masks))
    with pytest.raises(PruningError, match=f"the mask for {name} has 4 entries"):
        api.apply_masks(model, {name: torch.ones(2, 2, dtype=torch.bool)})


def test_run_and_sweep_from_dicts_use_the_cache(tiny_runs):
    store, ids = tiny_runs
    again = api.run({**TINY, "method": "magnitude"}, store=store, progress=False)
    assert again.cached and again.run_id == ids["magnitude"]
    frame = api.sweep([{**TINY, "method": "random"}, {**TINY, "method": "random", "sparsity": 0.6}], store=store,
                      progress=False)
    assert list(frame["cached"]) == [True, False] and frame["sparsity"].iloc[1] == pytest.approx(0.6, abs=1e-3)
    assert list(frame["job"]) == ["random 50%", "random 60%"]


def test_divergence_summary_matches_the_masks_themselves(tiny_runs):
    store, ids = tiny_runs
    summary = api.divergence_summary(ids["magnitude"], ids["random"], store=store)
    a, b = api.masks(ids["magnitude"], store=store), api.masks(ids["random"], store=store)
    xor = sum(int((a[n] ^ b[n]).sum()) for n in a)
    both = sum(int((a[n] & b[n]).sum()) for n in a)
    either = sum(int((a[n] | b[n]).sum()) for n in a)
    assert summary["sad"] == xor and summary["numel"] == sum(m.numel() for m in a.values())
    assert summary["iou"] == pytest.approx(both / either)
    assert summary["layers"] == 14
    same = api.divergence_summary(ids["magnitude"], ids["magnitude"], store=store)
    assert same["sad"] == 0 and same["iou"] == 1.0
    per_layer = api.compare(ids["magnitude"], ids["random"], store=store)
    assert int(per_layer["sad"].sum()) == xor


def test_mask_drift_and_curves_of_a_run_with_snapshots(tmp_path):
    store = api.open_store(tmp_path / "w.duckdb")
    run_id = write_run(store, kind="train", snapshots=[0, 5, 10], step_metrics={"loss": [3.0, 2.0, 1.0]})
    drift = api.mask_drift(run_id, store=store)
    assert list(drift["step_a"]) == [0, 5] and list(drift["step_b"]) == [5, 10]
    for row in drift.itertuples():
        a = api.masks(run_id, step=row.step_a, store=store)
        b = api.masks(run_id, step=row.step_b, store=store)
        assert row.sad == sum(int((a[n] ^ b[n]).sum()) for n in LAYERS)
        assert row.iou == pytest.approx(sum(int((a[n] & b[n]).sum()) for n in LAYERS)
                                        / sum(int((a[n] | b[n]).sum()) for n in LAYERS))
    assert api.curves(run_id, store=store).to_dict("list") == {"step": [0, 1, 2], "loss": [3.0, 2.0, 1.0]}


def test_block_sparsity_weights_layers_by_size(tmp_path):
    store = api.open_store(tmp_path / "w.duckdb")
    run_id = write_run(store, allocation="owl", block_sparsity=(0.25, 0.75))
    blocks = api.block_sparsity(run_id, store=store)
    assert list(blocks["block"]) == [0, 1]
    assert list(blocks["achieved_sparsity"]) == pytest.approx([0.25, 0.75])
    assert list(blocks["numel"]) == [256, 256]


def test_pareto_front_keeps_only_undominated_rows():
    frame = pd.DataFrame({"run_id": list("abcdef"), "sparsity": [0.0, 0.5, 0.5, 0.7, 0.7, 0.9],
                          "perplexity": [10.0, 20.0, 25.0, 60.0, 15.0, float("nan")],
                          "accuracy": [0.9, 0.8, 0.85, 0.5, 0.4, 0.1]})
    assert list(api.pareto_front(frame)["run_id"]) == ["a", "e"]  # e beats b, c, d: sparser and better
    # accuracy: higher is better
    assert list(api.pareto_front(frame, y="accuracy")["run_id"]) == ["a", "c", "d", "f"]
