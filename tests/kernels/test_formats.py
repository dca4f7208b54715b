import copy

import pytest
import torch

from workbench.kernels.backends import make_backend
from workbench.kernels.backends.base import PreparedWeight
from workbench.kernels.backends.formats import block_mask, semi24_mask, semi24_pack, semi24_unpack, unstructured_mask
from workbench.kernels.convert import ConversionError, SparseLinear, convert_model
from workbench.kernels.latency import build_model
from workbench.kernels.measure.environment import DeviceInfo
from workbench.kernels.measure.harness import relative_error
from workbench.models.layers import prunable_layers
from workbench.pruning.masks import nm_valid

CPU = DeviceInfo("cpu", "test cpu")


def test_semi24_mask_keeps_the_two_largest_of_every_four():
    weight = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]])
    assert semi24_mask(weight).tolist() == [[False, False, True, True, False, False, True, True]]
    assert semi24_mask(-weight).tolist() == semi24_mask(weight).tolist()  # by magnitude


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_2to4_compression_of_a_pruned_layer_gives_the_masked_dense_outputs(dtype):
    torch.manual_seed(0)
    layer = torch.nn.Linear(128, 64, bias=False)
    mask = semi24_mask(layer.weight)
    assert nm_valid(mask, 2, 4)
    pruned = (layer.weight * mask).to(dtype).detach()
    packed = semi24_pack(pruned)
    # kept values plus 2 bits of position each: 0.5625 of the dense bytes for 16-bit values
    assert packed.nbytes == pytest.approx(0.5625 * pruned.numel() * pruned.element_size())
    restored = semi24_unpack(packed)
    assert torch.equal(restored, pruned)
    x = torch.randn(16, 128).to(dtype)
    assert torch.equal(x.float() @ restored.float().t(), x.float() @ pruned.float().t())


def test_block_mask_keeps_whole_blocks_by_norm():
    torch.manual_seed(0)
    weight = torch.randn(64, 128)
    weight[:16, :16] *= 100  # the strongest block must survive
    mask = block_mask(weight, sparsity=0.75, block=16)
    blocks = mask.reshape(4, 16, 8, 16).permute(0, 2, 1, 3).reshape(32, 256)
    assert set(blocks.float().mean(1).tolist()) <= {0.0, 1.0}  # all or nothing per block
    assert int(blocks.all(1).sum()) == 8  # round(0.25 * 32)
    assert mask[:16, :16].all()
    with pytest.raises(ValueError):
        block_mask(torch.randn(60, 64), 0.5, 16)


def test_unstructured_mask_has_the_asked_density():
    generator = torch.Generator().manual_seed(0)
    mask = unstructured_mask(torch.randn(256, 256), 0.9, generator)
    assert 0.09 < mask.float().mean() < 0.11


@pytest.mark.parametrize("name,pattern", [("csr", "unstructured"), ("bsr", "block")])
def test_cpu_sparse_backends_match_the_masked_dense_layer(name, pattern):
    backend = make_backend(name, block=16)
    assert backend.unsupported(CPU, "fp32") is None and backend.pattern == pattern
    torch.manual_seed(0)
    weight = torch.randn(64, 128)
    mask = block_mask(weight, 0.5, 16) if pattern == "block" else unstructured_mask(weight, 0.5)
    pruned = weight * mask
    prepared = backend.prepare(pruned, "fp32")
    assert isinstance(prepared, PreparedWeight) and prepared.shape == (64, 128)
    stored = prepared.data.values().numel()  # values kept (whole blocks for BSR), then int64 indices
    index_rows = 64 // (16 if pattern == "block" else 1) + 1
    index_cols = stored // (256 if pattern == "block" else 1)
    assert prepared.nbytes == stored * 4 + (index_rows + index_cols) * 8
    x = torch.randn(7, 128)
    assert relative_error(backend.matmul(prepared, x), x @ pruned.t()) < 1e-6


def test_gpu_only_backends_say_why_on_a_cpu():
    assert "cuda" in make_backend("semi24-tuned").unsupported(CPU, "bf16")
    assert "no fp8" in make_backend("dense").unsupported(CPU, "fp8")
    assert make_backend("dense").padded_tokens(1, "int8") == 32
    assert make_backend("semi24-tuned").padded_tokens(17, "bf16") == 24


