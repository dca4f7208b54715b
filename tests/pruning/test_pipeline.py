"""The sequential calibration pipeline: grouping, batching, sequential inputs, held-out windows, bad input."""

import duckdb
import pytest
import torch

from workbench import queries
from workbench.data import calibration_windows
from workbench.errors import AssetError, PruningError
from workbench.models import load_model
from workbench.models.layers import prunable_layers
from workbench.pruning.pipeline import InputStatistics, Needs, run_pipeline
from workbench.pruning.wanda import wanda_pruner
from workbench.runner import run_job
from workbench.spec import Pattern


@pytest.fixture(scope="module")
def tiny():
    loaded = load_model("tiny-llama")
    windows = calibration_windows("shakespeare", loaded.tokenizer, 6, 32, 0)
    return loaded, windows


def _wanda(model, windows, **options):
    layers = prunable_layers(model)
    return run_pipeline(model, layers, windows, Needs(sq_norm=True),
                        wanda_pruner({n: 0.5 for n in layers}, Pattern.parse("unstructured")), **options)


def _masks(model):
    return {name: module.weight != 0 for name, module in prunable_layers(model).items()}


def test_layers_reading_one_tensor_share_statistics(tiny):
    loaded, windows = tiny
    result = _wanda(load_model("tiny-llama").model, windows)
    short = [[name.split(".")[-1] for name in group] for group in result.groups[:4]]
    assert short == [["q_proj", "k_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]]
    assert len(result.groups) == 8


def test_batching_and_held_out_windows_do_not_change_the_masks(tiny):
    _, windows = tiny
    one_by_one, batched, with_heldout = (load_model("tiny-llama").model for _ in range(3))
    _wanda(one_by_one, windows, tokens_per_batch=32)  # one window per forward pass
    _wanda(batched, windows, tokens_per_batch=4096)
    garbage = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(5))
    result = _wanda(with_heldout, windows, heldout=garbage)
    reference = _masks(one_by_one)
    for other in (batched, with_heldout):
        assert all(torch.equal(reference[n], m) for n, m in _masks(other).items())
    assert all(0 < r.extras["recon_error"] < 1 for r in result.results.values())


def test_each_block_is_calibrated_on_the_pruned_outputs_of_the_blocks_before(tiny):
    _, windows = tiny
    model = load_model("tiny-llama").model
    layers = prunable_layers(model)
    seen = {}

    def record(modules, stats):
        seen[next(iter(modules))] = stats.sq_norm.clone()
        return wanda_pruner({n: 0.5 for n in layers}, Pattern.parse("unstructured"))(modules, stats)

    run_pipeline(model, layers, windows, Needs(sq_norm=True), record)
    # replay: the (now fully pruned) model's block-1 q_proj input depends on the pruned block 0 only
    stats = InputStatistics(64, Needs(sq_norm=True), torch.device("cpu"))
    handle = model.model.layers[1].self_attn.q_proj.register_forward_pre_hook(lambda m, args: stats.add(args[0]))
    with torch.no_grad():
        model(input_ids=windows)
    handle.remove()
    assert torch.allclose(seen["model.layers.1.self_attn.q_proj"], stats.sq_norm, rtol=1e-5)
    dense = load_model("tiny-llama").model
    dense_stats = InputStatistics(64, Needs(sq_norm=True), torch.device("cpu"))
    dense.model.layers[1].self_attn.q_proj.register_forward_pre_hook(lambda m, args: dense_stats.add(args[0]))
    with torch.no_grad():
        dense(input_ids=windows)
    assert not torch.allclose(dense_stats.sq_norm, stats.sq_norm, rtol=1e-3)


def test_an_encoder_is_pruned_block_by_block(store, tiny_spec):
    result = run_job({**tiny_spec, "model": "tiny-bert", "method": "wanda"}, store)
    layers = queries.layer_stats(store, [result.run_id])
    assert len(layers) == 12 and (layers["achieved_sparsity"] == 0.5).all()
    assert layers["recon_error"].notna().all()


def test_an_unsupported_architecture_names_the_fix():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(PruningError, match="unsupported architecture: add a block locator for GPT2LMHeadModel"):
        run_pipeline(model, {}, torch.zeros(1, 4, dtype=torch.long), Needs(sq_norm=True), lambda m, s: {})


def _runs(store):
    if not store.path.exists():
        return []
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        return con.execute("SELECT status, error FROM runs").fetchall()
    finally:
        con.close()


def test_bad_input_fails_before_the_run_is_registered(store, tiny_spec, tmp_path):
    with pytest.raises(PruningError, match="does not divide"):
        run_job({**tiny_spec, "method": "wanda", "pattern": "2:3", "sparsity": None}, store)
    short_text = tmp_path / "short.txt"
    short_text.write_text("To be, or not to be.\n" * 10)
    with pytest.raises(AssetError, match="fewer than one window"):
        run_job({**tiny_spec, "method": "sparsegpt", "data": str(short_text),
                 "calibration": {"samples": 4, "seq_len": 512, "seed": 0}, "evaluation": {"windows": 1, "seq_len": 16}},
                store)
    assert _runs(store) == []


def test_nan_activations_fail_the_run_cleanly(store, tiny_spec, monkeypatch):
    import workbench.jobs.prune as job

    def overflowing(name):
        loaded = load_model(name)
        with torch.no_grad():
            loaded.model.model.layers[0].mlp.up_proj.weight.mul_(1e30)  # finite weights, squares overflow
        return loaded

    monkeypatch.setattr(job, "load_model", overflowing)
    with pytest.raises(PruningError, match="non-finite activations"):
        run_job({**tiny_spec, "method": "wanda"}, store)
    [(status, error)] = _runs(store)
    assert status == "failed" and "non-finite activations" in error
    assert queries.layer_stats(store).empty


def test_layers_outside_the_blocks_are_refused(store, tiny_spec):
    with pytest.raises(PruningError, match="use magnitude for them"):
        run_job({**tiny_spec, "method": "wanda", "prune_head": True}, store)


@pytest.mark.gpu
def test_bfloat16_model_on_the_gpu_prunes_with_float32_statistics():
    from workbench.pruning.masks import nm_valid
    from workbench.pruning.pipeline import gram
    from workbench.pruning.sparsegpt import sparsegpt_pruner

    x = torch.randn(4096, 256, device="cuda").bfloat16()
    assert torch.allclose(gram(x), x.float().t() @ x.float(), rtol=1e-4, atol=1e-2)
    # random byte windows: a GPU host need not have the text corpora installed
    windows = torch.randint(0, 256, (6, 32), generator=torch.Generator().manual_seed(0))
    model = load_model("tiny-llama").model.to("cuda", torch.bfloat16)
    layers = prunable_layers(model)
    result = run_pipeline(model, layers, windows[:4], Needs(hessian=True),
                          sparsegpt_pruner({n: 0.5 for n in layers}, Pattern.parse("2:4"), 128, 0.01),
                          heldout=windows[4:])
    for name, module in layers.items():
        assert module.weight.dtype == torch.bfloat16 and nm_valid(module.weight != 0, 2, 4), name
        assert 0 < result.results[name].extras["recon_error"] < 1, name
        mask = result.results[name].mask  # crossed to the host as bits
        assert mask.device.type == "cpu" and nm_valid(mask, 2, 4), name
        assert not ((module.weight != 0).cpu() & ~mask).any(), name


def test_bfloat16_calibration_runs_the_block_products_in_bfloat16_and_keeps_float32_statistics(tiny):
    _, windows = tiny
    plain, fast = load_model("tiny-llama").model, load_model("tiny-llama").model
    output_dtypes = set()
    hook = fast.model.layers[0].mlp.up_proj.register_forward_hook(lambda m, a, out: output_dtypes.add(out.dtype))
    stats_dtypes = set()

    def pruner(modules, stats):
        stats_dtypes.add(stats.sq_norm.dtype)
        return wanda_pruner({n: 0.5 for n in modules}, Pattern.parse("unstructured"))(modules, stats)

    layers = prunable_layers(fast)
    run_pipeline(fast, layers, windows, Needs(sq_norm=True), pruner, precision="bfloat16")
    hook.remove()
    _wanda(plain, windows)
    assert output_dtypes == {torch.bfloat16} and stats_dtypes == {torch.float32}
    assert all(m.weight.dtype == torch.float32 for m in layers.values())  # weights are never cast
    a, b = _masks(plain), _masks(fast)
    differ = sum(int((a[n] ^ b[n]).sum()) for n in a) / sum(m.numel() for m in a.values())
    assert 0 <= differ < 0.02  # bfloat16 activations move only near-ties across the per-row threshold
    assert all(abs(float(b[n].float().mean()) - 0.5) < 1e-6 for n in b)  # the exact per-row count holds


def test_calibration_precision_is_in_the_key_only_when_it_is_not_the_default(tiny_spec):
    from workbench.spec import job_key, parse_spec

    default = parse_spec(tiny_spec)
    explicit = parse_spec({**tiny_spec, "calibration": {**tiny_spec.get("calibration", {}), "precision": "model"}})
    fast = parse_spec({**tiny_spec, "calibration": {**tiny_spec.get("calibration", {}), "precision": "bfloat16"}})
    assert "precision" not in default.canonical()["calibration"]  # keys stored before the field existed hold
    assert job_key(default) == job_key(explicit) != job_key(fast)
    assert fast.canonical()["calibration"]["precision"] == "bfloat16"
    with pytest.raises(Exception, match="precision"):
        parse_spec({**tiny_spec, "calibration": {"precision": "int4"}})


def test_a_job_with_bfloat16_calibration_is_its_own_run(store, tiny_spec, monkeypatch):
    import workbench.pruning.pipeline as pipeline

    seen = []
    original = pipeline.run_pipeline
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, **k: seen.append(k["precision"]) or original(*a, **k))
    spec = {**tiny_spec, "method": "wanda"}
    plain = run_job(spec, store)
    fast = run_job({**spec, "calibration": {**spec["calibration"], "precision": "bfloat16"}}, store)
    assert seen == ["model", "bfloat16"] and plain.key != fast.key and not fast.cached
    assert fast.metrics["sparsity"] == pytest.approx(0.5, abs=1e-3) and fast.metrics["perplexity"] > 1


