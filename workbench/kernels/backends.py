"""Matmul backends: ``y = x W^T`` (a linear layer) through one library path each.

Every backend turns a pruned weight into its own format once (``prepare``), may search its best
configuration per token count (``tune``), then multiplies (``matmul``). The kernel harness times
them on synthetic weights; the model converter (``convert.py``) puts the same backends inside
``nn.Linear`` replacements, so a kernel figure and a model figure come from the same code.

| backend        | format                              | where            | library path                      |
|----------------|-------------------------------------|------------------|-----------------------------------|
| dense          | the unpruned weight                 | CPU, CUDA        | F.linear / _scaled_mm / _int_mm   |
| semi24         | 2:4, torch's semi-structured tensor | CUDA             | cuSPARSELt, default algorithm     |
| semi24-cutlass | 2:4, torch's semi-structured tensor | CUDA, sm_8x only | CUTLASS                           |
| semi24-tuned   | 2:4, cuSPARSELt compressed          | CUDA             | cuSPARSELt, searched algorithm    |
| semi24-sm90    | 2:4, CUTLASS sm90 compressed        | CUDA, sm_90 only | CUTLASS sm90, searched tile       |
| semi24-fastest | 2:4, both of the above              | CUDA             | the faster of the two, per tokens |
| bsr            | block sparse rows                   | CPU, CUDA        | torch.mm dispatch                 |
| bsr-triton     | block sparse rows                   | CUDA             | torch's Triton bsr_dense_mm       |
| csr            | compressed sparse rows              | CPU, CUDA        | torch.mm (MKL / cuSPARSE)         |
"""

from __future__ import annotations

import math
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F

from workbench.kernels.environment import DeviceInfo, output_dtype
from workbench.kernels.formats import compressed_bytes
from workbench.kernels.sm90_sparse import library as sm90
from workbench.kernels.tuning import (DEFAULT_ALGORITHM, AlgorithmCache, cache_key, replay_seconds, search_copies,
                                      search_cached, sparse_product)

# error texts that mean "this library cannot do this here", as opposed to a fault
_UNSUPPORTED_MARKERS = ("compute capability", "not implemented for", "not supported", "only supports",
                        "unsupported", "is not compiled")


def is_unsupported_error(err: BaseException) -> bool:
    text = str(err).lower()
    return isinstance(err, NotImplementedError) or any(marker in text for marker in _UNSUPPORTED_MARKERS)


@dataclass
class PreparedWeight:
    data: Any  # the backend's own representation
    nbytes: int  # bytes a matmul reads for the weight, sparse metadata included
    dtype: str
    shape: tuple[int, int]  # (out_features, in_features)
    tuned: dict[int, Any] = field(default_factory=dict)  # token count -> chosen configuration


@dataclass
class TuneResult:
    config: dict[str, Any]
    seconds: float
    cached: bool


def copy_prepared(prepared: PreparedWeight) -> PreparedWeight:
    """Another copy of a prepared weight in memory (to time beyond the L2), its choices kept; tensors that
    the original shares (one compression used by several configurations) stay shared in the copy."""
    clones: dict[int, torch.Tensor] = {}

    def clone(item: Any) -> Any:
        if isinstance(item, torch.Tensor):
            return clones.setdefault(id(item), item.clone())
        if isinstance(item, PreparedWeight):
            return copy_prepared(item)
        if isinstance(item, (list, tuple)):
            return type(item)(clone(part) for part in item)
        if isinstance(item, dict):
            return {key: clone(value) for key, value in item.items()}
        return item

    return replace(prepared, data=clone(prepared.data), tuned=dict(prepared.tuned))


def operands_beyond_l2(prepared: PreparedWeight, x: torch.Tensor) -> list[tuple[PreparedWeight, torch.Tensor]]:
    """``(prepared, x)`` and copies of both, as many as the cuSPARSELt search rotates
    (``tuning.search_copies``), so that candidates are timed with their weight beyond the L2."""
    copies = search_copies(prepared.nbytes + x.nbytes)
    return [(prepared, x)] + [(copy_prepared(prepared), x.clone()) for _ in range(copies - 1)]


