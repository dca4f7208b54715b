"""The ``bench`` job kind: kernel benchmarks and model latency, cached and stored like any run.

```yaml
kind: bench
target: kernels            # or latency
device: cuda               # or cpu
kernels: {backends: [dense, semi24-tuned], dtypes: [bf16], shapes: [4096x4096], tokens: [1, 2048]}
latency: {model: llama-7b, random_weights: true, variants: [dense, semi24-tuned]}
timing: {budget_ms: 40}
```
Empty lists take the device's defaults, filled in before hashing, so the key names every case. The
key also covers the device and software stack (``environment.device_identity``): the same spec on
another GPU, or another torch, is another job. ``timing.time_budget_s`` bounds the whole job: a run
that left cases out because it ran out is stored with the metric ``incomplete``, and the runner runs
its key again instead of serving it from the cache; a spec without a budget keeps the key it had
before the budget existed.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from workbench.errors import WorkbenchError
from workbench.spec import JobSpec, register_kind
from workbench.values import StrictModel

HARNESS_VERSION = "2"  # bump when what a case measures changes: it enters the key
RANDOM_SHAPES_VERSION = "1"  # bump when a random model's shape (latency.RANDOM_MODELS) changes

# Llama-7B's attention/MLP shapes, Llama-70B's 8192-wide ones, and its MLP (out_features x in_features)
GPU_SHAPES = ("4096x4096", "11008x4096", "4096x11008", "8192x8192", "28672x8192")
GPU_TOKENS = (1, 16, 128, 2048, 8192)
# smollm2-135m's attention and MLP shapes: what two CPU cores time in seconds
CPU_SHAPES = ("576x576", "1536x576", "576x1536")
CPU_TOKENS = (1, 16, 128)
LATENCY_DTYPES = ("fp32", "bf16", "fp16")

DEVICE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cuda": {"shapes": GPU_SHAPES, "tokens": GPU_TOKENS, "variants": ("dense", "semi24", "semi24-tuned", "bsr-triton"),
             "latency_dtype": "bf16", "prefill": (128, 512, 2048, 8192), "decode": (1, 8, 64), "context": 512,
             "kernel_budget_ms": 40.0, "latency_budget_ms": 300.0, "min_samples": 10, "rotate_mb": 256,
             "kernel_steady_ms": 250.0, "latency_steady_ms": 1000.0, "kernel_settle_ms": 250.0,
             "latency_settle_ms": 500.0,
             "copy_mb": 1024, "matmul_size": 8192},
    "cpu": {"shapes": CPU_SHAPES, "tokens": CPU_TOKENS, "variants": ("dense", "csr", "bsr"),
            "latency_dtype": "fp32", "prefill": (128, 512), "decode": (1, 8), "context": 128,
            "kernel_budget_ms": 50.0, "latency_budget_ms": 300.0, "min_samples": 5, "rotate_mb": 64,
            "kernel_steady_ms": 50.0, "latency_steady_ms": 300.0, "kernel_settle_ms": 0.0, "latency_settle_ms": 0.0,
            "copy_mb": 256, "matmul_size": 2048},
}


class BenchError(WorkbenchError):
    """A benchmark that cannot run here (no GPU, unknown backend, masks that do not fit)."""


def parse_shape(text: str) -> tuple[int, int]:
    """'4096x11008' -> (out_features, in_features)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match or 0 in (int(match.group(1)), int(match.group(2))):
        raise ValueError(f"shape {text!r} is not OUTxIN, e.g. 4096x11008 (out_features x in_features)")
    return int(match.group(1)), int(match.group(2))


class KernelGrid(StrictModel):
    backends: tuple[str, ...] = Field((), description="backends to time (dense, the baseline, always runs)")
    dtypes: tuple[str, ...] = Field((), description="fp32, bf16, fp16, fp8, int8")
    shapes: tuple[str, ...] = Field((), description="weight shapes OUTxIN")
    tokens: tuple[int, ...] = Field((), description="rows of the input (tokens per call)")
    sparsity: float = Field(0.9, description="sparsity of the block and unstructured patterns (2:4 is 0.5)")
    block: int = Field(64, ge=1, description="block size of the BSR backends")

    @field_validator("shapes")
    @classmethod
    def _shapes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple("x".join(map(str, parse_shape(s))) for s in value)


