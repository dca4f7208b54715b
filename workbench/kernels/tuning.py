"""Per-case algorithm search for cuSPARSELt's 2:4 matmul, searched once and cached on disk.

cuSPARSELt's default algorithm (id 0) is far from its best on many LLM shapes (BENCHMARKS.md).
``torch._C._cusparselt.mm_search`` times every algorithm (and split-k setting) for one problem and
returns the fastest; the choice depends on (shape, tokens, dtype, output layout) and on the GPU and
library versions, so the cache is keyed by all of them and the search runs once per key.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class CusparseltAlgorithm:
    alg_id: int = 0
    split_k: int = 1
    split_k_mode: int = -1

    def as_kwargs(self) -> dict[str, int]:
        return asdict(self)


DEFAULT_ALGORITHM = CusparseltAlgorithm()


def _cache_file() -> Path:
    from workbench.models import cache_dir

    return cache_dir() / "cusparselt-algorithms.json"


class AlgorithmCache:
    """Algorithm choices on disk (one JSON file), read once per process and written through atomically."""

    def __init__(self, path: Path | None = None):
        self.path = path or _cache_file()
        try:
            self._entries: dict[str, dict[str, int]] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self._entries = {}

    def get(self, key: str) -> CusparseltAlgorithm | None:
        entry = self._entries.get(key)
        return CusparseltAlgorithm(**entry) if entry else None

    def put(self, key: str, algorithm: CusparseltAlgorithm) -> None:
        self._entries[key] = asdict(algorithm)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self._entries, indent=1, sort_keys=True))
        tmp.replace(self.path)


def search(compressed: torch.Tensor, dense_t: torch.Tensor, out_dtype: torch.dtype | None,
           transpose_result: bool) -> CusparseltAlgorithm:
    """Time every cuSPARSELt algorithm for ``compressed @ dense_t`` and return the fastest."""
    mm_search = getattr(getattr(torch._C, "_cusparselt", None), "mm_search", None)
    if mm_search is not None:
        alg_id, split_k, split_k_mode, _ = mm_search(compressed, dense_t, None, None, out_dtype, transpose_result)
        return CusparseltAlgorithm(int(alg_id), int(split_k), int(split_k_mode))
    # older torch: only the algorithm id is searched
    return CusparseltAlgorithm(int(torch._cslt_sparse_mm_search(compressed, dense_t, None, None, out_dtype,
                                                                transpose_result)))


def cache_key(device: str, rows: int, cols: int, tokens: int, dtype: str, transpose_result: bool) -> str:
    return f"{device}|{rows}x{cols}|t{tokens}|{dtype}|{'T' if transpose_result else 'N'}"


def search_cached(cache: AlgorithmCache, key: str, compressed: torch.Tensor, dense_t: torch.Tensor,
                  out_dtype: torch.dtype | None, transpose_result: bool) -> tuple[CusparseltAlgorithm, float, bool]:
    """(algorithm, search seconds, whether it came from the cache)."""
    found = cache.get(key)
    if found is not None:
        return found, 0.0, True
    started = time.perf_counter()
    algorithm = search(compressed, dense_t, out_dtype, transpose_result)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    cache.put(key, algorithm)
    return algorithm, seconds, False
