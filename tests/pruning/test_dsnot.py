"""DSnoT: weights never change, counts and N:M validity hold, |e| never grows; a hand case; a job."""

import json

import pytest
import torch

from workbench import queries
from workbench.pruning.dsnot import dsnot_mask
from workbench.pruning.masks import nm_valid
from workbench.pruning.wanda import wanda_mask, wanda_scores
from workbench.runner import run_job
from workbench.spec import Pattern


def _expected_error(weight, mask, mean):
    return ((weight * mean) * ~mask).sum(1)


def test_hand_case_grows_the_largest_contribution_and_prunes_a_cancelling_weight():
    weight = torch.tensor([[2.0, 1.0, 1.0, 1.0]])
    mean, var = torch.tensor([1.0, 1.0, 1.0, -0.5]), torch.ones(4)
    sq_norm = torch.tensor([1.0, 1.0, 1.0, 100.0])
    initial = wanda_mask(wanda_scores(weight, sq_norm), 0.5, Pattern.parse("unstructured"))
    assert initial.tolist() == [[True, False, False, True]]  # Wanda keeps 2 (|W|) and 3 (norm 10)
    # e = 1 + 1 = 2: grow column 1 (W mu = 1), prune column 3 (W mu = -0.5): e = 0.5; no negative left
    mask, summary = dsnot_mask(weight, initial, mean, var, sq_norm, Pattern.parse("unstructured"), 0.1, 50)
    assert mask.tolist() == [[True, True, False, False]]
    assert summary["dsnot_swaps"] == 1 and summary["dsnot_error_after"] == pytest.approx(0.5)


def _random_case(seed, pattern):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(64, 128, generator=generator)
    mean = torch.randn(128, generator=generator)
    var = torch.rand(128, generator=generator) + 0.1
    sq_norm = torch.rand(128, generator=generator) * 10
    initial = wanda_mask(wanda_scores(weight, sq_norm), 0.5, Pattern.parse(pattern))
    return weight, initial, mean, var, sq_norm


@pytest.mark.parametrize("pattern", ["unstructured", "2:4", "4:8"])
def test_counts_validity_and_error_invariants(pattern):
    weight, initial, mean, var, sq_norm = _random_case(0, pattern)
    parsed = Pattern.parse(pattern)
    original = weight.clone()
    mask, summary = dsnot_mask(weight, initial, mean, var, sq_norm, parsed, threshold=0.1, max_cycles=50)
    assert torch.equal(weight, original)  # only the mask changes
    assert torch.equal(mask.sum(1), initial.sum(1))
    if parsed.is_nm:
        assert nm_valid(mask, parsed.keep, parsed.group)
    before, after = _expected_error(weight, initial, mean), _expected_error(weight, mask, mean)
    assert (after.abs() <= before.abs() + 1e-5).all()
    assert (torch.sign(after) == torch.sign(before)).all()  # no overshoot
    assert summary["dsnot_swaps"] > 0 and (mask != initial).any()
    assert after.abs().mean() < 0.75 * before.abs().mean()


def test_rows_within_the_threshold_are_left_alone_and_cycles_are_bounded():
    weight, initial, mean, var, sq_norm = _random_case(1, "unstructured")
    mask, summary = dsnot_mask(weight, initial, mean, var, sq_norm, Pattern.parse("unstructured"), 1e9, 50)
    assert torch.equal(mask, initial) and summary["dsnot_cycles"] == 0
    mask, summary = dsnot_mask(weight, initial, mean, var, sq_norm, Pattern.parse("unstructured"), 0.0, 3)
    assert summary["dsnot_cycles"] == 3 and int((mask != initial).sum(1).max()) <= 6  # 3 swaps per row at most


def test_dsnot_job_keeps_the_weights_and_the_sparsity(store, tiny_spec):
    spec = {**tiny_spec, "method": "dsnot", "params": {"threshold": 0.0005, "skip": "none"}}
    result = run_job(spec, store)
    layers = queries.layer_stats(store, [result.run_id])
    assert (layers["achieved_sparsity"] == 0.5).all()
    extras = layers["extra"].map(json.loads)
    assert sum(e["dsnot_swaps"] for e in extras) > 0
    assert all(e["dsnot_error_after"] <= e["dsnot_error_before"] for e in extras)
    assert not any("dsnot_skipped" in e for e in extras)
    from workbench.models import load_model

    dense = dict(load_model("tiny-llama").model.named_parameters())
    masks = queries.load_masks(store, result.run_id)
    wanda = queries.load_masks(store, run_job({**tiny_spec, "method": "wanda"}, store).run_id)
    assert any(not torch.equal(masks[name], wanda[name]) for name in masks)  # DSnoT moved some weights
    for name, mask in masks.items():
        assert torch.equal(mask.sum(1), wanda[name].sum(1))
        assert dense[name + ".weight"][mask].abs().min() > 0  # kept weights are the dense ones, unchanged


def test_by_default_the_mlp_layers_keep_wandas_mask_as_in_the_authors_code(store, tiny_spec):
    from workbench.pruning.dsnot import skipped

    assert skipped("model.layers.3.mlp.down_proj", "mlp") and not skipped("model.layers.3.self_attn.q_proj", "mlp")
    assert not skipped("encoder.layer.0.intermediate.dense", "mlp") and not skipped("model.layers.0.mlp.up_proj", "none")
    assert skipped("model.layers.0.self_attn.o_proj", "self_attn")
    result = run_job({**tiny_spec, "method": "dsnot", "params": {"threshold": 0.0005}}, store)
    masks = queries.load_masks(store, result.run_id)
    wanda = queries.load_masks(store, run_job({**tiny_spec, "method": "wanda"}, store).run_id)
    extras = dict(zip(*queries.layer_stats(store, [result.run_id])[["layer", "extra"]].to_dict("list").values()))
    extras = {name: json.loads(extra) for name, extra in extras.items()}
    assert all(("dsnot_skipped" in extra) == (".mlp." in name) for name, extra in extras.items())
    # the first block's statistics come from the dense model in both runs: its MLP masks are Wanda's exactly
    first_mlp = [name for name in masks if name.startswith("model.layers.0.mlp.")]
    assert first_mlp and all(torch.equal(masks[name], wanda[name]) for name in first_mlp)
    assert any(not torch.equal(masks[name], wanda[name]) for name in masks if ".self_attn." in name)


def test_skipped_layers_collect_no_moments():
    from workbench.data import calibration_windows
    from workbench.models import load_model
    from workbench.models.layers import prunable_layers
    from workbench.pruning.dsnot import METHOD, DSnoTParams
    from workbench.pruning.pipeline import LayerResult, run_pipeline
    from workbench.pruning.registry import PruneContext

    loaded = load_model("tiny-llama")
    layers = prunable_layers(loaded.model)
    context = PruneContext(model=loaded.model, layers=layers, targets={n: 0.5 for n in layers},
                           pattern=Pattern.parse("unstructured"), params=DSnoTParams())
    moments: dict[str, bool] = {}

    def spy(modules, stats):
        moments.update({name: stats._sum is not None for name in modules})
        return {name: LayerResult(torch.ones_like(m.weight, dtype=torch.bool)) for name, m in modules.items()}

    windows = calibration_windows("shakespeare", loaded.tokenizer, 4, 32, 0)
    run_pipeline(loaded.model, layers, windows, METHOD.layer_needs(context), spy)
    assert moments and all(moments[name] == (".mlp." not in name) for name in layers)
