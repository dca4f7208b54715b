import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from workbench import queries
from workbench.runner import run_job
from workbench.training.sparsity import layer_nm_mask, layer_nm_valid, layer_nm_weight_valid
from workbench.training.sr_ste import NMMaskedWeight


def _layer(decay):
    layer = nn.Linear(8, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 3.0, -4.0, 0.5, 6.0, -7.0, 8.0],
                                         [-0.1, 0.2, -0.3, 0.4, 5.0, -6.0, 0.7, -0.8]]))
    parametrize.register_parametrization(layer, "weight", NMMaskedWeight(2, 4, decay))
    return layer


@pytest.mark.parametrize("decay", [0.0, 2e-4, 0.5])
def test_backward_equals_the_closed_form(decay):
    layer = _layer(decay)
    dense = layer.parametrizations.weight.original
    x = torch.tensor([[1.0, 2.0, -1.0, 0.5, 3.0, -2.0, 1.0, 4.0], [0.5, -1.0, 2.0, 1.0, -1.0, 0.0, 2.0, 1.0]])
    upstream = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    out = layer(x)
    kept = torch.tensor([[0, 0, 1, 1, 0, 0, 1, 1], [0, 0, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    # forward: the layer computes with W * E, E the 2:4 mask of |W| (the largest two of each four)
    assert torch.equal(out, x @ (dense.detach() * kept).T)
    (out * upstream).sum().backward()
    straight_through = upstream.T @ x  # dL/d(W*E), handed to every dense weight
    expected = straight_through + decay * (~kept) * dense.detach()
    assert torch.allclose(dense.grad, expected, atol=1e-6)
    # the pruned positions still get the straight-through gradient (STE), not zero
    assert (dense.grad[~kept] != 0).any()


def test_conv_groups_run_along_input_channels():
    torch.manual_seed(0)
    weight = torch.randn(3, 8, 3, 3)
    mask = layer_nm_mask(weight.abs(), 2, 4)
    assert mask.shape == weight.shape
    groups = mask.permute(0, 2, 3, 1).reshape(3, 3, 3, 2, 4)  # (out, kh, kw, channel groups, 4)
    assert (groups.sum(-1) == 2).all()
    assert layer_nm_valid(mask, 2, 4)


def test_nm_pattern_holds_after_every_step(store, image_spec):
    spec = {**image_spec, "method": "sr-ste", "pattern": "2:4", "snapshot_every": 1, "params": {"decay": 0.05}}
    result = run_job(spec, store)
    index = queries.mask_index(store, result.run_id)
    assert sorted(index["step"].unique()) == list(range(13))  # a snapshot before the first and after every step
    for step in range(13):
        for name, mask in queries.load_masks(store, result.run_id, step=step).items():
            assert layer_nm_valid(mask.view(torch.Size(_shape(store, result.run_id, name))), 2, 4), (name, step)
    assert result.metrics["nm_valid"] == 1.0
    assert result.metrics["sparsity"] == pytest.approx(0.5, abs=1e-3)
    # the masks move during training: the SAD between snapshots is not all zero
    assert result.metrics["total_sad"] > 0


def _shape(store, run_id, layer):
    shape = queries.layer_stats(store, [run_id]).set_index("layer").loc[layer, "shape"]
    return tuple(int(d) for d in shape.split("x"))


def test_finished_model_is_nm_sparse(image_spec):
    from workbench.jobs.train import execute, prepare
    from workbench.training.spec import TrainSpec

    prepared = prepare(TrainSpec.model_validate({**image_spec, "method": "ste", "pattern": "2:4", "steps": 3}))
    execute(prepared)
    for module in prepared.layers.values():
        assert not parametrize.is_parametrized(module)
        assert layer_nm_weight_valid(module.weight, 2, 4)
