"""Each criterion's scores on hand-built cases, FLAP's bias compensation checked by hand, CFSP's block
ratios and shares, ShortGPT's block influence."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tests.structured.conftest import logits
from workbench.structured import collect_statistics, config_parameter_count, load_shrunk, structured_prune
from workbench.structured.criteria import resolve_criterion
from workbench.structured.criteria.cfsp import block_keep_ratios, channel_shares
from workbench.structured.criteria.flap import bias_compensation, fluctuation, standardize
from workbench.structured.layout import MLP, head_rows, model_layout
from workbench.structured.shrink import slice_linear


def _params(name: str, **values):
    return resolve_criterion(name).params(values)


def _toy_mlp(w_in: list, w_out: list) -> MLP:
    """A BERT-like MLP: one input projection (m x d), one output projection (d x m)."""
    w_in, w_out = torch.tensor(w_in), torch.tensor(w_out)
    first, second = nn.Linear(w_in.shape[1], w_in.shape[0], bias=False), nn.Linear(w_out.shape[1], w_out.shape[0], bias=False)
    with torch.no_grad():
        first.weight.copy_(w_in)
        second.weight.copy_(w_out)
    return MLP(nn.Module(), (first,), second)


# ---------------------------------------------------------------- magnitude-sp
def test_magnitude_sp_ranks_the_smallest_norm_head_and_group_lowest(llama):
    crit, params = resolve_criterion("magnitude-sp"), _params("magnitude-sp")
    attn = model_layout(llama).attention(0)
    rows = head_rows(torch.tensor([4]), 8)
    with torch.no_grad():
        attn.q.weight[rows] *= 0.01
        attn.o.weight[:, rows] *= 0.01
    scores = crit.head_scores(attn, None, "query", params)
    by_hand = (attn.q.weight[rows].pow(2).sum() + attn.o.weight[:, rows].pow(2).sum()).sqrt()
    assert int(scores.argmin()) == 4 and torch.isclose(scores[4], by_hand)
    groups = crit.head_scores(attn, None, "group", params)
    kv_rows = head_rows(torch.tensor([0]), 8)
    group0 = sum(crit.head_scores(attn, None, "query", params)[:3] ** 2) + attn.k.weight[kv_rows].pow(2).sum() \
        + attn.v.weight[kv_rows].pow(2).sum()
    assert torch.isclose(groups[0], group0.sqrt())
    result = structured_prune(llama, None, "magnitude-sp", "heads", 0.05, head_unit="query")
    assert not result.masks["model.layers.0.heads"][4]  # the weak head went from its group


def test_magnitude_sp_channel_norm_couples_all_three_projections(llama):
    mlp = model_layout(llama).mlp(1)
    scores = resolve_criterion("magnitude-sp").channel_scores(mlp, None, _params("magnitude-sp"))
    j = 17
    by_hand = (mlp.inputs[0].weight[j].pow(2).sum() + mlp.inputs[1].weight[j].pow(2).sum()
               + mlp.output.weight[:, j].pow(2).sum()).sqrt()
    assert torch.isclose(scores[j], by_hand)


# ---------------------------------------------------------------- wanda-sp
def test_wanda_sp_weighs_weights_by_activation_norms():
    mlp = _toy_mlp([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], [[1.0, 1.0, 10.0], [1.0, 1.0, 10.0]])
    stats = SimpleNamespace(mlp_input=SimpleNamespace(norm=torch.tensor([2.0, 5.0])),
                            channels=SimpleNamespace(norm=torch.tensor([1.0, 3.0, 0.01])))
    scores = resolve_criterion("wanda-sp").channel_scores(mlp, stats, _params("wanda-sp"))
    # rows: |W_in| ||x|| = 2 each; columns: (sum_i |W_out[i, j]|) * ||h_j|| = 2, 6, 0.2
    assert torch.allclose(scores, torch.tensor([4.0, 8.0, 2.2]))
    magnitude = resolve_criterion("magnitude-sp").channel_scores(mlp, None, _params("magnitude-sp"))
    assert int(magnitude.argmax()) == 2 and int(scores.argmin()) == 2  # large weights, silent channel


def test_wanda_sp_head_scores_sum_over_rows_and_columns(llama, calibration):
    layer_stats = collect_statistics(llama, calibration, blocks=False).layers[0]
    attn = model_layout(llama).attention(0)
    scores = resolve_criterion("wanda-sp").head_scores(attn, layer_stats, "query", _params("wanda-sp"))
    rows, a, b = head_rows(torch.tensor([2]), 8), layer_stats.attention_input.norm, layer_stats.heads_output.norm
    by_hand = (attn.q.weight[rows].abs() * a).sum() + (attn.o.weight[:, rows].abs() * b[rows]).sum()
    assert torch.isclose(scores[2], by_hand, rtol=1e-5)


# ---------------------------------------------------------------- flap
def test_flap_fluctuation_and_standardisation_by_hand():
    weight = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    assert torch.equal(fluctuation(torch.tensor([1.0, 4.0]), weight), torch.tensor([10.0, 16.0]))
    z = standardize(torch.tensor([1.0, 2.0, 3.0, 10.0]))
    assert abs(float(z.mean())) < 1e-6 and abs(float(z.std()) - 1) < 1e-6
    assert torch.equal(standardize(torch.full((5,), 3.0)), torch.zeros(5))


def test_flap_ranks_a_constant_head_lowest(llama):
    attn = model_layout(llama).attention(0)
    variance = torch.ones(48)
    variance[16:24] = 0  # head 2 never fluctuates: replacing it by its mean loses nothing
    stats = SimpleNamespace(heads_output=SimpleNamespace(var=variance))
    crit, params = resolve_criterion("flap"), _params("flap")
    assert int(crit.head_scores(attn, stats, "query", params).argmin()) == 2
    groups = crit.head_scores(attn, stats, "group", params)
    assert groups.shape == (2,) and int(groups.argmin()) == 0


def test_flap_bias_compensation_by_hand():
    weight = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mean = torch.tensor([1.0, 10.0, 100.0])
    assert torch.equal(bias_compensation(weight, mean, torch.tensor([False, True, False])), torch.tensor([20.0, 50.0]))
    assert torch.equal(bias_compensation(weight, mean, torch.tensor([True, True, False])), torch.tensor([21.0, 54.0]))


def test_compensated_removal_of_a_constant_feature_is_exact():
    torch.manual_seed(0)
    linear = nn.Linear(3, 2)
    x = torch.randn(5, 3)
    x[:, 1] = 7.0
    reference = linear(x)
    removed = torch.tensor([False, True, False])
    with torch.no_grad():
        linear.bias += bias_compensation(linear.weight, x.mean(0), removed)
        slice_linear(linear, (~removed).nonzero().flatten(), 1)
    assert torch.allclose(linear(x[:, ~removed]), reference, atol=1e-6)


def test_flap_prune_adds_the_removed_heads_and_channels_mean_contribution(llama, calibration, ids, tmp_path):
    dense = copy.deepcopy(llama)
    stats = collect_statistics(dense, calibration, blocks=False)
    result = structured_prune(llama, calibration, "flap", "heads+channels", 0.3)
    assert llama.config.attention_bias and llama.config.mlp_bias
    layout, dense_layout = model_layout(llama), model_layout(dense)
    for i in range(3):
        heads = result.masks[f"model.layers.{i}.heads"]
        removed = ~heads.repeat_interleave(8)
        expected = dense_layout.attention(i).o.weight[:, removed] @ stats.layers[i].heads_output.mean[removed]
        assert torch.allclose(layout.attention(i).o.bias, expected, atol=1e-5)
        channels = result.masks[f"model.layers.{i}.channels"]
        expected = dense_layout.mlp(i).output.weight[:, ~channels] @ stats.layers[i].channels.mean[~channels]
        assert torch.allclose(layout.mlp(i).output.bias, expected, atol=1e-5)
        assert not layout.attention(i).q.bias.any() and not layout.mlp(i).inputs[0].bias.any()
    assert config_parameter_count(llama.config) == sum(p.numel() for p in llama.parameters())
    llama.save_pretrained(tmp_path)
    assert torch.allclose(logits(load_shrunk(tmp_path), ids), logits(llama, ids), atol=1e-5)


def test_flap_scores_are_comparable_across_layers_and_modules(llama, calibration):
    result = structured_prune(llama, calibration, "flap", "heads+channels", 0.3)
    # global allocation: layers end up with different widths
    assert len(set(result.kept["intermediate"])) > 1 or len(set(result.kept["heads"])) > 1


# ---------------------------------------------------------------- cfsp
def test_cfsp_block_keep_ratios_average_the_target_and_follow_importance():
    importance = torch.tensor([0.1, 0.2, 0.3, 0.4])
    ratios = block_keep_ratios(importance, 0.3, slope=5.0)
    assert abs(float(ratios.mean()) - 0.7) < 1e-6
    assert bool((ratios.diff() > 0).all())
    steep = block_keep_ratios(importance, 0.3, slope=1000.0)  # deviations scaled back inside (0, 1)
    assert abs(float(steep.mean()) - 0.7) < 1e-6 and float(steep.max()) < 1 and float(steep.min()) > 0
    assert torch.allclose(block_keep_ratios(importance, 0.3, slope=0.0), torch.full((4,), 0.7))


def test_cfsp_channel_shares_by_hand():
    # down (d=2 x m=2) and one input projection (m=2 x d=2), as BERT's intermediate/output
    mlp = _toy_mlp([[1.0, 1.0], [3.0, 1.0]], [[1.0, 3.0], [2.0, 2.0]])
    # down shares per output row: [.25 .75], [.5 .5] -> mean [.375 .625]; input shares per input column
    # (column sums 4, 2): [.25 .5], [.75 .5] -> mean over columns [.375 .625]
    assert torch.allclose(channel_shares(mlp, torch.tensor([1.0, 1.0])), torch.tensor([0.75, 1.25]))
    # with norms a = [2, 1]: A = [[2, 3], [4, 2]] -> row shares [.4 .6], [2/3 1/3] -> [.5333, .4667]
    expected = (torch.tensor([0.5 + 1 / 30, 0.5 - 1 / 30]) + torch.tensor([0.375, 0.625])) * torch.tensor([2.0, 1.0])
    assert torch.allclose(channel_shares(mlp, torch.tensor([2.0, 1.0])), expected)


def test_cfsp_gives_more_important_blocks_more_channels(llama, calibration):
    angular = collect_statistics(copy.deepcopy(llama), calibration, inputs=False).block_angular
    result = structured_prune(llama, calibration, "cfsp", "channels", 0.3, params={"slope": 10.0})
    kept = torch.tensor(result.kept["intermediate"], dtype=torch.float)
    assert torch.equal(torch.argsort(kept), torch.argsort(angular))
    assert abs(result.achieved - 0.3) < 0.02


# ---------------------------------------------------------------- block-influence
def test_block_influence_drops_an_identity_block_first(llama, calibration):
    with torch.no_grad():
        llama.model.layers[1].self_attn.o_proj.weight.zero_()
        llama.model.layers[1].mlp.down_proj.weight.zero_()
    stats = collect_statistics(llama, calibration, inputs=False)
    influence = resolve_criterion("block-influence").block_scores(stats, _params("block-influence"))
    assert float(influence[1]) == pytest.approx(0.0, abs=1e-6) and float(influence.min()) == float(influence[1])
    result = structured_prune(llama, calibration, "block-influence", "blocks", 0.3)
    assert result.masks["model.layers"].tolist() == [True, False, True]
    assert result.kept["blocks"] == 2 and result.achieved == pytest.approx(1 / 3)
