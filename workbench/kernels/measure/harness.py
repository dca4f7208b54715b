"""Measure one kernel case: a weight shape, a token count, a dtype and a backend.

What a case does, in order:
1. draw ``copies`` random weights (never zeros) and inputs, enough that their total exceeds the L2;
   prune each to the backend's pattern and convert it to the backend's format (timed: a one-time cost);
2. search the backend's configuration for this token count (timed; the searching 2:4 backends:
   semi24-tuned, cached on disk, semi24-sm90 and semi24-fastest);
3. check the result against an fp32 reference of the same pruned weight: relative error;
4. time the backend and the dense baseline alternately (the baseline uses the unpruned weight),
   with graph replay and eager launches on a GPU, wall clock on a CPU; then each of the two in steady
   blocks of its own (graph replay and wall clock only), with the GPU's clock and power recorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from workbench.kernels.backends.base import Backend, PreparedWeight
from workbench.kernels.backends.dense import Dense
from workbench.kernels.backends.formats import pattern_mask
from workbench.kernels.measure.clocks import clock_sampler, clocks_by_mode
from workbench.kernels.measure.environment import DTYPES, output_dtype
from workbench.kernels.measure.timing import Launch, eager_launch, graph_launch, measure_mode, rotation_copies


@dataclass(frozen=True)
class KernelCase:
    case_id: str
    out_features: int
    in_features: int
    tokens: int


@dataclass(frozen=True)
class CaseSettings:
    dtype: str
    sparsity: float = 0.9  # of the block and unstructured patterns; 2:4 is 0.5 by definition
    block: int = 64
    budget_ms: float = 40.0
    steady_ms: float = 250.0  # each side's timed block of the steady measurement
    settle_ms: float = 250.0  # untimed run before a block: the clock settles to the workload
    warmup: int = 3
    min_samples: int = 10
    max_samples: int = 200
    rotate_mb: int = 256
    graphs: bool = True
    eager: bool = True
    paired: bool = True  # time the dense baseline alternately with the backend
    seed: int = 0


@dataclass
class CaseResult:
    """Samples per timing mode ("graph", "eager" or "wall") and what the rows need beside them."""

    samples_us: dict[str, list[float]] = field(default_factory=dict)
    dense_us: dict[str, list[float]] = field(default_factory=dict)
    steady_us: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # mode -> backend/dense -> samples
    clocks: dict[str, dict[str, Any]] = field(default_factory=dict)  # mode -> alternated/dense/backend -> clocks
    errors: dict[str, str] = field(default_factory=dict)  # timing mode -> error text
    bytes_moved: int = 0
    density: float = 1.0
    math_fraction: float = 1.0
    rel_error: float | None = None
    padded_tokens: int = 0
    setup: dict[str, float] = field(default_factory=dict)  # one-time costs in seconds
    extra: dict[str, Any] = field(default_factory=dict)


def random_values(shape: tuple[int, ...], dtype: str, device: str, generator: torch.Generator) -> torch.Tensor:
    """Random, never zero, in the benchmark's dtype: normal floats; integers in +-[1, 8] for int8."""
    if dtype == "int8":
        magnitude = torch.randint(1, 9, shape, generator=generator, device=device)
        sign = torch.randint(0, 2, shape, generator=generator, device=device) * 2 - 1
        return (magnitude * sign).to(torch.float32)
    values = torch.randn(shape, generator=generator, device=device)
    return torch.where(values == 0, torch.ones_like(values), values)


def _cast(values: torch.Tensor, dtype: str) -> torch.Tensor:
    return values.to(DTYPES[dtype])


def relative_error(result: torch.Tensor, reference: torch.Tensor) -> float:
    """||result - reference|| / ||reference|| in fp32 (float('nan') propagates: it never passes)."""
    result = result.float()
    return float(torch.linalg.vector_norm(result - reference) / torch.linalg.vector_norm(reference))


