"""The default benchmark suites: one for a CUDA GPU host, one for a CPU machine.

GPU (most telling first): 2:4 through every path (torch's default cuSPARSELt, CUTLASS, the tuned
cuSPARSELt, the CUTLASS sm90 library where built) in bf16 and fp16, the tuned path and the dense
baseline in fp8 and int8, block-sparse and CSR at 90% sparsity, on the Llama weight shapes plus the
extra shapes given (the command line adds every model shape in the store); then the latency of
smollm2-135m and a Llama-7B-shaped model (random weights) dense vs 2:4 vs BSR. CPU: dense, CSR and BSR
on smollm2-135m's shapes, and its latency with its real weights.
"""

from __future__ import annotations

from workbench.kernels.latency import model_shapes
from workbench.kernels.spec import CPU_SHAPES, GPU_SHAPES, BenchSpec


def _merge(base: tuple[str, ...], extra: tuple[str, ...]) -> list[str]:
    return list(dict.fromkeys([*base, *extra]))


def gpu_suite(extra_shapes: tuple[str, ...] = (), masks_key: str | None = None) -> list[BenchSpec]:
    """Most telling first (a time budget leaves out the end): the Llama-7B latency (as the model is, then
    with q/k/v and gate/up fused in both models, then both models compiled: each compiled shape costs
    tens of seconds per model, so that part times the 2048-token target, 8192 tokens and one decode
    batch), 2:4 in bf16 and in fp16 on the Llama shapes and every shape of the latency models and the
    store (one part per dtype: each fits a GPU host's ten-minute command), then the rest."""
    shapes_16 = _merge(GPU_SHAPES, model_shapes("smollm2-135m") + extra_shapes)
    latency_timing = {"min_samples": 5}
    specs = [
        {"name": "llama-7b latency", "target": "latency", "latency": {"model": "llama-7b"}, "timing": latency_timing},
        {"name": "llama-7b latency fused", "target": "latency", "latency": {"model": "llama-7b", "fuse": True},
         "timing": latency_timing},
        {"name": "llama-7b latency compiled", "target": "latency",
         "latency": {"model": "llama-7b", "compile": True, "prefill_tokens": [2048, 8192], "decode_batches": [1]},
         "timing": latency_timing},
        {"name": "llama-7b latency fused compiled", "target": "latency",
         "latency": {"model": "llama-7b", "fuse": True, "compile": True, "prefill_tokens": [2048], "decode_batches": [1]},
         "timing": latency_timing},
        *({"name": f"2:4 {dtype}", "kernels": {"dtypes": [dtype], "shapes": shapes_16,
                                                "backends": ["dense", "semi24", "semi24-cutlass", "semi24-tuned",
                                                             "semi24-sm90"]}}
          for dtype in ("bf16", "fp16")),
        {"name": "smollm2-135m latency", "target": "latency",
         "latency": {"model": "smollm2-135m", "masks_key": masks_key}, "timing": latency_timing},
        {"name": "2:4 8-bit", "kernels": {"dtypes": ["fp8", "int8"], "shapes": list(GPU_SHAPES),
                                          "backends": ["dense", "semi24-tuned"]}},
        {"name": "bsr and csr at 90%", "kernels": {"dtypes": ["bf16"], "shapes": list(GPU_SHAPES), "sparsity": 0.9,
                                                   "block": 64, "backends": ["dense", "bsr", "bsr-triton", "csr"]}},
    ]
    return [BenchSpec.model_validate({"kind": "bench", "device": "cuda", **s}) for s in specs]


def cpu_suite(extra_shapes: tuple[str, ...] = (), masks_key: str | None = None) -> list[BenchSpec]:
    specs = [
        {"name": "cpu kernels", "kernels": {"shapes": _merge(CPU_SHAPES, extra_shapes)}},
        {"name": "smollm2-135m cpu latency", "target": "latency",
         "latency": {"model": "smollm2-135m", "random_weights": False, "masks_key": masks_key}},
    ]
    return [BenchSpec.model_validate({"kind": "bench", "device": "cpu", **s}) for s in specs]
