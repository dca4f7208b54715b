"""structured_prune end to end: achieved fraction, masks and kept counts, every criterion on both families,
and the refusals."""

from __future__ import annotations

import pytest
import torch

from tests.structured.conftest import logits
from workbench.errors import SpecError
from workbench.structured import (
    CRITERIA,
    config_parameter_count,
    load_shrunk,
    model_layout,
    resolve_criterion,
    structured_prune,
)

CASES = [("magnitude-sp", "heads", 0.1), ("magnitude-sp", "channels", 0.3), ("wanda-sp", "heads+channels", 0.4),
         ("flap", "heads+channels", 0.3), ("flap", "channels", 0.2), ("cfsp", "channels", 0.3),
         ("block-influence", "blocks", 0.3)]


@pytest.mark.parametrize("criterion,structure,sparsity", CASES)
def test_every_criterion_reaches_its_target_on_llama(llama, calibration, ids, criterion, structure, sparsity, tmp_path):
    layout = model_layout(llama)
    block_cost = layout.block_parameters()[0]
    largest_unit = block_cost if structure == "blocks" else layout.attention(0).group_cost()
    result = structured_prune(llama, calibration, criterion, structure, sparsity)
    assert result.decoder_parameters == 3 * block_cost
    # whole structures: within half a step of the allocation (a step is one unit in every layer when every
    # layer loses the same number, one unit anywhere otherwise)
    step = largest_unit * (3 if resolve_criterion(criterion).allocation == "uniform" else 1)
    assert abs(result.achieved - sparsity) <= step / 2 / result.decoder_parameters + 1e-9
    assert result.removed_parameters == result.decoder_parameters - sum(model_layout(llama).block_parameters())
    assert torch.isfinite(logits(llama, ids)).all()
    for key, mask in result.masks.items():
        assert mask.dtype == torch.bool and mask.any(), key
    if structure != "blocks":
        for i in range(3):
            if "heads" in structure:
                assert int(result.masks[f"model.layers.{i}.heads"].sum()) == result.kept["heads"][i]
                assert int(result.masks[f"model.layers.{i}.kv_heads"].sum()) == result.kept["kv_heads"][i]
            if "channels" in structure:
                assert int(result.masks[f"model.layers.{i}.channels"].sum()) == result.kept["intermediate"][i]
    assert config_parameter_count(llama.config) == sum(p.numel() for p in llama.parameters())
    llama.save_pretrained(tmp_path)
    assert torch.allclose(logits(load_shrunk(tmp_path), ids), logits(llama, ids), atol=1e-5)


def test_query_head_units_remove_the_same_number_from_every_group(llama, calibration):
    result = structured_prune(llama, calibration, "wanda-sp", "heads", 0.1, head_unit="query")
    for i in range(3):
        per_group = result.masks[f"model.layers.{i}.heads"].reshape(2, 3).sum(1)
        assert per_group[0] == per_group[1] and result.kept["kv_heads"][i] == 2


@pytest.mark.parametrize("criterion,structure", [("flap", "heads+channels"), ("wanda-sp", "heads"),
                                                 ("cfsp", "channels")])
def test_bert_prunes_and_reloads(bert, calibration, ids, criterion, structure, tmp_path):
    result = structured_prune(bert, calibration, criterion, structure, 0.2)
    assert 0.1 < result.achieved < 0.3
    bert.save_pretrained(tmp_path)
    assert torch.allclose(logits(load_shrunk(tmp_path), ids), logits(bert, ids), atol=1e-5)
    assert config_parameter_count(bert.config) == sum(p.numel() for p in bert.parameters())


def test_flap_compensation_needs_a_bias_the_config_can_state(calibration):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=259, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    with pytest.raises(SpecError, match="compensate: false"):
        structured_prune(model, calibration, "flap", "heads", 0.1)
    result = structured_prune(model, calibration, "flap", "heads", 0.1, params={"compensate": False})
    assert result.achieved > 0 and model.model.layers[0].self_attn.o_proj.bias is None


@pytest.mark.parametrize("call,words", [
    (lambda m, c: structured_prune(m, c, "nope", "heads", 0.2), "unknown structured criterion"),
    (lambda m, c: structured_prune(m, c, "flap", "rows", 0.2), "unknown structure"),
    (lambda m, c: structured_prune(m, c, "flap", "heads", 1.5), "not a fraction"),
    (lambda m, c: structured_prune(m, c, "magnitude-sp", "blocks", 0.2), "block-influence"),
    (lambda m, c: structured_prune(m, c, "cfsp", "heads", 0.2), "does not score heads"),
    (lambda m, c: structured_prune(m, None, "wanda-sp", "heads", 0.1), "needs calibration"),
    (lambda m, c: structured_prune(m, c, "flap", "heads", 0.6), "at most"),
    (lambda m, c: structured_prune(m, c, "block-influence", "blocks", 0.9), "at most"),
    (lambda m, c: structured_prune(m, c, "flap", "heads", 0.1, params={"bogus": 1}), "bogus"),
    (lambda m, c: structured_prune(m, c, "flap", "heads", 0.1, head_unit="kv"), "head unit"),
])
def test_bad_requests_are_refused_with_a_fix(llama, calibration, call, words):
    before = sum(p.numel() for p in llama.parameters())
    with pytest.raises(SpecError) as info:
        call(llama, calibration)
    assert words in str(info.value) and info.value.fix
    assert sum(p.numel() for p in llama.parameters()) == before  # refused before any change


def test_registry_names_a_module_per_criterion():
    for name in CRITERIA:
        assert resolve_criterion(name).name == name


@pytest.mark.parametrize("criterion,structure,sparsity", [("wanda-sp", "heads+channels", 0.4),
                                                           ("magnitude-sp", "heads", 0.1),
                                                           ("block-influence", "blocks", 0.3)])
def test_stored_masks_rebuild_the_shrunk_model(llama, calibration, ids, criterion, structure, sparsity):
    """shrink_to_masks on a fresh copy gives the pruned model's widths and logits (no bias compensation here)."""
    import copy

    from workbench.structured import shrink_to_masks

    fresh = copy.deepcopy(llama)
    result = structured_prune(llama, calibration, criterion, structure, sparsity)
    shrink_to_masks(fresh, result.masks)
    assert model_layout(fresh).widths() == model_layout(llama).widths() and len(model_layout(fresh)) == len(model_layout(llama))
    torch.testing.assert_close(logits(fresh, ids), logits(llama, ids))


@pytest.mark.parametrize("criterion", ["magnitude-sp", "flap"])
def test_channel_multiple_rounds_every_layers_width(llama, calibration, criterion):
    """Widths that are multiples of 8 here (64 or 128 on a GPU) keep matrix products on their fast tiles."""
    intermediate = model_layout(llama).widths()["intermediate"][0]
    result = structured_prune(llama, calibration, criterion, "channels", 0.3, channel_multiple=8)
    widths = model_layout(llama).widths()["intermediate"]
    assert all(width % 8 == 0 and 8 <= width < intermediate for width in widths), widths
    assert abs(result.achieved - 0.3) < 0.15


def test_channel_multiple_must_be_positive(llama):
    with pytest.raises(SpecError, match="channel_multiple"):
        structured_prune(llama, None, "magnitude-sp", "channels", 0.3, channel_multiple=0)
