import math

import pytest
import torch

from workbench.training.density import erk_raw, erk_sparsities
from workbench.training.dst import drop_and_grow, drop_fraction

from .helpers import drive, make_method


def test_cosine_drop_fraction():
    assert drop_fraction(0, 0.3, 100) == pytest.approx(0.3)
    assert drop_fraction(50, 0.3, 100) == pytest.approx(0.15)
    assert drop_fraction(100, 0.3, 100) == pytest.approx(0.0)
    assert drop_fraction(25, 0.3, 100) == pytest.approx(0.15 * (1 + math.cos(math.pi / 4)))


def test_drop_and_grow_by_hand():
    weight = torch.tensor([[0.9, -0.1, 0.0, 0.5, 0.0, 0.3]])
    mask = torch.tensor([[True, True, False, True, False, True]])
    grads = torch.tensor([[0.0, 0.0, 0.2, 0.0, 0.7, 0.0]])
    new_mask, grown = drop_and_grow(weight, mask, 0.5, grads)
    # half of the 4 active: drop the two smallest |W| (-0.1 and 0.3), grow where |grad| is largest
    assert new_mask.tolist() == [[True, False, True, True, True, False]]
    assert grown.tolist() == [[False, False, True, False, True, False]]


def test_erk_densities_by_hand():
    shapes = {"big": (1000, 1000), "small": (10, 20), "conv": (64, 64, 3, 3)}
    sparsities = erk_sparsities(shapes, 0.9)
    counts = {n: math.prod(s) for n, s in shapes.items()}
    kept = sum((1 - sparsities[n]) * counts[n] for n in shapes)
    assert kept == pytest.approx(0.1 * sum(counts.values()))
    assert sparsities["small"] == 0.0  # its ERK density would exceed 1: made dense, the rest rescaled
    assert (1 - sparsities["conv"]) / (1 - sparsities["big"]) == pytest.approx(erk_raw(shapes["conv"]) / erk_raw(shapes["big"]))


@pytest.mark.parametrize("name", ["set", "rigl"])
@pytest.mark.parametrize("density", ["uniform", "erk"])
def test_per_layer_sparsity_constant_and_grown_weights_start_fresh(name, density):
    method = make_method(name, {"every": 5, "drop_fraction": 0.3, "end": 0.75}, sparsity=0.8,
                         total_steps=40, density=density)
    counts = {n: int(m.sum()) for n, m in method.mask.items()}
    before = {}
    updates = []

    def watch(step, phase):
        optimizer = method.context.optimizer
        if phase == "begin":
            before.update({n: m.clone() for n, m in method.mask.items()})
            return
        for layer, module in method.context.layers.items():
            mask = method.mask[layer]
            assert int(mask.sum()) == counts[layer], (layer, step)
            assert (module.weight.detach()[~mask] == 0).all()
            grown = mask & ~before[layer]
            if grown.any():
                assert (module.weight.detach()[grown] == 0).all()
                state = optimizer.state[module.weight]
                assert (state["exp_avg"][grown] == 0).all() and (state["exp_avg_sq"][grown] == 0).all()
                updates.append(step + 1)
        if (step + 1) % 5 == 0 and step + 1 < 30:
            # the number changed per layer follows the cosine drop fraction (rounded down)
            fraction = drop_fraction(step + 1, 0.3, 30)
            for layer in method.context.layers:
                assert int((method.mask[layer] & ~before[layer]).sum()) <= int(fraction * counts[layer])

    drive(method, 40, watch)
    assert sorted(set(updates)) == [5, 10, 15, 20, 25]  # every dT until T_end = 0.75 * 40


def test_rigl_grows_where_the_dense_gradient_is_largest():
    method = make_method("rigl", {"every": 1, "drop_fraction": 0.5, "end": 1.0}, sparsity=0.5, total_steps=4)
    layer = method.context.layers["0"]
    old = method.mask["0"].clone()
    # a gradient that points at four inactive positions
    method.context.optimizer.zero_grad()
    for param in method.context.model.parameters():
        param.grad = torch.zeros_like(param)
    inactive = (~old).nonzero()[:4]
    for row, col in inactive.tolist():
        layer.weight.grad[row, col] = 10.0
    method.before_optimizer_step(0)
    method.context.optimizer.step()
    method.after_optimizer_step(0)
    for row, col in inactive.tolist():
        assert method.mask["0"][row, col]
        assert layer.weight[row, col] == 0


def test_sparse_initialisation_keeps_each_units_scale():
    from .helpers import tiny_layers

    _, dense_layers = tiny_layers()
    scaled = make_method("set", {"scaled_init": True}, sparsity=0.9)
    plain = make_method("set", {"scaled_init": False}, sparsity=0.9)
    for name in ("0", "2"):
        dense = dense_layers[name].weight.detach()
        mask = scaled.mask[name]
        kept = mask.sum(1, keepdim=True).float().clamp(min=1)
        expected = dense * mask * (dense.shape[1] / kept).sqrt()
        assert torch.allclose(scaled.context.layers[name].weight.detach(), expected, atol=1e-6)
        # each unit's output variance for unit-variance inputs (sum of squared weights) matches the dense
        # initialisation on average; without scaling it is ten times smaller at 90% sparsity
        dense_power = float(dense.pow(2).sum(1).mean())
        assert float(scaled.context.layers[name].weight.detach().pow(2).sum(1).mean()) == pytest.approx(dense_power, rel=0.25)
        assert float(plain.context.layers[name].weight.detach().pow(2).sum(1).mean()) < 0.2 * dense_power
