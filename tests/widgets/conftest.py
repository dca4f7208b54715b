"""A store of hand-made runs (prune, train, bench) that every widget test reads."""

from __future__ import annotations

import pytest

from tests.widgets.synthetic import write_run
from workbench.store import Store

KERNEL_ROWS = [
    # backend, pattern, dtype, tokens -> speedup of a matmul
    *({"backend": "dense", "pattern": "dense", "dtype": dtype, "out_features": 4096, "in_features": 4096,
       "tokens": tokens, "timing": "graph", "phase": "kernel", "speedup": 1.0, "median_us": 10.0, "status": "ok"}
      for dtype in ("fp16", "bf16") for tokens in (16, 256, 4096)),
    *({"backend": "semi24", "pattern": "2:4", "dtype": dtype, "out_features": 4096, "in_features": 4096,
       "tokens": tokens, "timing": "graph", "phase": "kernel", "speedup": speedup * (1.0 if dtype == "fp16" else 0.9),
       "median_us": 10.0 / speedup, "status": "ok"}
      for dtype in ("fp16", "bf16") for tokens, speedup in ((16, 1.2), (256, 1.4), (4096, 1.6))),
    # a case that failed, and a one-time cost: neither is a speedup
    {"backend": "semi24-cutlass", "pattern": "2:4", "dtype": "fp16", "out_features": 4096, "in_features": 4096,
     "tokens": 16, "timing": "graph", "phase": "kernel", "speedup": None, "status": "unsupported",
     "error": "Supported only on GPUs with compute capability 8.x"},
    {"backend": "semi24", "pattern": "2:4", "dtype": "fp16", "timing": "once", "phase": "setup",
     "median_us": 2e6, "status": "ok"},
    # model latency: decode steps at two batch sizes
    *({"backend": "semi24", "pattern": "2:4", "dtype": "bf16", "model": "llama-7b", "phase": "decode",
       "batch": batch, "tokens": 1, "timing": "graph", "speedup": speedup, "status": "ok"}
      for batch, speedup in ((1, 1.3), (8, 1.25))),
]


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> tuple[Store, dict[str, str]]:
    """(store, run ids by name). Perplexity is chosen so that dense, magnitude 50% and magnitude 70%
    form the Pareto front and both random runs lie behind it."""
    store = Store(tmp_path_factory.mktemp("board") / "workbench.duckdb")
    ids = {
        "dense": write_run(store, method="dense", sparsity=0.0, metrics={"sparsity": 0.0, "perplexity": 10.0}),
        "mag50": write_run(store, method="magnitude", sparsity=0.5, metrics={"sparsity": 0.5, "perplexity": 20.0}),
        "mag70": write_run(store, method="magnitude", sparsity=0.7, metrics={"sparsity": 0.7, "perplexity": 60.0}),
        "rand50": write_run(store, method="random", sparsity=0.5, metrics={"sparsity": 0.5, "perplexity": 40.0}, seed=1),
        "rand70": write_run(store, method="random", sparsity=0.7, metrics={"sparsity": 0.7, "perplexity": 200.0}, seed=2),
        "owl": write_run(store, method="magnitude", sparsity=0.5, allocation="owl", block_sparsity=(0.375, 0.625),
                         metrics={"sparsity": 0.5, "perplexity": 18.0}, seed=3),
        "train": write_run(store, kind="train", method="sr-ste", sparsity=0.5, pattern="unstructured",
                           model="fashion-cnn", snapshots=[0, 10, 20],
                           step_metrics={"loss": [2.0, 1.5, 1.0], "accuracy": [0.3, 0.6, 0.8]},
                           metrics={"sparsity": 0.5, "accuracy": 0.8}, seed=4),
        "bench": write_run(store, kind="bench", method=None, sparsity=0.5, pattern="2:4", model=None,
                           kernel_rows=KERNEL_ROWS, seed=5),
    }
    return store, ids
