"""Per-case configuration search for cuSPARSELt's 2:4 matmul, searched once and cached on disk.

cuSPARSELt's default algorithm (id 0) is far from its best on many LLM shapes, and its
own search (``torch._C._cusparselt.mm_search``) often misses the best too: on an H200 its pick reached
1.21-1.57x over dense where the best algorithm of the same library reached 1.44-1.73x (bf16 and fp16,
2048 and 8192 tokens). So the search here takes the library's pick and every algorithm id it offers, for
each allowed output layout (the fused transposed result or the plain one), times each candidate by CUDA
graph replay, and keeps the fastest. A layer's output is (tokens, out) in rows, as F.linear gives it: the
plain layout's transposing copy is part of its time (left out, the search chose the plain layout for the
MLP and a Llama-7B prefill ran about 20% slower than with the fused layout: the copies cost about what
2:4 saved). The choice depends on (shape, tokens, dtype) and on the GPU and library versions, so the
cache is keyed by all of them.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch


@dataclass(frozen=True)
class CusparseltAlgorithm:
    alg_id: int = 0
    split_k: int = 1
    split_k_mode: int = -1
    transpose_result: bool = False  # the fused transposed result: (tokens, out) straight from the kernel


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


SEARCH_VERSION = "4"  # enters the cache key: choices of another search method are not reused
SEARCH_SAMPLES = 5


def library_choice(compressed: torch.Tensor, dense_t: torch.Tensor, out_dtype: torch.dtype | None,
                   transpose_result: bool) -> tuple[CusparseltAlgorithm, int]:
    """cuSPARSELt's own pick and the largest algorithm id it offers for this problem."""
    mm_search = getattr(getattr(torch._C, "_cusparselt", None), "mm_search", None)
    if mm_search is not None:
        alg_id, split_k, split_k_mode, max_alg_id = mm_search(compressed, dense_t, None, None, out_dtype,
                                                              transpose_result)
        return CusparseltAlgorithm(int(alg_id), int(split_k), int(split_k_mode), transpose_result), int(max_alg_id)
    # older torch: only the algorithm id is searched, and the id range is unknown
    alg_id = int(torch._cslt_sparse_mm_search(compressed, dense_t, None, None, out_dtype, transpose_result))
    return CusparseltAlgorithm(alg_id, transpose_result=transpose_result), alg_id


def candidates(choice: CusparseltAlgorithm, max_alg_id: int) -> list[CusparseltAlgorithm]:
    """The library's pick first, then every algorithm id with the default split-k."""
    others = [CusparseltAlgorithm(alg_id, transpose_result=choice.transpose_result) for alg_id in range(max_alg_id + 1)]
    return list(dict.fromkeys([choice, *others]))


def fastest(timings: dict[CusparseltAlgorithm, float | None]) -> CusparseltAlgorithm:
    """The candidate with the smallest time; ties go to the earlier candidate (the library's pick first)."""
    timed = [(seconds, index, algorithm) for index, (algorithm, seconds) in enumerate(timings.items())
             if seconds is not None]
    if not timed:
        raise RuntimeError("no cuSPARSELt algorithm ran for this problem: " + ", ".join(map(str, timings)))
    return min(timed)[2]


def sparse_product(compressed: torch.Tensor, dense_t: torch.Tensor, out_dtype: torch.dtype | None, alg_id: int,
                   split_k: int, split_k_mode: int, transpose_result: bool) -> torch.Tensor:
    """``compressed @ dense_t`` as a layer's output, (tokens, out) in rows as F.linear gives it: the plain
    layout, (out, tokens), pays its transposing copy here, so the search times what a layer pays."""
    y = torch._cslt_sparse_mm(compressed, dense_t, out_dtype=out_dtype, transpose_result=transpose_result,
                              alg_id=alg_id, split_k=split_k, split_k_mode=split_k_mode)
    return y if transpose_result else y.t().contiguous()


SEARCH_ROTATE_BYTES = 256 * 2**20  # the harness's working set: well beyond the L2 (60 MB on an H200)