class LatencyGrid(StrictModel):
    model: str = Field("smollm2-135m", description="model whose linear layers are converted")
    random_weights: bool = Field(True, description="random weights of the model's shape (no download)")
    variants: tuple[str, ...] = Field((), description="backends the linear layers go through (dense always runs)")
    dtype: str | None = Field(None, description="fp32, bf16 or fp16")
    prefill_tokens: tuple[int, ...] = ()
    decode_batches: tuple[int, ...] = ()
    decode_context: int | None = Field(None, ge=1, description="tokens already in the cache of a decode step")
    sparsity: float = Field(0.9, description="sparsity of the block and unstructured patterns (2:4 is 0.5)")
    block: int = Field(64, ge=1)
    masks_key: str | None = Field(None, description="key of the pruning run whose masks are used")
    fuse: bool = Field(False, description="layers that read one tensor (q/k/v, gate/up) as one matmul, "
                                          "in the dense model and in the sparse one")

    compile: bool = Field(False, description="torch.compile the dense model and the sparse one alike before timing "
                                             "(norms, rotary and activations fused around the matmuls)")
    structure: Literal["heads", "channels", "blocks", "heads+channels"] | None = Field(
        None, description="variant 'shrunk' without a pruning run: remove this structure (magnitude-sp, `sparsity` of "
                          "the decoder's parameters) from the model before timing it")

    channel_multiple: int = Field(1, ge=1, le=4096, description="with `structure`: every block keeps a multiple of "
                                                                "this many MLP channels")

    KEY_OMITS_AT_DEFAULT: ClassVar[frozenset[str]] = frozenset({"fuse", "compile", "structure", "channel_multiple"})


class Timing(StrictModel):
    budget_ms: float | None = Field(None, gt=0, description="measuring time per case and timing mode")
    steady_ms: float | None = Field(None, gt=0, description="each side's timed block of the steady measurement")
    settle_ms: float | None = Field(None, ge=0, description="untimed run before a steady block (the GPU clock settles)")
    min_samples: int | None = Field(None, ge=1)
    max_samples: int = Field(200, ge=1)
    rotate_mb: int | None = Field(None, ge=0, description="working set the rotated copies exceed")
    graphs: bool = Field(True, description="time CUDA graph replay")
    eager: bool = Field(True, description="time eager launches")
    case_timeout_s: float = Field(300.0, gt=0, description="a case without a result for this long is killed")
    copy_mb: int | None = Field(None, ge=1, description="size of the bandwidth ceiling's copy")
    matmul_size: int | None = Field(None, ge=16, description="n of the n^3 matmul-rate ceiling")
    time_budget_s: float | None = Field(None, ge=0, description="the whole job's time budget: cases that would start "
                                                              "later are left out (rows say so) and the run is "
                                                              "stored as incomplete, to be run again")

    KEY_OMITS_AT_DEFAULT: ClassVar[frozenset[str]] = frozenset({"time_budget_s"})


def _check_names(kind: str, names: tuple[str, ...], known: Any) -> None:
    for name in names:
        if name not in known:
            raise ValueError(f"unknown {kind} {name!r}; use one of: {', '.join(known)}")


def _with_dense(names: tuple[str, ...]) -> tuple[str, ...]:
    """The dense baseline first, then the others in the given order."""
    return ("dense", *[n for n in names if n != "dense"])


