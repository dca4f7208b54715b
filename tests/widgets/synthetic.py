"""Runs with hand-chosen results, written through the store's own API (start_run, finish_run).

The widgets only read the store, so their tests need rows whose values are known exactly (a Pareto
front, per-block sparsities, SAD between snapshots, kernel speedups), not real jobs.
"""

from __future__ import annotations

import hashlib
import json

import torch

from workbench.metrics.divergence import iou, sad
from workbench.records import DivergenceRecord, JobOutput, LayerStat, MaskRecord, Metric
from workbench.store import Store

# two blocks of two layers, each 8 x 16 = 128 weights
LAYERS = ["model.layers.0.mlp.up_proj", "model.layers.0.self_attn.q_proj",
          "model.layers.1.mlp.up_proj", "model.layers.1.self_attn.q_proj"]
SHAPE = (8, 16)


def mask_at(sparsity: float, seed: int, shape: tuple[int, int] = SHAPE) -> torch.Tensor:
    """A mask with exactly round(sparsity * numel) pruned positions, chosen by a seeded permutation."""
    numel = shape[0] * shape[1]
    order = torch.randperm(numel, generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(numel, dtype=torch.bool)
    mask[order[: round(sparsity * numel)]] = False
    return mask.view(shape)


def write_run(store: Store, *, kind: str = "prune", method: str = "magnitude", sparsity: float = 0.5,
              pattern: str = "unstructured", allocation: str = "uniform", model: str = "tiny-llama",
              metrics: dict[str, float] | None = None, step_metrics: dict[str, list[float]] | None = None,
              block_sparsity: tuple[float, float] | None = None, snapshots: list[int] | None = None,
              kernel_rows: list[dict] | None = None, seed: int = 0) -> str:
    """Write one finished run; returns its id. Masks: per-block sparsities (default both ``sparsity``);
    with ``snapshots``, one mask per step per layer (a fresh seed per step) and the SAD/IoU rows
    between consecutive snapshots, as a training job logs them."""
    spec = {"kind": kind, "method": method, "sparsity": sparsity, "pattern": pattern, "allocation": allocation,
            "model": model, "seed": seed}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    summary = {"model": model, "data": "shakespeare", "method": method, "pattern": pattern,
               "allocation": allocation, "target_sparsity": sparsity}
    run_id = store.start_run(key, kind, json.dumps(spec), summary, {"model": f"{model}:v1"})
    output = JobOutput()
    for name, value in (metrics or {}).items():
        output.metrics.append(Metric(name, value))
    for name, values in (step_metrics or {}).items():
        output.metrics.extend(Metric(name, value, step) for step, value in enumerate(values))
    if kind != "bench":
        blocks = block_sparsity or (sparsity, sparsity)
        steps = snapshots or [0]
        for index, layer in enumerate(LAYERS):
            target = blocks[index // 2]
            masks = [mask_at(target, seed * 1000 + index * 10 + i) for i in range(len(steps))]
            output.masks.extend(MaskRecord(layer, mask, step) for mask, step in zip(masks, steps))
            output.layers.append(LayerStat(layer, index // 2, SHAPE, target, 1 - float(masks[-1].float().mean()),
                                           pattern))
            for i in range(1, len(steps)):
                output.divergence.append(DivergenceRecord(layer, sad(masks[i - 1], masks[i]), masks[i].numel(),
                                                          iou(masks[i - 1], masks[i]), step_a=steps[i - 1],
                                                          step_b=steps[i]))
    output.kernel_results = list(kernel_rows or [])
    store.finish_run(run_id, key, output, wall_s=1.0)
    return run_id
