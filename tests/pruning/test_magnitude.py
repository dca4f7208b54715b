import pytest
import torch
from torch import nn

from workbench.errors import PruningError
from workbench.pruning.magnitude import global_magnitude_masks
from workbench.pruning.masks import nm_mask, nm_valid, row_topk_mask, topk_mask
from workbench.pruning.registry import PruneContext, resolve_method
from workbench.spec import Pattern


def _context(layers, sparsity=0.5, pattern="unstructured", scope="layer"):
    method = resolve_method("magnitude")
    return PruneContext(model=nn.Sequential(*layers.values()), layers=layers,
                        targets={n: sparsity for n in layers}, pattern=Pattern.parse(pattern),
                        params=method.Params(scope=scope))


def test_golden_two_four_keeps_the_two_largest_of_each_group():
    weight = torch.arange(1.0, 9.0).view(1, 8)
    assert nm_mask(weight.abs(), 2, 4).tolist() == [[False, False, True, True, False, False, True, True]]


def test_exact_counts_even_with_ties():
    scores = torch.ones(10, 10)  # all tied: a `<=` threshold would prune everything
    mask = topk_mask(scores, 0.37)
    assert int((~mask).sum()) == 37


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.73, 0.9])
def test_layerwise_counts_are_exact(sparsity):
    torch.manual_seed(0)
    layers = {"a": nn.Linear(48, 32), "b": nn.Linear(32, 16)}
    outcome = resolve_method("magnitude").prune(_context(layers, sparsity))
    for name, module in layers.items():
        assert int((~outcome.masks[name]).sum()) == round(sparsity * module.weight.numel())
        # the pruned weights are the smallest in magnitude
        kept = module.weight.abs()[outcome.masks[name]]
        pruned = module.weight.abs()[~outcome.masks[name]]
        assert pruned.max() <= kept.min()


@pytest.mark.parametrize("keep, group", [(2, 4), (1, 4), (4, 8), (2, 8)])
def test_nm_masks_are_valid(keep, group):
    torch.manual_seed(1)
    layers = {"a": nn.Linear(64, 24)}
    outcome = resolve_method("magnitude").prune(_context(layers, pattern=f"{keep}:{group}"))
    mask = outcome.masks["a"]
    assert nm_valid(mask, keep, group)
    assert (mask.view(24, -1, group).sum(-1) == keep).all()


def test_global_magnitude_equals_torch_global_unstructured():
    torch.manual_seed(3)
    reference = nn.Sequential(nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 20), nn.Linear(20, 10))
    ours = {f"l{i}": m.weight.detach().clone() for i, m in enumerate(m for m in reference if isinstance(m, nn.Linear))}
    import torch.nn.utils.prune as torch_prune

    torch_prune.global_unstructured([(m, "weight") for m in reference if isinstance(m, nn.Linear)],
                                    pruning_method=torch_prune.L1Unstructured, amount=0.6)
    masks = global_magnitude_masks(ours, 0.6)
    for (name, mask), module in zip(masks.items(), [m for m in reference if isinstance(m, nn.Linear)]):
        assert torch.equal(mask, module.weight_mask.bool()), name
    per_layer = [float((~m).float().mean()) for m in masks.values()]
    assert len(set(round(s, 3) for s in per_layer)) > 1  # global: layers end at different sparsities


def test_global_scope_rejects_nm():
    layers = {"a": nn.Linear(8, 4)}
    with pytest.raises(PruningError, match="cannot produce an N:M"):
        resolve_method("magnitude").prune(_context(layers, pattern="2:4", scope="global"))


def test_row_topk_prunes_the_same_count_in_every_row():
    mask = row_topk_mask(torch.rand(5, 9), 0.99)
    assert (mask.sum(-1) == 1).all()
