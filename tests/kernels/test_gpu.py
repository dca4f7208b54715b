"""GPU tests: run on a CUDA host with `pytest -m gpu tests/kernels` (skipped without a GPU)."""

import pytest
import torch

from workbench.kernels.backends import make_backend
from workbench.kernels.backends.base import is_unsupported_error
from workbench.kernels.backends.formats import semi24_mask
from workbench.kernels.measure.environment import DTYPES, device_info
from workbench.kernels.measure.harness import relative_error
from workbench.kernels.measure.timing import eager_launch, graph_launch, measure

pytestmark = pytest.mark.gpu


def _pruned(rows, cols, dtype):
    torch.manual_seed(0)
    weight = torch.randn(rows, cols, device="cuda")
    return (weight * semi24_mask(weight)).to(DTYPES[dtype])


@pytest.mark.parametrize("backend", ["semi24", "semi24-tuned", "semi24-fastest"])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("tokens", [1, 16, 200])
def test_2to4_matmul_equals_the_masked_dense_layer(backend, dtype, tokens):
    sparse = make_backend(backend)
    weight = _pruned(256, 512, dtype)
    x = torch.randn(sparse.padded_tokens(tokens, dtype), 512, device="cuda").to(DTYPES[dtype])
    prepared = sparse.prepare(weight, dtype)
    assert prepared.nbytes < 0.6 * weight.numel() * weight.element_size()  # values + metadata ~ 0.5625
    sparse.tune(prepared, x)
    result = sparse.matmul(prepared, x)[:tokens]
    reference = x[:tokens].float() @ weight.float().t()
    assert result.shape == (tokens, 256)
    assert relative_error(result, reference) < 1e-2  # 16-bit operands, fp32 accumulation


@pytest.mark.parametrize("dtype", ["fp8", "int8"])
def test_8bit_2to4_matches_its_dense_baseline(dtype):
    if dtype == "fp8" and device_info("cuda").capability < (8, 9):
        pytest.skip("fp8 needs sm_89 or newer")
    tuned, dense = make_backend("semi24-tuned"), make_backend("dense")
    torch.manual_seed(0)
    base = torch.randint(-4, 5, (256, 512), device="cuda").float()
    base[base == 0] = 1
    weight = (base * semi24_mask(base)).to(DTYPES[dtype])
    x = torch.randint(-4, 5, (32, 512), device="cuda").float().to(DTYPES[dtype])
    prepared = tuned.prepare(weight, dtype)
    tuned.tune(prepared, x)
    expected = dense.matmul(dense.prepare(weight, dtype), x).float()
    assert relative_error(tuned.matmul(prepared, x), expected) < 1e-2


def test_cutlass_2to4_runs_or_is_recorded_as_unsupported():
    cutlass = make_backend("semi24-cutlass")
    weight = _pruned(128, 128, "bf16")
    x = torch.randn(32, 128, device="cuda", dtype=torch.bfloat16)
    try:
        result = cutlass.matmul(cutlass.prepare(weight, "bf16"), x)
    except Exception as err:  # noqa: BLE001 - Hopper: compresses, refuses the matmul
        assert is_unsupported_error(err), err
        assert torch.cuda.get_device_capability()[0] != 8
    else:
        assert relative_error(result, x.float() @ weight.float().t()) < 1e-2