def replay_seconds(calls: list[Callable[[], object]]) -> float:
    """Median seconds per call of ``calls`` (one per rotated copy), replayed in a CUDA graph long enough
    to time (~0.2 ms or more)."""
    from workbench.kernels.measure.timing import graph_launch, measure

    once = graph_launch(calls, warmup=1)
    single = statistics.median(measure({"c": once}, "cuda", 0.0, warmup=1, min_samples=3, max_samples=3)["c"])
    repeat = max(1, math.ceil(200.0 / max(single * len(calls), 1.0)))
    launch = graph_launch(calls * repeat, warmup=0) if repeat > 1 else once
    samples = measure({"c": launch}, "cuda", 0.0, warmup=1, min_samples=SEARCH_SAMPLES, max_samples=SEARCH_SAMPLES)
    return statistics.median(samples["c"]) / 1e6


def search_copies(bytes_per_copy: int, rotate_bytes: int = SEARCH_ROTATE_BYTES) -> int:
    """How many copies of a search's operands (the originals among them) one timed round reads: enough
    to pass ``rotate_bytes``, since a weight that stays in the L2 between calls makes decode-sized
    candidates look faster than they run in a model, and not all by the same amount."""
    from workbench.kernels.measure.timing import rotation_copies

    # at most 128 copies: each candidate's graph replays all of them; layers under ~2 MB then stay within
    # about the L2's size instead of beyond it, a bounded search cost for shapes that are not the point
    return rotation_copies(bytes_per_copy, rotate_bytes, max_copies=128)


def rotated_operands(compressed: torch.Tensor, dense_t: torch.Tensor, rotate_bytes: int = SEARCH_ROTATE_BYTES
                     ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The operands and ``search_copies`` copies of them in all."""
    copies = search_copies(compressed.nbytes + dense_t.nbytes, rotate_bytes)
    # clone keeps the strides: the copies of a transposed view stay transposed views
    return [(compressed, dense_t)] + [(compressed.clone(), dense_t.clone()) for _ in range(copies - 1)]


def search(compressed: torch.Tensor, dense_t: torch.Tensor, out_dtype: torch.dtype | None,
           transposes: tuple[bool, ...], timer: Callable[[CusparseltAlgorithm], float] | None = None
           ) -> CusparseltAlgorithm:
    """Time every candidate configuration of ``compressed @ dense_t`` and return the fastest.

    A candidate the library rejects for this problem is skipped; ``timer`` (seconds per call of one
    configuration) defaults to graph replay on the GPU over rotated copies of the operands.
    """
    if timer is None:
        operands = rotated_operands(compressed, dense_t)

        def timer(algorithm: CusparseltAlgorithm) -> float:
            return replay_seconds([partial(sparse_product, weight, rhs, out_dtype, **asdict(algorithm))
                                    for weight, rhs in operands])
    timings: dict[CusparseltAlgorithm, float | None] = {}
    for transpose in transposes:
        try:
            choice, max_alg_id = library_choice(compressed, dense_t, out_dtype, transpose)
        except RuntimeError:  # e.g. no fused transposed result for this dtype in this library
            continue
        for algorithm in candidates(choice, max_alg_id):
            try:
                timings[algorithm] = timer(algorithm)
            except RuntimeError:  # an id or split-k this problem does not support
                timings[algorithm] = None
    return fastest(timings)


def cache_key(device: str, rows: int, cols: int, tokens: int, dtype: str, transposes: tuple[bool, ...]) -> str:
    layouts = "".join("T" if t else "N" for t in transposes)
    return f"v{SEARCH_VERSION}|{device}|{rows}x{cols}|t{tokens}|{dtype}|{layouts}"


def search_cached(cache: AlgorithmCache, key: str, compressed: torch.Tensor, dense_t: torch.Tensor,
                  out_dtype: torch.dtype | None, transposes: tuple[bool, ...]
                  ) -> tuple[CusparseltAlgorithm, float, bool]:
    """(algorithm, search seconds, whether it came from the cache)."""
    found = cache.get(key)
    if found is not None:
        return found, 0.0, True
    started = time.perf_counter()
    algorithm = search(compressed, dense_t, out_dtype, transposes)
    if compressed.is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    cache.put(key, algorithm)
    return algorithm, seconds, False
