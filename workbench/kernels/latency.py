"""End-to-end latency of a model whose linear layers are dense or sparse: prefill and decode.

- Prefill: one sequence of T tokens through the model (no cache), logits of the last position only,
  as generation's first step computes them.
- Decode: one new token for each of B sequences whose cache already holds ``context`` tokens. The
  cache is static (fixed addresses, as CUDA graphs need) and its length counters are reset to
  ``context`` inside every step, so each replay computes the same step.

The sparse model and its dense original are timed alternately in one process; the speedup is the
ratio of their medians. Only the linear layers inside the blocks change, so end-to-end gains are
smaller than kernel gains (attention, norms, embeddings and the head stay dense).
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict
from typing import Any, Callable

import torch
from torch import nn

from workbench.kernels.measure.clocks import clock_sampler, clocks_by_mode
from workbench.kernels.measure.environment import DTYPES
from workbench.kernels.measure.harness import SKIPPED, is_fatal, past_deadline, relative_error, timing_modes
from workbench.kernels.measure.timing import Launch, eager_launch, graph_launch, measure_mode

# Shapes of models timed with random weights (no download, no pretrained file needed for latency).
# A latency variant that is no backend: the model with whole structures removed (a dense, smaller model).
SHRUNK = "shrunk"

RANDOM_MODELS: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, head_dim=64, vocab_size=49152, max_position_embeddings=8192,
                         tie_word_embeddings=True, rms_norm_eps=1e-5),
    "llama-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=32, vocab_size=32000, max_position_embeddings=8192,
                     tie_word_embeddings=False, rms_norm_eps=1e-5),
    "tiny-llama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=259, max_position_embeddings=512,
                       tie_word_embeddings=False),
}


def model_shapes(name: str) -> tuple[str, ...]:
    """The block linear layers' weight shapes (OUTxIN) of a random-weight model."""
    c = RANDOM_MODELS[name]
    hidden, inter = c["hidden_size"], c["intermediate_size"]
    head_dim = c.get("head_dim", hidden // c["num_attention_heads"])
    q, kv = c["num_attention_heads"] * head_dim, c["num_key_value_heads"] * head_dim
    shapes = [(q, hidden), (kv, hidden), (hidden, q), (inter, hidden), (hidden, inter)]
    return tuple(dict.fromkeys(f"{o}x{i}" for o, i in shapes))


def build_model(name: str, random_weights: bool, dtype: str, device: str, seed: int = 0) -> nn.Module:
    """A causal LM in eval mode: random weights of a known shape, or a built-in's real weights."""
    if random_weights:
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(**RANDOM_MODELS[name])
        previous = torch.get_default_dtype()
        torch.set_default_dtype(DTYPES[dtype])
        try:
            with torch.random.fork_rng(devices=[]), torch.device(device):
                torch.manual_seed(seed)
                model = LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(previous)
        return model.to(DTYPES[dtype]).eval()  # whatever dtype the library initialised in
    from workbench.models import load_model

    return load_model(name).model.to(device=device, dtype=DTYPES[dtype]).eval()


class CompiledModel:
    """A model behind ``torch.compile`` (static shapes: one graph per input shape, so each token count keeps
    its own searched matmul configurations), called as the model is.

    The first call of an input shape runs the model eagerly: sparse layers search their configuration
    there, outside compiled code. The second compiles (timed) and compares its logits with the eager
    ones (the fused kernels round differently); later calls run the compiled code.
    """

    def __init__(self, model: nn.Module):
        self.model, self.config = model, model.config
        # WORKBENCH_COMPILE_BACKEND picks another torch.compile backend (e.g. "eager": tracing only, for tests)
        self._compiled = torch.compile(model, dynamic=False,
                                       backend=os.environ.get("WORKBENCH_COMPILE_BACKEND", "inductor"))
        self._eager_logits: dict[tuple, torch.Tensor] = {}
        self.compile_s: dict[tuple, float] = {}
        self.rel_error: dict[tuple, float] = {}

    @staticmethod
    def call_key(shape: tuple[int, ...], with_cache: bool) -> tuple:
        """What one compiled graph serves: the input's shape, and whether a cache is passed (a decode
        step's prompt and a prefill of the same shape are different programs)."""
        return (*shape, with_cache)

    def __call__(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        shape = self.call_key(tuple(input_ids.shape), "past_key_values" in kwargs)
        if shape not in self._eager_logits:
            output = self.model(input_ids=input_ids, **kwargs)
            self._eager_logits[shape] = output.logits.detach().float().clone()
            return output
        if shape in self.compile_s:
            return self._compiled(input_ids=input_ids, **kwargs)
        started = time.perf_counter()
        output = self._compiled(input_ids=input_ids, **kwargs)
        if input_ids.is_cuda:
            torch.cuda.synchronize()
        self.compile_s[shape] = time.perf_counter() - started
        eager = self._eager_logits[shape]
        self.rel_error[shape] = relative_error(output.logits, eager)
        return output


def _allow_recompiles(limit: int = 256) -> None:
    """Each (model, input shape) is one compiled graph; torch's default limit (8 per function, shared by the
    dense and the sparse model) would silently fall back to eager after a few cases."""
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(limit, getattr(torch._dynamo.config, name)))


def _reset_lengths(lengths: list[torch.Tensor], context: torch.Tensor) -> None:
    """One multi-tensor kernel puts every layer's cache length back to ``context``."""
    torch._foreach_copy_(lengths, [context] * len(lengths))


def prefill_call(model: Callable[..., Any], ids: torch.Tensor) -> Callable[[], object]:
    return lambda: model(input_ids=ids, use_cache=False, logits_to_keep=1)


def decode_calls(models: dict[str, Callable[..., Any]], batch: int, context: int, vocab: int, device: str,
                 generator: torch.Generator) -> dict[str, Callable[[], object]]:
    """One decode step per model over a static cache holding ``context`` tokens: one cache shared by models of
    the same attention shape (a sparse model and its dense twin), one of its own for a model whose shape differs
    (a shrunk model has fewer layers or key/value heads)."""
    from transformers import StaticCache

    prompt = torch.randint(0, vocab, (batch, context), device=device, generator=generator)
    step = torch.randint(0, vocab, (batch, 1), device=device, generator=generator)
    caches: dict[tuple, tuple[Any, list[torch.Tensor], torch.Tensor]] = {}

    def cache_for(model: Callable[..., Any]) -> tuple[Any, list[torch.Tensor], torch.Tensor]:
        shape = _attention_shape(model.config)
        if shape not in caches:
            cache = StaticCache(config=model.config, max_cache_len=context + 1)
            model(input_ids=prompt, past_key_values=cache, use_cache=True, logits_to_keep=1)
            lengths = [layer.cumulative_length for layer in cache.layers]
            caches[shape] = cache, lengths, torch.full_like(lengths[0], context)
        return caches[shape]

    def call(model: Callable[..., Any]) -> Callable[[], object]:
        cache, lengths, start = cache_for(model)

        def run() -> object:
            _reset_lengths(lengths, start)
            return model(input_ids=step, past_key_values=cache, use_cache=True)
        return run

    return {name: call(model) for name, model in models.items()}


def _attention_shape(config: Any) -> tuple:
    """What a static cache's tensors are shaped by (per-layer widths of a shrunk model included)."""
    return (config.num_hidden_layers, getattr(config, "num_key_value_heads", None), getattr(config, "head_dim", None),
            json.dumps(getattr(config, "workbench_layer_widths", None), sort_keys=True, default=str))


def _measure(calls: dict[str, Callable[[], object]], device: str, task: dict[str, Any]) -> tuple[dict, dict, dict, dict]:
    """Samples per timing mode and model name, alternated and (with two models, outside eager mode) in
    steady blocks; the clocks of each; errors per mode (e.g. a step that cannot be captured)."""
    for call in calls.values():  # eager first: searches and lazy initialisation stay out of capture
        call()
    samples: dict[str, dict[str, list[float]]] = {}
    steady: dict[str, dict[str, list[float]]] = {}
    errors: dict[str, str] = {}
    with clock_sampler(device) as clocks:
        for mode in timing_modes(device, task["graphs"], task["eager"]):
            try:
                launches: dict[str, Launch] = {name: graph_launch([call], warmup=1) if mode == "graph" else
                                               eager_launch([call]) for name, call in calls.items()}
                samples[mode], steady[mode] = measure_mode(
                    launches, device, mode, task["budget_ms"] / 1e3, task["steady_ms"] / 1e3, task["settle_ms"] / 1e3,
                    2, task["min_samples"], task["max_samples"], clocks.tag)
            except Exception as err:
                if is_fatal(err):
                    raise
                errors[mode] = f"{type(err).__name__}: {err}"[:2000]
            finally:
                clocks.tag(None)
                launches = {}
            if device == "cuda":
                torch.cuda.empty_cache()
    return samples, steady, clocks_by_mode(clocks.summary()), errors


def run_latency_task(task: dict[str, Any], emit: Callable[[dict[str, Any]], None],
                     fault_hook: Callable[[str, str], None]) -> int:
    from workbench.kernels.convert import convert_model, search_seconds
    from workbench.kernels.measure.environment import device_info, versions

    device, dtype, variant = task["device"], task["dtype"], task["variant"]
    emit({"kind": "device", "label": device_info(device).label, "versions": versions(device)})
    masks = None
    if task.get("masks_file"):
        from safetensors.torch import load_file

        masks = {name: mask.bool() for name, mask in load_file(task["masks_file"]).items()}
    with torch.no_grad():
        dense = build_model(task["model"], task["random_weights"], dtype, device, task.get("seed", 0))
        models: dict[str, nn.Module] = {"dense": dense}
        fuse = bool(task.get("fuse"))
        if variant == SHRUNK:  # a smaller dense model: the sparsity's gain is the structures removed
            models["backend"] = shrink_for_timing(copy.deepcopy(dense), masks, task)
        elif variant != "dense":
            sparse = copy.deepcopy(dense)
            report = convert_model(sparse, variant, dtype, masks, task["sparsity"], task["block"], task.get("seed", 0),
                                   fuse=fuse)
            emit({"kind": "setup", "what": "convert", "seconds": report.seconds, "extra": asdict(report)})
            models["backend"] = sparse
        if fuse:  # the baseline fused alike, so that the speedup is the sparsity's alone
            convert_model(dense, "dense", dtype, fuse=True)
        weight_bytes = {name: _linear_bytes(model) for name, model in models.items()}
        runners: dict[str, Callable[..., Any]] = dict(models)
        if task.get("compile"):  # both models alike, so that the speedup is the sparsity's alone
            _allow_recompiles()
            runners = {name: CompiledModel(model) for name, model in models.items()}
        vocab = dense.config.vocab_size
        generator = torch.Generator(device=device).manual_seed(task.get("seed", 0))
        for case in task["cases"]:  # "prefill-<tokens>" | "decode-<batch>"
            case_id = case["case_id"]
            phase, size = case_id.split("-")[0], int(case_id.split("-")[1])
            emit({"kind": "start", "case_id": case_id})
            if past_deadline(task):
                emit({"kind": "case", "case_id": case_id, "status": "skipped", "error": SKIPPED})
                emit({"kind": "done", "case_id": case_id})
                continue
            fault_hook(variant, case_id)
            record: dict[str, Any] = {"kind": "case", "case_id": case_id, "phase": phase}
            try:
                if phase == "prefill":
                    ids = torch.randint(0, vocab, (1, size), device=device, generator=generator)
                    calls = {name: prefill_call(runner, ids) for name, runner in runners.items()}
                    shape = CompiledModel.call_key(tuple(ids.shape), with_cache=False)
                else:
                    calls = decode_calls(runners, size, task["decode_context"], vocab, device, generator)
                    shape = CompiledModel.call_key((size, 1), with_cache=True)
                samples, steady, clocks, errors = _measure(calls, device, task)
                name = "backend" if "backend" in models else "dense"
                result = {"samples_us": {m: s[name] for m, s in samples.items()},
                          "dense_us": {m: s["dense"] for m, s in samples.items()} if name == "backend" else {},
                          "steady_us": steady, "clocks": clocks,
                          "errors": errors, "weight_bytes": weight_bytes[name],
                          "dense_weight_bytes": weight_bytes["dense"],
                          "search_s": search_seconds(models[name]), "compile": _compile_report(runners, shape)}
                emit({**record, "status": "ok", "result": result})
            except Exception as err:  # noqa: BLE001 - a failed case is a row with its error text
                from workbench.kernels.backends.base import is_unsupported_error

                status = "unsupported" if is_unsupported_error(err) else "failed"
                emit({**record, "status": status, "error": f"{type(err).__name__}: {err}"[:4000]})
                if is_fatal(err):
                    return 3
            finally:
                calls = {}
                if device == "cuda":
                    torch.cuda.empty_cache()
            emit({"kind": "done", "case_id": case_id})
    return 0


def shrink_for_timing(model: nn.Module, masks: dict[str, torch.Tensor] | None, task: dict[str, Any]) -> nn.Module:
    """The structures a structured run removed (its stored masks), or, for a random-weight model, ``task``'s
    structure at ``task["sparsity"]`` of the decoder's parameters ranked by magnitude (the widths are what
    timing depends on, not which units went)."""
    from workbench.structured import shrink_to_masks, structured_prune

    if masks is not None:
        shrink_to_masks(model, masks)
    else:
        structured_prune(model, None, "magnitude-sp", task["structure"], task["sparsity"],
                         channel_multiple=task.get("channel_multiple", 1))
    return model


def _compile_report(runners: dict[str, Callable[..., Any]], shape: tuple) -> dict[str, dict[str, float | None]]:
    """Per figure, per model: seconds to compile this case's shape and the compiled logits' relative error."""
    compiled = {name: runner for name, runner in runners.items() if isinstance(runner, CompiledModel)}
    if not compiled:
        return {}
    return {"compile_s": {name: c.compile_s.get(shape) for name, c in compiled.items()},
            "compiled_rel_error": {name: c.rel_error.get(shape) for name, c in compiled.items()}}


def _linear_bytes(model: nn.Module) -> int:
    """Bytes of the block linear layers' weights as the matmuls read them (sparse metadata included)."""
    from workbench.kernels.convert import SparseLinear
    from workbench.models.layers import transformer_blocks

    prefix, _ = transformer_blocks(model)
    total = 0
    for name, module in model.named_modules():
        if not name.startswith(prefix + "."):
            continue
        if isinstance(module, SparseLinear):
            total += module.prepared.nbytes
        elif isinstance(module, nn.Linear):
            total += module.weight.numel() * module.weight.element_size()
    return total