def test_graph_replay_and_eager_timings_of_a_2to4_matmul():
    tuned = make_backend("semi24-tuned")
    weight = _pruned(1024, 1024, "bf16")
    x = torch.randn(64, 1024, device="cuda", dtype=torch.bfloat16)
    prepared = tuned.prepare(weight, "bf16")
    tuned.tune(prepared, x)
    calls = [lambda: tuned.matmul(prepared, x)] * 4
    times = measure({"graph": graph_launch(calls), "eager": eager_launch(calls)}, "cuda", 0.05, min_samples=5)
    assert min(times["graph"]) > 0 and len(times["graph"]) >= 5
    assert sorted(times["graph"])[len(times["graph"]) // 2] < 10 * sorted(times["eager"])[len(times["eager"]) // 2]


def test_gpu_bench_job_and_tiny_model_latency(store):
    from workbench import queries
    from workbench.runner import run_job

    timing = {"budget_ms": 5, "min_samples": 3, "max_samples": 10, "copy_mb": 64, "matmul_size": 1024}
    kernels = run_job({"kind": "bench", "device": "cuda", "timing": timing,
                       "kernels": {"backends": ["semi24-tuned", "bsr-triton"], "dtypes": ["bf16"],
                                   "shapes": ["1024x1024"], "tokens": [16, 256]}}, store)
    rows = queries.kernel_results(store, [kernels.run_id])
    timed = rows[(rows["phase"] == "kernel") & (rows["status"] == "ok")]
    assert {"graph", "eager"} <= set(timed["timing"]) and {"dense", "semi24-tuned"} <= set(timed["backend"])
    assert timed["speedup"].notna().all() and timed["roofline_fraction"].notna().all()
    assert (timed["rel_error"] < 2e-2).all()

    latency = run_job({"kind": "bench", "target": "latency", "device": "cuda", "timing": timing,
                       "latency": {"model": "tiny-llama", "variants": ["semi24-tuned"], "prefill_tokens": [64],
                                   "decode_batches": [4], "decode_context": 16}}, store)
    rows = queries.kernel_results(store, [latency.run_id])
    timed = rows[rows["phase"].isin(["prefill", "decode"]) & (rows["status"] == "ok")]
    assert set(timed["backend"]) == {"dense", "semi24-tuned"} and (timed["tokens_per_s"] > 0).all()
    assert "eager" in set(timed["timing"])


@pytest.mark.parametrize("fuse", [False, True])
def test_tuned_2to4_model_gives_the_masked_dense_model_outputs(fuse):
    import copy

    from workbench.kernels.convert import convert_model
    from workbench.kernels.latency import build_model
    from workbench.models.layers import prunable_layers

    model = build_model("tiny-llama", True, "bf16", "cuda")
    masks = {name: semi24_mask(layer.weight) for name, layer in prunable_layers(model).items()}
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for name, layer in prunable_layers(reference).items():
            layer.weight.mul_(masks[name])
        convert_model(model, "semi24-tuned", "bf16", masks, fuse=fuse)
        ids = torch.randint(0, 259, (2, 40), device="cuda")
        assert relative_error(model(ids).logits, reference(ids).logits.float()) < 3e-2


@pytest.mark.parametrize("layout", [True, False])
def test_each_searched_2to4_layout_gives_the_masked_dense_product(layout, tmp_path, monkeypatch):
    from workbench.kernels.backends.cusparselt import Semi24Tuned
    from workbench.kernels.backends.tuning import AlgorithmCache

    monkeypatch.setattr(Semi24Tuned, "result_layouts", staticmethod(lambda dtype: (layout,)))
    tuned = Semi24Tuned(cache=AlgorithmCache(tmp_path / "choices.json"))
    weight = _pruned(512, 1024, "bf16")
    x = torch.randn(128, 1024, device="cuda", dtype=torch.bfloat16)
    prepared = tuned.prepare(weight, "bf16")
    chosen = tuned.tune(prepared, x)
    assert chosen.config["transpose_result"] is layout and not chosen.cached and chosen.seconds > 0
    assert relative_error(tuned.matmul(prepared, x), x.float() @ weight.float().t()) < 1e-2
    assert tuned.tune(tuned.prepare(weight, "bf16"), x).cached  # the second search is the cache's answer


@pytest.mark.parametrize("backend", ["semi24-tuned", "semi24-sm90", "semi24-fastest"])
def test_compiled_tuned_2to4_model_matches_its_eager_outputs(backend):
    import torch._dynamo

    from workbench.kernels.convert import convert_model
    from workbench.kernels.latency import CompiledModel, build_model

    reason = make_backend(backend).unsupported(device_info("cuda"), "bf16")
    if reason:
        pytest.skip(reason)
    model = build_model("tiny-llama", True, "bf16", "cuda")
    with torch.no_grad():
        convert_model(model, backend, "bf16")
        runner = CompiledModel(model)
        ids = torch.randint(0, 259, (1, 64), device="cuda")
        torch._dynamo.utils.counters.clear()
        eager = runner(input_ids=ids, use_cache=False).logits  # searches the configurations, eagerly
        runner(input_ids=ids, use_cache=False)  # compiles
        compiled = runner(input_ids=ids, use_cache=False).logits
    assert runner.compile_s[(1, 64, False)] > 0 and runner.rel_error[(1, 64, False)] < 3e-2
    assert relative_error(compiled, eager.float()) < 3e-2
    assert not torch._dynamo.utils.counters["graph_break"]  # the sparse matmul is one opaque operator
