"""2:4 through cuSPARSELt called directly, its algorithm searched per case (``tuning.py``) and cached."""

from __future__ import annotations

from dataclasses import asdict, replace

import torch

from workbench.kernels.backends.base import Backend, PreparedWeight, TuneResult
from workbench.kernels.backends.tuning import DEFAULT_ALGORITHM, AlgorithmCache, cache_key, search_cached, sparse_product
from workbench.kernels.measure.environment import output_dtype


class Semi24Tuned(Backend):
    """cuSPARSELt called directly, with the algorithm searched per (shape, tokens, dtype) and cached."""

    name = "semi24-tuned"
    pattern = "2:4"
    dtypes = {"cuda": frozenset({"bf16", "fp16", "fp8", "int8"})}
    searches_configuration = True

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
        from workbench.kernels.measure.environment import device_identity

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