class Backend(ABC):
    name: ClassVar[str] = ""
    pattern: ClassVar[str] = "dense"  # dense | 2:4 | block | unstructured
    devices: ClassVar[frozenset[str]] = frozenset({"cuda"})
    dtypes: ClassVar[dict[str, frozenset[str]]] = {}  # device kind -> dtype names

    def __init__(self, block: int = 64):
        self.block = block

    def unsupported(self, device: DeviceInfo, dtype: str) -> str | None:
        """Why this backend cannot run ``dtype`` on ``device`` (None when it can)."""
        if device.kind not in self.devices:
            return f"{self.name} runs on {', '.join(sorted(self.devices))} only"
        if dtype not in self.dtypes.get(device.kind, frozenset()):
            return f"{self.name} has no {dtype} kernel on {device.kind}"
        return None

    def token_multiple(self, dtype: str) -> int:
        """Token counts are padded (with zero rows, outside the timed call) to a multiple of this."""
        return 1

    def min_tokens(self, dtype: str) -> int:
        return 1

    def padded_tokens(self, tokens: int, dtype: str) -> int:
        multiple = self.token_multiple(dtype)
        return max(self.min_tokens(dtype), -(-tokens // multiple) * multiple)

    def math_fraction(self, density: float) -> float:
        """Fraction of the dense multiply-adds the format must do."""
        return density

    @abstractmethod
    def prepare(self, weight: torch.Tensor, dtype: str) -> PreparedWeight:
        """The weight in this backend's format (compressed, padded), ready for ``matmul``."""

    def tune(self, prepared: PreparedWeight, x: torch.Tensor) -> TuneResult | None:
        return None

    def share_choices(self, tuned: PreparedWeight, other: PreparedWeight) -> None:
        """Let ``other``, a weight of the same shape, use the configurations searched on ``tuned``."""
        other.tuned = tuned.tuned

    @abstractmethod
    def matmul(self, prepared: PreparedWeight, x: torch.Tensor) -> torch.Tensor:
        """``x @ W^T`` with the prepared weight: (tokens, in) -> (tokens, out)."""


class Dense(Backend):
    name = "dense"
    devices = frozenset({"cpu", "cuda"})
    dtypes = {"cpu": frozenset({"fp32", "bf16"}), "cuda": frozenset({"fp32", "bf16", "fp16", "fp8", "int8"})}

    def unsupported(self, device: DeviceInfo, dtype: str) -> str | None:
        reason = super().unsupported(device, dtype)
        if reason is None and dtype == "fp8" and device.capability is not None and device.capability < (8, 9):
            reason = "fp8 matmuls need compute capability 8.9 or newer"
        return reason

    def token_multiple(self, dtype: str) -> int:
        return {"fp8": 16, "int8": 8}.get(dtype, 1)

    def min_tokens(self, dtype: str) -> int:
        return 32 if dtype == "int8" else 1  # torch._int_mm needs more than 16 rows

    def math_fraction(self, density: float) -> float:
        return 1.0

    def prepare(self, weight: torch.Tensor, dtype: str) -> PreparedWeight:
        data: Any = weight
        if dtype == "fp8":
            one = torch.ones((), device=weight.device, dtype=torch.float32)
            data = (weight, one)
        return PreparedWeight(data, weight.numel() * weight.element_size(), dtype, tuple(weight.shape))

    def matmul(self, prepared: PreparedWeight, x: torch.Tensor) -> torch.Tensor:
        if prepared.dtype == "fp8":
            weight, one = prepared.data
            return torch._scaled_mm(x, weight.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
        if prepared.dtype == "int8":
            return torch._int_mm(x, prepared.data.t())
        return F.linear(x, prepared.data)


class Semi24Torch(Backend):
    """2:4 through torch's public API: ``to_sparse_semi_structured`` then ``F.linear``."""

    name = "semi24"
    pattern = "2:4"
    dtypes = {"cuda": frozenset({"bf16", "fp16"})}
    force_cutlass: ClassVar[bool] = False

    def math_fraction(self, density: float) -> float:
        return 0.5

    def prepare(self, weight: torch.Tensor, dtype: str) -> PreparedWeight:
        from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

        SparseSemiStructuredTensor._FORCE_CUTLASS = self.force_cutlass
        sparse = to_sparse_semi_structured(weight)
        parts = [getattr(sparse, name, None) for name in ("packed", "meta")]
        return PreparedWeight(sparse, sum(p.numel() * p.element_size() for p in parts if p is not None), dtype,
                              tuple(weight.shape))

    def matmul(self, prepared: PreparedWeight, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, prepared.data)


class Semi24Cutlass(Semi24Torch):
    """CUTLASS's 2:4 kernels compress on Hopper but multiply only on sm_8x; a failed call is recorded."""

    name = "semi24-cutlass"
    force_cutlass = True


class Semi24Tuned(Backend):
    """cuSPARSELt called directly, with the algorithm searched per (shape, tokens, dtype) and cached."""

    name = "semi24-tuned"
    pattern = "2:4"
    dtypes = {"cuda": frozenset({"bf16", "fp16", "fp8", "int8"})}

    def __init__(self, block: int = 64, cache: AlgorithmCache | None = None):
        super().__init__(block)
        self._cache = cache

    def token_multiple(self, dtype: str) -> int:
        return 16 if dtype in ("fp8", "int8") else 8

    def math_fraction(self, density: float) -> float:
        return 0.5

    @staticmethod
    def result_layouts(dtype: str) -> tuple[bool, ...]:
        """Output layouts the search may choose: the fused transposed result ((tokens, out), as F.linear
        gives) and the plain one ((out, tokens), copied to (tokens, out)). With fp16 the fused transposed result is
        a known fault (hundreds of ms per call, then an illegal instruction), so fp16 keeps the plain one;
        the 8-bit paths keep the transposed one, the layout their dense baselines produce."""
        return {"fp16": (False,), "bf16": (True, False)}.get(dtype, (True,))

    def prepare(self, weight: torch.Tensor, dtype: str) -> PreparedWeight:
        compressed = torch._cslt_compress(weight)
        return PreparedWeight(compressed, compressed.numel() * compressed.element_size(), dtype, tuple(weight.shape))

    def _out_dtype(self, dtype: str) -> torch.dtype | None:
        return output_dtype(dtype) if dtype in ("fp8", "int8") else None

    def tune(self, prepared: PreparedWeight, x: torch.Tensor) -> TuneResult:
        from workbench.kernels.environment import device_identity

        if self._cache is None:
            self._cache = AlgorithmCache()
        dtype, tokens = prepared.dtype, x.shape[0]
        # The search skips a layout the library refuses; when it refuses every one asked for (the 8-bit
        # paths ask for the fused transposed result alone), the plain layout, (out, tokens) copied to rows.
        tries = list(dict.fromkeys([self.result_layouts(dtype), (False,)]))
        for layouts in tries:
            key = cache_key(device_identity("cuda"), *prepared.shape, tokens, dtype, layouts)
            try:
                algorithm, seconds, cached = search_cached(self._cache, key, prepared.data, x.t(),
                                                           self._out_dtype(dtype), layouts)
                break
            except RuntimeError:
                if layouts == tries[-1]:
                    raise
        prepared.tuned[tokens] = algorithm
        return TuneResult(asdict(algorithm), seconds, cached)

    def matmul(self, prepared: PreparedWeight, x: torch.Tensor) -> torch.Tensor:
        algorithm = prepared.tuned.get(x.shape[0]) or replace(DEFAULT_ALGORITHM,
                                                              transpose_result=self.result_layouts(prepared.dtype)[0])
        call = cslt_linear if torch.compiler.is_compiling() else _cslt_linear
        return call(prepared.data, x, prepared.shape[0], algorithm.alg_id, algorithm.split_k, algorithm.split_k_mode,
                    algorithm.transpose_result, self._out_dtype(prepared.dtype))


def _cslt_linear(compressed: torch.Tensor, x: torch.Tensor, out_features: int, alg_id: int, split_k: int,
                 split_k_mode: int, transpose_result: bool, out_dtype: torch.dtype | None) -> torch.Tensor:
    """``x @ W^T`` for a cuSPARSELt-compressed W: (tokens, out) in rows, as F.linear gives it."""
    return sparse_product(compressed, x.t(), out_dtype, alg_id, split_k, split_k_mode, transpose_result)


# The same product as an opaque operator for torch.compile: the compressed weight is a flat buffer, so
# the compiler cannot infer the output's shape from it; this operator states it. Eager calls skip the
# operator's dispatch cost.
cslt_linear = torch.library.custom_op("workbench::cslt_linear", mutates_args=())(_cslt_linear)


@cslt_linear.register_fake
def _(compressed: torch.Tensor, x: torch.Tensor, out_features: int, alg_id: int, split_k: int, split_k_mode: int,
      transpose_result: bool, out_dtype: torch.dtype | None) -> torch.Tensor:
    return x.new_empty((x.shape[0], out_features), dtype=out_dtype or x.dtype)


class Semi24Sm90(Backend):
    """2:4 through CUTLASS's Hopper sparse GEMM (wgmma.sp) in a library of our own (kernels/sm90_sparse),
    with its tile configuration searched per token count. The library is built once by
    `workbench bench build-sm90` or given prebuilt; without it every case is recorded as unsupported."""

    name = "semi24-sm90"
    pattern = "2:4"
    dtypes = {"cuda": frozenset({"bf16", "fp16"})}

    def unsupported(self, device: DeviceInfo, dtype: str) -> str | None:
        reason = super().unsupported(device, dtype)
        if reason is None and device.capability != (9, 0):
            reason = "semi24-sm90 needs compute capability 9.0 (sm_90a: H100, H200); wgmma.sp exists only there"
        if reason is None:
            try:
                sm90.load()
            except sm90.LibraryUnavailable as err:
                reason = str(err)
        return reason

    def math_fraction(self, density: float) -> float:
        return 0.5

    def prepare(self, weight: torch.Tensor, dtype: str) -> PreparedWeight:
        """Compressed once per distinct layout; ``data[config]`` is that configuration's (values, metadata)."""
        rows, cols = weight.shape
        if rows % 8 or cols % 16:  # 16-byte TMA rows of the output and of the compressed values
            raise ValueError(f"a {rows}x{cols} weight is unsupported by semi24-sm90: out_features must be "
                             "a multiple of 8 and in_features of 16")
        by_layout: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        data = []
        for config in range(len(sm90.config_names())):
            key = sm90.layout_k(weight.dtype, config)
            if key not in by_layout:
                by_layout[key] = sm90.compress(weight, config)
            data.append(by_layout[key])
        values, meta = data[0]
        return PreparedWeight(data, values.numel() * values.element_size() + meta.numel() * meta.element_size(),
                              dtype, (rows, cols))

    def tune(self, prepared: PreparedWeight, x: torch.Tensor) -> TuneResult:
        """Every configuration timed by CUDA graph replay over copies of the operands beyond the L2, as the
        cuSPARSELt search times its candidates (``tuning.replay_seconds``); one that the library refuses
        for this problem is left out."""
        started = time.perf_counter()
        names = sm90.config_names()
        operands = operands_beyond_l2(prepared, x)
        times: dict[int, float] = {}
        refused: dict[str, str] = {}
        for config, name in enumerate(names):
            calls = [partial(self._linear, weight, rhs, config) for weight, rhs in operands]
            try:
                calls[0]()  # a refusal raises here, before any capture
                times[config] = replay_seconds(calls) * 1e6
            except RuntimeError as err:
                refused[name] = str(err)
        del operands
        if not times:
            raise RuntimeError(f"no semi24-sm90 configuration ran for {prepared.shape} x {tuple(x.shape)}: {refused}")
        best = min(times, key=times.__getitem__)
        prepared.tuned[x.shape[0]] = best
        config = {"config": names[best], "us": {names[c]: round(t, 2) for c, t in times.items()}}
        if refused:
            config["refused"] = refused
        return TuneResult(config, time.perf_counter() - started, False)

    @staticmethod
    def _linear(prepared: PreparedWeight, x: torch.Tensor, config: int) -> torch.Tensor:
        values, meta = prepared.data[config]
        call = sm90_linear if torch.compiler.is_compiling() else sm90.linear
        return call(values, meta, x, prepared.shape[0], config)

    def matmul(self, prepared: PreparedWeight, x: torch.Tensor) -> torch.Tensor:
        return self._linear(prepared, x, prepared.tuned.get(x.shape[0], 0))


def _sm90_linear(values: torch.Tensor, meta: torch.Tensor, x: torch.Tensor, out_features: int,
                 config: int) -> torch.Tensor:
    return sm90.linear(values, meta, x.contiguous(), out_features, config)


# As cslt_linear: an opaque operator for torch.compile (the compressed weight is bytes, so the compiler
# cannot infer the output's shape; compiled code may hand over a strided input, made contiguous here).
sm90_linear = torch.library.custom_op("workbench::sm90_sparse_linear", mutates_args=())(_sm90_linear)


@sm90_linear.register_fake
def _(values: torch.Tensor, meta: torch.Tensor, x: torch.Tensor, out_features: int, config: int) -> torch.Tensor:
    return x.new_empty((x.shape[0], out_features))


class Semi24Fastest(Backend):
    """The faster of the tuned 2:4 paths, chosen per weight and token count: each member (``semi24-tuned``,
    ``semi24-sm90``) searches its own configuration, then their choices are timed against each other the
    same way (graph replay over copies beyond the L2) and the faster one multiplies. Neither path wins
    everywhere on a Hopper GPU (cuSPARSELt in bf16 prefill, CUTLASS in fp16 prefill and bf16 decode,
    cuSPARSELt in fp16 decode), so a model converted with it gets each layer's faster one. A member that
    cannot run here (no sm90 library, not a Hopper GPU, a shape it refuses) is left out of that weight."""

    name = "semi24-fastest"
    pattern = "2:4"
    dtypes = {"cuda": frozenset({"bf16", "fp16"})}
    MEMBERS = ("semi24-tuned", "semi24-sm90")

    def __init__(self, block: int = 64, members: tuple[Backend, ...] | None = None,
                 timer: Callable[[Backend, PreparedWeight, torch.Tensor], float] | None = None):
        super().__init__(block)
        self.members = {member.name: member for member in (members or [make_backend(n, block) for n in self.MEMBERS])}
        self._timer = timer or _replay_seconds_beyond_l2

    def unsupported(self, device: DeviceInfo, dtype: str) -> str | None:
        reason = super().unsupported(device, dtype)
        if reason is None:
            reasons = [member.unsupported(device, dtype) for member in self.members.values()]
            if all(reasons):
                reason = "; ".join(reasons)
        return reason

    def token_multiple(self, dtype: str) -> int:
        return math.lcm(*(member.token_multiple(dtype) for member in self.members.values()))

    def math_fraction(self, density: float) -> float:
        return 0.5

    def prepare(self, weight: torch.Tensor, dtype: str) -> PreparedWeight:
        """``data``: each usable member's own prepared weight, by name."""
        from workbench.kernels.environment import device_info

        device = device_info(weight.device.type)
        data, refused = {}, {}
        for name, member in self.members.items():
            reason = member.unsupported(device, dtype)
            if reason is None:
                try:
                    data[name] = member.prepare(weight, dtype)
                except ValueError as err:  # a shape this member cannot tile
                    if not is_unsupported_error(err):
                        raise
                    reason = str(err)
            if reason is not None:
                refused[name] = reason
        if not data:
            raise ValueError(f"semi24-fastest is unsupported for this weight: {refused}")
        first = next(iter(data.values()))
        return PreparedWeight(data, first.nbytes, dtype, first.shape)

    def tune(self, prepared: PreparedWeight, x: torch.Tensor) -> TuneResult:
        started = time.perf_counter()
        us, configs, cached = {}, {}, True
        for name, member_weight in prepared.data.items():
            member = self.members[name]
            tuned = member.tune(member_weight, x)
            if tuned is not None:
                configs[name], cached = tuned.config, cached and tuned.cached
            us[name] = round(self._timer(member, member_weight, x) * 1e6, 2)
        best = min(us, key=us.__getitem__)
        prepared.tuned[x.shape[0]] = best
        return TuneResult({"backend": best, "us": us, **configs}, time.perf_counter() - started, cached)

    def share_choices(self, tuned: PreparedWeight, other: PreparedWeight) -> None:
        super().share_choices(tuned, other)
        for name, member in self.members.items():
            if name in tuned.data and name in other.data:
                member.share_choices(tuned.data[name], other.data[name])

    def matmul(self, prepared: PreparedWeight, x: torch.Tensor) -> torch.Tensor:
        name = prepared.tuned.get(x.shape[0]) or next(iter(prepared.data))
        return self.members[name].matmul(prepared.data[name], x)


def _replay_seconds_beyond_l2(backend: Backend, prepared: PreparedWeight, x: torch.Tensor) -> float:
    """Seconds per call of ``backend``'s tuned product, replayed in a CUDA graph over copies of the operands
    beyond the L2, as the searches time their candidates."""
    return replay_seconds([partial(backend.matmul, weight, rhs) for weight, rhs in operands_beyond_l2(prepared, x)])


class _Compressed(Backend):
    """Shared by the CSR/BSR backends: ``torch.mm(W_sparse, x^T)`` read back as (tokens, out)."""

    @abstractmethod
    def _convert(self, weight: torch.Tensor) -> torch.Tensor:
        """The dense weight as this format's torch sparse tensor."""

    def prepare(self, weight: torch.Tensor, dtype: str) -> PreparedWeight:
        with warnings.catch_warnings():  # torch flags its sparse compressed layouts as beta on every conversion
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            sparse = self._convert(weight)
        return PreparedWeight(sparse, compressed_bytes(sparse), dtype, tuple(weight.shape))

    def matmul(self, prepared: PreparedWeight, x: torch.Tensor) -> torch.Tensor:
        return torch.mm(prepared.data, x.t()).t()


class Bsr(_Compressed):
    name = "bsr"
    pattern = "block"
    devices = frozenset({"cpu", "cuda"})
    dtypes = {"cpu": frozenset({"fp32"}), "cuda": frozenset({"fp32", "bf16", "fp16"})}

    def _convert(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.to_sparse_bsr((self.block, self.block))


class BsrTriton(Bsr):
    name = "bsr-triton"
    devices = frozenset({"cuda"})
    dtypes = {"cuda": frozenset({"fp32", "bf16", "fp16"})}

    def unsupported(self, device: DeviceInfo, dtype: str) -> str | None:
        reason = super().unsupported(device, dtype)
        if reason is None:
            try:
                import triton  # noqa: F401
            except ImportError:
                reason = "triton is not installed"
        return reason

    def token_multiple(self, dtype: str) -> int:
        return 16  # bsr_dense_mm needs the dense operand's columns divisible by 16

    def matmul(self, prepared: PreparedWeight, x: torch.Tensor) -> torch.Tensor:
        from torch.sparse._triton_ops import bsr_dense_mm

        return bsr_dense_mm(prepared.data, x.t()).t()


class Csr(_Compressed):
    name = "csr"
    pattern = "unstructured"
    devices = frozenset({"cpu", "cuda"})
    dtypes = {"cpu": frozenset({"fp32"}), "cuda": frozenset({"fp32", "bf16", "fp16"})}

    def _convert(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.to_sparse_csr()


BACKENDS: dict[str, type[Backend]] = {cls.name: cls for cls in
                                      (Dense, Semi24Torch, Semi24Cutlass, Semi24Tuned, Semi24Sm90, Semi24Fastest, Bsr,
                                       BsrTriton, Csr)}


def make_backend(name: str, block: int = 64) -> Backend:
    return BACKENDS[name](block=block)


def default_backends(device: str) -> tuple[str, ...]:
    return tuple(name for name, cls in BACKENDS.items() if device in cls.devices)


def default_dtypes(device: str) -> tuple[str, ...]:
    return ("fp32",) if device == "cpu" else ("bf16", "fp16", "fp8", "int8")