@pytest.mark.parametrize("shape", [(3, 5), (16, 64), (7,)])
def test_masks_cross_from_the_gpu_as_bits_and_come_back_whole(shape):
    import numpy as np

    from workbench.pruning.masks import _pack_bits_on_device, pack_bits, unpack_bits

    mask = torch.rand(shape, generator=torch.Generator().manual_seed(1)) > 0.5
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-mask.numel() // 8)
    assert np.array_equal(packed.numpy(), np.packbits(mask.reshape(-1).numpy()))  # numpy's bit order
    assert torch.equal(_pack_bits_on_device(mask), packed)  # the GPU's arithmetic, run here on the CPU
    assert torch.equal(unpack_bits(packed, mask.shape), mask)


def test_blocks_of_each_layer_type_take_their_own_mask_and_rotary_embeddings():
    from tests.models.tiny_gemma import make_gemma
    from workbench.pruning.pipeline import kwargs_sources

    model = make_gemma()  # blocks 0 and 2: sliding window of 8 tokens; block 1: global, another rotary base
    assert kwargs_sources(model, 3) == [0, 1, 0]
    windows = torch.randint(0, 256, (4, 24), generator=torch.Generator().manual_seed(0))
    layers = prunable_layers(model)
    seen = {}

    def record(modules, stats):
        seen[next(iter(modules))] = stats.sq_norm.clone()
        return wanda_pruner({n: 0.5 for n in layers}, Pattern.parse("unstructured"))(modules, stats)

    run_pipeline(model, layers, windows, Needs(sq_norm=True), record, tokens_per_batch=48)  # batches of 2
    # replay: block 2 reads what the pruned global block 1 wrote, as the whole model computes it
    stats = InputStatistics(32, Needs(sq_norm=True), torch.device("cpu"))
    model.model.layers[2].self_attn.q_proj.register_forward_pre_hook(lambda m, args: stats.add(args[0]))
    with torch.no_grad():
        model(input_ids=windows)
    assert torch.allclose(seen["model.layers.2.self_attn.q_proj"], stats.sq_norm, rtol=1e-5)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_gemma_prunes_one_shot(store, tiny_spec, tmp_path, method):
    from tests.models.tiny_gemma import save_gemma_folder

    folder = save_gemma_folder(tmp_path / "gemma")
    result = run_job({**tiny_spec, "model": str(folder), "method": method}, store)
    layers = queries.layer_stats(store, [result.run_id])
    assert len(layers) == 3 * 7 and (layers["achieved_sparsity"] == 0.5).all()
    assert 1 < result.metrics["perplexity"] < float("inf")
