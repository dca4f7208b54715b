"""Wanda: the golden cases of ALGORITHMS.md, exact per-row counts, N:M validity, the statistic, a job."""

import pytest
import torch

from workbench import queries
from workbench.errors import PruningError
from workbench.pruning.masks import nm_valid, row_topk_mask
from workbench.pruning.pipeline import InputStatistics, Needs
from workbench.pruning.wanda import wanda_mask, wanda_scores
from workbench.runner import run_job
from workbench.spec import Pattern


def _sq_norm(x: torch.Tensor) -> torch.Tensor:
    stats = InputStatistics(x.shape[-1], Needs(sq_norm=True), torch.device("cpu"))
    stats.add(x)
    return stats.sq_norm


def test_golden_two_four_on_all_ones_input_keeps_three_four_and_seven_eight():
    weight = torch.arange(1.0, 9.0).view(1, 8)
    mask = wanda_mask(wanda_scores(weight, _sq_norm(torch.ones(1, 5, 8))), 0.5, Pattern.parse("2:4"))
    assert mask.tolist() == [[False, False, True, True, False, False, True, True]]


def test_golden_activation_norms_outweigh_weights():
    weight = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    x = torch.tensor([[[100.0, 10.0, 1.0, 0.1]]])
    mask = wanda_mask(wanda_scores(weight, _sq_norm(x)), 0.5, Pattern.parse("unstructured"))
    assert mask.tolist() == [[True, True, False, False]]


def test_statistic_is_the_mean_over_sequences_of_column_energy():
    torch.manual_seed(0)
    x = torch.randn(3, 7, 5)
    stats = InputStatistics(5, Needs(sq_norm=True), torch.device("cpu"))
    stats.add(x[:2])
    stats.add(x[2:])  # streamed in two batches
    expected = (x**2).sum(1).mean(0)
    assert torch.allclose(stats.sq_norm, expected, rtol=1e-5)
    assert torch.allclose(stats.norm, expected.sqrt(), rtol=1e-5)


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.7, 0.95])
def test_every_row_prunes_exactly_int_sparsity_times_columns(sparsity):
    torch.manual_seed(1)
    weight, x = torch.randn(40, 96), torch.randn(2, 16, 96)
    mask = wanda_mask(wanda_scores(weight, _sq_norm(x)), sparsity, Pattern.parse("unstructured"))
    assert ((~mask).sum(1) == int(96 * sparsity)).all()
    scores = wanda_scores(weight, _sq_norm(x))
    for row in range(40):  # every pruned score is below every kept score of its own row
        assert scores[row][~mask[row]].max() <= scores[row][mask[row]].min()


@pytest.mark.parametrize("pattern", ["2:4", "1:4", "4:8"])
def test_nm_keeps_n_of_every_m_consecutive_inputs(pattern):
    torch.manual_seed(2)
    parsed = Pattern.parse(pattern)
    mask = wanda_mask(wanda_scores(torch.randn(24, 64), _sq_norm(torch.randn(1, 9, 64))), parsed.sparsity, parsed)
    assert nm_valid(mask, parsed.keep, parsed.group)


def test_ties_prune_the_lower_column_first():
    mask = row_topk_mask(torch.ones(2, 6), 0.5)
    assert mask.tolist() == [[False, False, False, True, True, True]] * 2


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.7])
def test_row_mask_equals_the_stable_sort_it_replaces_on_many_ties(sparsity):
    # scores on a coarse grid, so that every row has long runs of equal values across the cut
    scores = torch.randint(0, 6, (40, 96), generator=torch.Generator().manual_seed(3)).float()
    prune = int(96 * sparsity)
    reference = torch.ones_like(scores, dtype=torch.bool)
    reference.scatter_(-1, torch.sort(scores, dim=-1, stable=True).indices[:, :prune], False)
    assert torch.equal(row_topk_mask(scores, sparsity), reference)


def test_nm_ties_resolve_as_the_reference_does():
    # an exact tie between two inputs of one group, met in smollm2's block 4 (quantised weights)
    tie = 0.6558725833892822
    scores = torch.tensor([[tie, 0.7670513987541199, tie, 0.5891398787498474]])
    assert wanda_mask(scores, 0.5, Pattern.parse("2:4")).tolist() == [[True, True, False, False]]


def test_a_row_must_keep_something():
    with pytest.raises(PruningError, match="leaves no weight"):
        row_topk_mask(torch.rand(2, 4), 1.0)


def test_wanda_job_records_exact_sparsity_and_reconstruction_error(store, tiny_spec):
    result = run_job({**tiny_spec, "method": "wanda"}, store)
    layers = queries.layer_stats(store, [result.run_id])
    assert (layers["achieved_sparsity"] == 0.5).all()
    assert layers["recon_error"].between(0.01, 1.0).all()
    masks = queries.load_masks(store, result.run_id)
    assert all(((~m).sum(1) == m.shape[1] // 2).all() for m in masks.values())  # per-row exact


def test_wanda_beats_magnitude_when_some_inputs_are_outliers():
    torch.manual_seed(3)
    x = torch.randn(4, 64, 128)
    x[..., :6] *= 30  # a few outlier features, as in LLM activations
    weight = torch.randn(32, 128)
    flat = x.reshape(-1, 128)
    scores = wanda_scores(weight, _sq_norm(x))
    wanda = weight * wanda_mask(scores, 0.5, Pattern.parse("unstructured"))
    magnitude = weight * row_topk_mask(weight.abs(), 0.5)
    error = lambda pruned: float(torch.linalg.matrix_norm(flat @ (weight - pruned).t()))  # noqa: E731
    assert error(wanda) < 0.5 * error(magnitude)