@register_kind
class BenchSpec(JobSpec):
    """Kernel benchmarks (``target: kernels``) or model latency (``target: latency``)."""

    KIND: ClassVar[str] = "bench"
    kind: Literal["bench"] = "bench"
    target: Literal["kernels", "latency"] = "kernels"
    device: Literal["cpu", "cuda"] = "cpu"
    kernels: KernelGrid = Field(default_factory=KernelGrid)
    latency: LatencyGrid = Field(default_factory=LatencyGrid)
    timing: Timing = Field(default_factory=Timing)
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _fill_defaults(self) -> "BenchSpec":
        from workbench.kernels.backends import BACKENDS, default_backends, default_dtypes
        from workbench.kernels.latency import RANDOM_MODELS, SHRUNK
        from workbench.kernels.measure.environment import DTYPES

        d = DEVICE_DEFAULTS[self.device]
        k = self.kernels
        _check_names("backend", k.backends, BACKENDS)
        _check_names("dtype", k.dtypes, DTYPES)
        kernels = k.model_copy(update={
            "backends": _with_dense(k.backends or default_backends(self.device)),
            "dtypes": k.dtypes or default_dtypes(self.device),
            "shapes": k.shapes or d["shapes"], "tokens": k.tokens or d["tokens"]})
        lat = self.latency
        _check_names("variant", lat.variants, [*BACKENDS, SHRUNK])
        if SHRUNK in lat.variants and not (lat.masks_key or lat.structure):
            raise ValueError(f"variant {SHRUNK!r} needs the structured pruning run to time (masks_key) or a structure "
                             "to remove (latency.structure)")
        if lat.dtype is not None:
            _check_names("latency dtype", (lat.dtype,), LATENCY_DTYPES)
        if lat.random_weights and lat.model not in RANDOM_MODELS:
            raise ValueError(f"no random-weight shape for model {lat.model!r}; use one of: {', '.join(RANDOM_MODELS)} "
                             "or set random_weights: false for a built-in")
        latency = lat.model_copy(update={
            "variants": _with_dense(lat.variants or d["variants"]), "dtype": lat.dtype or d["latency_dtype"],
            "prefill_tokens": lat.prefill_tokens or d["prefill"], "decode_batches": lat.decode_batches or d["decode"],
            "decode_context": lat.decode_context or d["context"]})
        t = self.timing
        target = "kernel" if self.target == "kernels" else "latency"
        timing = t.model_copy(update={
            "budget_ms": t.budget_ms or d[f"{target}_budget_ms"], "steady_ms": t.steady_ms or d[f"{target}_steady_ms"],
            "settle_ms": d[f"{target}_settle_ms"] if t.settle_ms is None else t.settle_ms,
            "min_samples": t.min_samples or d["min_samples"],
            "rotate_mb": d["rotate_mb"] if t.rotate_mb is None else t.rotate_mb,
            "copy_mb": t.copy_mb or d["copy_mb"], "matmul_size": t.matmul_size or d["matmul_size"]})
        for name, value in (("kernels", kernels), ("latency", latency), ("timing", timing)):
            object.__setattr__(self, name, value)
        return self

    def canonical(self) -> dict[str, Any]:
        data = super().canonical()
        data.pop("latency" if self.target == "kernels" else "kernels")  # the other target's grid changes nothing
        return data

    def identity_parts(self) -> dict[str, str]:
        import torch

        from workbench.kernels.measure.environment import device_identity

        if self.device == "cuda" and not torch.cuda.is_available():
            raise BenchError("this spec asks for a CUDA GPU and there is none here",
                             "run it on a GPU host, or use --device cpu")
        parts = {"harness": f"bench@{HARNESS_VERSION}", "device": device_identity(self.device)}
        if self.target == "latency":
            if self.latency.random_weights:
                parts["model"] = f"random:{self.latency.model}@{RANDOM_SHAPES_VERSION}"
            else:
                from workbench.models import model_identity

                parts["model"] = model_identity(self.latency.model)
            parts["masks"] = self.latency.masks_key or "pattern"
        return parts

    def summary(self) -> dict[str, Any]:
        return {"model": self.latency.model if self.target == "latency" else None, "method": f"bench-{self.target}"}
