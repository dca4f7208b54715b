"""2:4 through CUTLASS's Hopper sparse GEMM in the library of ``sm90_sparse/``, its tile configuration
searched per token count."""

from __future__ import annotations

import time
from functools import partial

import torch

from workbench.kernels.backends.base import Backend, PreparedWeight, TuneResult, operands_beyond_l2
from workbench.kernels.backends.sm90_sparse import library as sm90
from workbench.kernels.backends.tuning import replay_seconds
from workbench.kernels.measure.environment import DeviceInfo


class Semi24Sm90(Backend):
    """2:4 through CUTLASS's Hopper sparse GEMM (wgmma.sp) in a library of our own (backends/sm90_sparse),
    with its tile configuration searched per token count. The library is built once by
    `workbench bench build-sm90` or given prebuilt; without it every case is recorded as unsupported."""

    name = "semi24-sm90"
    pattern = "2:4"
    dtypes = {"cuda": frozenset({"bf16", "fp16"})}
    searches_configuration = True

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
