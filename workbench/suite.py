"""The default comparison suite (`workbench demo`): real methods on the embedded default model and text.

Prune rows: smollm2-135m on Shakespeare, calibration 64 windows x 512 tokens (seed 0), evaluation on
the first 64 non-overlapping 512-token windows of the held-out plays. Every method the workbench
implements adds its rows to one of the sweeps below, so the suite is the one table that compares them.
"""

from __future__ import annotations

from typing import Any, Iterable

from workbench.spec import JobSpec, parse_sweep

PRUNE_SWEEP: dict[str, Any] = {
    "base": {
        "kind": "prune",
        "model": "smollm2-135m",
        "data": "shakespeare",
        "calibration": {"samples": 64, "seq_len": 512, "seed": 0},
        "evaluation": {"windows": 64, "seq_len": 512},
    },
    "include": [
        # the baseline rows need no calibration data (`workbench demo --baseline`)
        {"method": "dense"},
        {"method": "random", "sparsity": 0.5},
        {"method": "magnitude", "sparsity": 0.5},
        {"method": "magnitude", "pattern": "2:4"},
        # one-shot calibration methods (README, Pruning methods): 50% and 2:4, then 70% where OWL matters
        {"method": "wanda", "sparsity": 0.5},
        {"method": "wanda", "pattern": "2:4"},
        {"method": "sparsegpt", "sparsity": 0.5},
        {"method": "sparsegpt", "pattern": "2:4"},
        {"method": "magnitude", "sparsity": 0.7},
        {"method": "wanda", "sparsity": 0.7},
        {"method": "sparsegpt", "sparsity": 0.7},
        {"method": "wanda", "sparsity": 0.7, "allocation": "owl"},
        {"method": "sparsegpt", "sparsity": 0.7, "allocation": "owl"},
        {"method": "dsnot", "sparsity": 0.7},
    ],
}

# One sweep per job kind; a kind's module may append its own sweep here.
SUITE: list[dict[str, Any]] = [PRUNE_SWEEP]
# Methods that prune without calibration data or training: the floor every other method must beat.
BASELINE_METHODS = frozenset({"dense", "random", "magnitude"})

# Sparse training from scratch (README, Sparse training): fashion-cnn on Fashion-MNIST, three epochs of the
# 60k images, accuracy on the 10k test images. SR-STE runs twice: with the paper's decay (2e-4, tuned for
# 120 ImageNet epochs, so close to STE here) and with a decay scaled up to this short schedule.
TRAIN_SWEEP: dict[str, Any] = {
    "base": {"kind": "train", "model": "fashion-cnn", "data": "fashion-mnist", "epochs": 3,
             "eval_every": 100, "snapshot_every": 25, "seed": 0},
    "include": [
        {"method": "dense"},
        {"method": "ste", "pattern": "2:4"},
        {"method": "sr-ste", "pattern": "2:4"},
        {"method": "sr-ste", "pattern": "2:4", "params": {"decay": 0.02}},
        {"method": "gmp", "sparsity": 0.9},
        {"method": "rigl", "sparsity": 0.9},
        {"method": "set", "sparsity": 0.9},
    ],
}
SUITE.append(TRAIN_SWEEP)


def default_suite(kinds: Iterable[str] | None = None, baseline: bool = False,
                  **prune_overrides: Any) -> list[JobSpec]:
    """The suite's specs. ``prune_overrides`` (e.g. model="tiny-llama") replace fields of the prune
    sweep's base; ``kinds`` keeps only sweeps of those job kinds; ``baseline`` keeps only the prune rows
    of dense, random and magnitude at 50% and 2:4 (a few minutes on a laptop)."""
    specs: list[JobSpec] = []
    for sweep in SUITE:
        kind = sweep["base"].get("kind", "prune")
        if kinds is not None and kind not in kinds:
            continue
        if baseline and kind != "prune":
            continue
        base = {**sweep["base"], **(prune_overrides if kind == "prune" else {})}
        include = sweep.get("include", [])
        if baseline:
            include = [row for row in include
                       if row.get("method", base.get("method")) in BASELINE_METHODS and row.get("sparsity", 0.5) <= 0.5]
        specs.extend(parse_sweep({**sweep, "base": base, "include": include}))
    return specs