def _masked_copy(model, masks):
    import copy

    masked = copy.deepcopy(model)
    with torch.no_grad():
        for name, layer in prunable_layers(masked).items():
            layer.weight.mul_(masks[name])
    return masked


def test_converted_model_gives_the_masked_dense_model_outputs():
    model = build_model("tiny-llama", True, "fp32", "cpu")
    generator = torch.Generator().manual_seed(1)
    masks = {name: unstructured_mask(layer.weight, 0.5, generator) for name, layer in prunable_layers(model).items()}
    reference = _masked_copy(model, masks)
    report = convert_model(model, "csr", "fp32", masks)
    assert report.layers == 14 and report.from_run and report.sparsity == pytest.approx(0.5, abs=0.02)
    assert sum(isinstance(m, SparseLinear) for m in model.modules()) == 14
    ids = torch.randint(0, 259, (2, 24))
    with torch.no_grad():
        assert relative_error(model(ids).logits, reference(ids).logits.float()) < 1e-5


@pytest.mark.parametrize("backend", ["dense", "csr", "bsr"])
def test_fused_layers_that_read_one_tensor_give_the_unfused_outputs(backend):
    from workbench.kernels.convert import SharedInput, SharedInputSlice, shared_input_groups

    model = build_model("tiny-llama", True, "fp32", "cpu")
    groups = shared_input_groups(model, prunable_layers(model))
    assert [sorted(n.rsplit(".", 1)[1] for n in g) for g in groups[:4]] == \
        [["k_proj", "q_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]]
    generator = torch.Generator().manual_seed(2)
    masks = {name: unstructured_mask(layer.weight, 0.5, generator) for name, layer in prunable_layers(model).items()}
    masks = None if backend == "dense" else masks
    reference = model if masks is None else _masked_copy(model, masks)
    fused = copy.deepcopy(model)
    report = convert_model(fused, backend, "fp32", masks, fuse=True)
    assert report.layers == 14
    assert sum(isinstance(m, SharedInput) for m in fused.modules()) == 4  # q/k/v and gate/up of two blocks
    assert sum(isinstance(m, SharedInputSlice) for m in fused.modules()) == 10
    ids = torch.randint(0, 259, (2, 24))
    with torch.no_grad():
        assert relative_error(fused(ids).logits, reference(ids).logits.float()) < 1e-5
        other = torch.randint(0, 259, (2, 24))  # a second forward must not reuse the first one's outputs
        assert relative_error(fused(other).logits, reference(other).logits.float()) < 1e-5
    # once every member has read its slice, no activations stay held between forward passes
    assert all(m._output is None for m in fused.modules() if isinstance(m, SharedInput))


def test_2to4_backends_refuse_masks_that_are_not_2to4():
    model = build_model("tiny-llama", True, "fp32", "cpu")
    masks = {name: torch.ones_like(layer.weight, dtype=torch.bool) for name, layer in prunable_layers(model).items()}
    with pytest.raises(ConversionError, match="not 2:4"):
        convert_model(model, "semi24-tuned", "fp32", masks)
    with pytest.raises(ConversionError, match="lack"):
        convert_model(model, "csr", "fp32", dict(list(masks.items())[:3]))


def test_the_registry_names_each_backend_by_its_own_name_and_knows_which_search():
    import inspect

    from workbench.cli.bench import app
    from workbench.kernels.backends import BACKENDS, backend_class, searching_backends
    from workbench.kernels.report.tables import tuned_24

    assert all(backend_class(name).name == name for name in BACKENDS)
    assert tuned_24() == searching_backends("2:4") == ("semi24-tuned", "semi24-sm90", "semi24-fastest")
    assert searching_backends() == tuned_24() and not backend_class("semi24").searches_configuration
    command = next(info.callback for info in app.registered_commands if info.name == "kernels")
    help_text = inspect.signature(command).parameters["backend"].default.help
    assert all(name in help_text for name in BACKENDS)  # the command line lists the registry
