"""OWL: hand-computed ratios and block sparsities; the mean stays the target; bounds; a job."""

import json

import pytest
import torch

from workbench import queries
from workbench.errors import PruningError
from workbench.pruning.owl import block_outlier_ratios, owl_sparsities
from workbench.runner import run_job


def test_hand_computed_block_sparsities():
    # D = [.01, .03, .02, .02] -> normalised to [0, 2 lambda] = [0, .16, .08, .08]; mean .08
    sparsities, scaled = owl_sparsities([0.01, 0.03, 0.02, 0.02], [10] * 4, 0.7, 0.08)
    assert sparsities == pytest.approx([0.78, 0.62, 0.70, 0.70]) and not scaled


def test_more_outliers_means_less_pruning_and_the_mean_is_the_target():
    torch.manual_seed(0)
    ratios = torch.rand(12).tolist()
    sparsities, _ = owl_sparsities(ratios, [5] * 12, 0.6, 0.1)
    assert sum(sparsities) / 12 == pytest.approx(0.6, abs=1e-12)
    assert all(0.5 - 1e-12 <= s <= 0.7 + 1e-12 for s in sparsities)
    order = sorted(range(12), key=lambda i: ratios[i])
    assert [sparsities[i] for i in order] == sorted(sparsities, reverse=True)


def test_a_skewed_distribution_is_scaled_into_the_band_keeping_the_mean():
    # [0, 0, 0, 1] -> [0, 0, 0, .16], mean .04, deviations [-.04, -.04, -.04, .12]: .12 > lambda, scaled by 2/3
    sparsities, scaled = owl_sparsities([0.0, 0.0, 0.0, 1.0], [1] * 4, 0.7, 0.08)
    assert scaled and sparsities == pytest.approx([0.7 + 0.08 / 3] * 3 + [0.62])


def test_blocks_of_different_sizes_weigh_by_parameters():
    sparsities, _ = owl_sparsities([0.0, 1.0], [1, 3], 0.7, 0.08)
    assert (sparsities[0] * 1 + sparsities[1] * 3) / 4 == pytest.approx(0.7)
    assert sparsities == pytest.approx([0.78, 0.7 - 0.08 / 3])


def test_equal_ratios_give_the_uniform_target_and_bad_lambda_is_refused():
    assert owl_sparsities([0.2, 0.2], [1, 1], 0.5, 0.1) == ([0.5, 0.5], False)
    with pytest.raises(PruningError, match="lambda below 0.1"):
        owl_sparsities([0.1, 0.2], [1, 1], 0.9, 0.1)


def test_hand_computed_outlier_ratio():
    # scores [1, 1, 1, 10] (all-ones activations): mean 3.25, M = 2 -> threshold 6.5 -> 1 of 4
    block = [{"a": torch.tensor([[1.0, 1.0, 1.0, 10.0]])}]
    assert block_outlier_ratios(block, {"a": torch.ones(4)}, 2.0) == [0.25]
    # activations count too: a large input norm makes its weight an outlier
    assert block_outlier_ratios([{"a": torch.ones(1, 4)}], {"a": torch.tensor([1.0, 1.0, 1.0, 400.0])}, 2.0) == [0.25]


def test_owl_with_wanda_job_spreads_the_target_and_records_ratios(store, tiny_spec):
    spec = {**tiny_spec, "method": "wanda", "sparsity": 0.7, "allocation": "owl",
            "allocation_params": {"lam": 0.1, "m": 3}}
    result = run_job(spec, store)
    layers = queries.layer_stats(store, [result.run_id])
    weights = layers["numel"] / layers["numel"].sum()
    assert float((layers["target_sparsity"] * weights).sum()) == pytest.approx(0.7, abs=1e-9)
    assert layers["target_sparsity"].between(0.6 - 1e-9, 0.8 + 1e-9).all()
    assert layers.groupby("block")["target_sparsity"].nunique().eq(1).all()  # one sparsity per block
    assert layers["target_sparsity"].nunique() == 2  # the two blocks differ
    ratios = layers["extra"].map(lambda e: json.loads(e)["owl_outlier_ratio"])
    assert ratios.between(0, 1).all()
    # per-row counts round down, so the achieved sparsity is the target within one weight per row
    assert (layers["target_sparsity"] - layers["achieved_sparsity"]).between(0, 1 / 64 + 1e-9).all()
