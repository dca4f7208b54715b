"""The default comparison suite (`workbench demo`): real methods on the embedded default model and text.

smollm2-135m on Shakespeare, calibration 64 windows x 512 tokens (seed 0), evaluation on the first 64
non-overlapping 512-token windows of the held-out plays. Every method the workbench implements adds
its rows here, so the suite is the one table that compares them all.
"""

from __future__ import annotations

from typing import Any

from workbench.spec import JobSpec, parse_sweep

DEFAULT_BASE: dict[str, Any] = {
    "kind": "prune",
    "model": "smollm2-135m",
    "data": "shakespeare",
    "calibration": {"samples": 64, "seq_len": 512, "seed": 0},
    "evaluation": {"windows": 64, "seq_len": 512},
}

DEFAULT_INCLUDE: list[dict[str, Any]] = [
    {"method": "dense"},
    {"method": "random", "sparsity": 0.5},
    {"method": "magnitude", "sparsity": 0.5},
    {"method": "magnitude", "pattern": "2:4"},
]


def default_suite(**base_overrides: Any) -> list[JobSpec]:
    """The suite's specs; overrides (e.g. model="tiny-llama") replace fields of the shared base."""
    base = {**DEFAULT_BASE, **base_overrides}
    return parse_sweep({"base": base, "include": DEFAULT_INCLUDE})