def _copy_bytes(case: KernelCase, tokens: int, dtype: str) -> int:
    element = torch.empty((), dtype=DTYPES[dtype]).element_size()
    out_element = torch.empty((), dtype=output_dtype(dtype)).element_size()
    return (case.out_features * case.in_features + tokens * case.in_features) * element + \
        tokens * case.out_features * out_element


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure_case(backend: Backend, case: KernelCase, settings: CaseSettings, device: str) -> CaseResult:
    dtype = settings.dtype
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    tokens = backend.padded_tokens(case.tokens, dtype)
    if backend.name != "dense":  # the baseline must run the same padded problem
        tokens = max(tokens, Dense().padded_tokens(case.tokens, dtype))
    result = CaseResult(padded_tokens=tokens)
    copies = rotation_copies(_copy_bytes(case, tokens, dtype), settings.rotate_mb * 2**20)
    paired = settings.paired and backend.name != "dense"
    dense = Dense()

    prepared: list[PreparedWeight] = []
    dense_prepared: list[PreparedWeight] = []
    inputs: list[torch.Tensor] = []
    convert_s = 0.0
    reference_weight = None
    kept = total = 0
    for index in range(copies):
        base = random_values((case.out_features, case.in_features), dtype, device, generator)
        mask = pattern_mask(base, backend.pattern, settings.sparsity, settings.block, generator)
        pruned = _cast(base if mask is None else base * mask, dtype)
        if mask is not None:
            kept += int(mask.sum())
            total += mask.numel()
        _synchronize(device)
        started = time.perf_counter()
        prepared.append(backend.prepare(pruned, dtype))
        _synchronize(device)
        convert_s += time.perf_counter() - started
        if paired:
            dense_prepared.append(dense.prepare(_cast(base, dtype), dtype))
        x = torch.zeros((tokens, case.in_features), dtype=DTYPES[dtype], device=device)
        x[: case.tokens] = _cast(random_values((case.tokens, case.in_features), dtype, device, generator), dtype)
        inputs.append(x)
        if index == 0:
            reference_weight = pruned.float()
        del base, mask
    result.density = kept / total if total else 1.0
    result.math_fraction = backend.math_fraction(result.density)
    result.setup["convert_s_per_weight"] = convert_s / copies

    tuned = backend.tune(prepared[0], inputs[0])
    if tuned is not None:
        for other in prepared[1:]:
            backend.share_choices(prepared[0], other)  # same shape and tokens: same choice
        result.setup["search_s"] = tuned.seconds
        result.extra["tuned"] = {**tuned.config, "from_cache": tuned.cached}

    output = backend.matmul(prepared[0], inputs[0])
    reference = inputs[0][: case.tokens].float() @ reference_weight.t()
    result.rel_error = relative_error(output[: case.tokens], reference)
    result.extra["layout"] = "contiguous" if output.is_contiguous() else "strided view"
    del reference, reference_weight, output

    element = inputs[0].element_size()
    out_element = torch.empty((), dtype=output_dtype(dtype)).element_size()
    result.bytes_moved = prepared[0].nbytes + tokens * case.in_features * element + \
        tokens * case.out_features * out_element
    result.extra.update(copies=copies, working_set_mb=round(copies * _copy_bytes(case, tokens, dtype) / 2**20, 1))

    calls = [partial(backend.matmul, p, x) for p, x in zip(prepared, inputs)]
    dense_calls = [partial(dense.matmul, p, x) for p, x in zip(dense_prepared, inputs)]
    with clock_sampler(device) as clocks:
        for mode in timing_modes(device, settings.graphs, settings.eager):
            try:
                launches: dict[str, Launch] = {}
                if paired:
                    launches["dense"] = graph_launch(dense_calls) if mode == "graph" else eager_launch(dense_calls)
                launches["backend"] = graph_launch(calls) if mode == "graph" else eager_launch(calls)
                times, steady = measure_mode(launches, device, mode, settings.budget_ms / 1e3,
                                             settings.steady_ms / 1e3, settings.settle_ms / 1e3, settings.warmup,
                                             settings.min_samples, settings.max_samples, clocks.tag)
                if steady:
                    result.steady_us[mode] = steady
            except Exception as err:
                if is_fatal(err):
                    raise
                result.errors[mode] = f"{type(err).__name__}: {err}"
                continue
            finally:
                clocks.tag(None)
                launches = {}  # drop captured graphs and their memory pools before the next mode
            result.samples_us[mode] = times["backend"]
            if paired:
                result.dense_us[mode] = times["dense"]
    result.clocks = clocks_by_mode(clocks.summary())
    return result


SKIPPED = "left out: the suite's time budget ran out"


def past_deadline(task: dict[str, Any]) -> bool:
    """True once a task's deadline (epoch seconds, set by a suite's time budget) has passed."""
    return task.get("deadline") is not None and time.time() > task["deadline"]


def timing_modes(device: str, graphs: bool, eager: bool) -> list[str]:
    """Graph replay and eager launches on a GPU; the wall clock on a CPU."""
    if device != "cuda":
        return ["wall"]
    return (["graph"] if graphs else []) + (["eager"] if eager else [])


def is_fatal(err: BaseException) -> bool:
    """CUDA faults that poison the context: the process must end (its remaining cases get a new one)."""
    text = str(err).lower()
    return any(marker in text for marker in ("illegal instruction", "illegal memory access", "unspecified launch failure",
                                             "device-side assert", "misaligned address"))
