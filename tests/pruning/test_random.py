import torch
from torch import nn

from workbench.pruning.masks import nm_valid
from workbench.pruning.registry import PruneContext, resolve_method
from workbench.spec import Pattern


def _prune(seed, sparsity=0.5, pattern="unstructured"):
    torch.manual_seed(0)
    layers = {"a": nn.Linear(64, 32), "b": nn.Linear(32, 8)}
    method = resolve_method("random")
    context = PruneContext(model=nn.Sequential(*layers.values()), layers=layers, targets={n: sparsity for n in layers},
                           pattern=Pattern.parse(pattern), params=method.Params(), seed=seed)
    return layers, method.prune(context).masks


def test_random_has_exact_sparsity_and_is_seeded():
    layers, masks = _prune(seed=0, sparsity=0.7)
    for name, module in layers.items():
        assert int((~masks[name]).sum()) == round(0.7 * module.weight.numel())
    _, again = _prune(seed=0, sparsity=0.7)
    _, other = _prune(seed=1, sparsity=0.7)
    assert all(torch.equal(masks[n], again[n]) for n in masks)
    assert not torch.equal(masks["a"], other["a"])


def test_random_ignores_magnitudes():
    layers, masks = _prune(seed=0)
    weight = layers["a"].weight.abs()
    # a magnitude mask would keep only the top half; a random one keeps about half of the top half
    top_half = weight >= weight.median()
    overlap = float((masks["a"] & top_half).sum()) / float(top_half.sum())
    assert 0.35 < overlap < 0.65


def test_random_nm_is_valid():
    _, masks = _prune(seed=0, pattern="2:4")
    assert nm_valid(masks["a"], 2, 4) and nm_valid(masks["b"], 2, 4)
