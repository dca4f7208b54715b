"""Sparse architecture divergence between masks (SR-STE, Zhou et al. 2021) and mask IoU.

SAD(E1, E2) = sum |E2 - E1|: the number of positions whose kept/pruned state differs (popcount of
XOR). IoU = |E1 and E2| / |E1 or E2| over the kept positions.
"""

from __future__ import annotations

import torch


def sad(mask_a: torch.Tensor, mask_b: torch.Tensor) -> int:
    if mask_a.shape != mask_b.shape:
        raise ValueError(f"masks differ in shape: {tuple(mask_a.shape)} vs {tuple(mask_b.shape)}")
    return int((mask_a.bool() ^ mask_b.bool()).sum())


def iou(mask_a: torch.Tensor, mask_b: torch.Tensor) -> float:
    a, b = mask_a.bool(), mask_b.bool()
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def compare_runs(store: object, run_a: str, run_b: str, step_a: int | None = None,
                 step_b: int | None = None) -> "pd.DataFrame":
    """Per-layer SAD and IoU between two runs' masks (final masks unless steps are given).

    Computed once and cached in the store's ``divergence`` table; layers present in only one run, or
    with different shapes, are skipped (they are not the same weights).
    """
    import pandas as pd

    from workbench import queries
    from workbench.errors import StoreError
    from workbench.records import DivergenceRecord
    from workbench.store import Store

    store = store if isinstance(store, Store) else Store(store)
    run_a, run_b = queries.run(store, run_a)["run_id"], queries.run(store, run_b)["run_id"]
    cached = queries.divergence(store, [run_a])
    cached = cached[(cached.run_a == run_a) & (cached.run_b == run_b)
                    & (cached.step_a.isna() if step_a is None else cached.step_a == step_a)
                    & (cached.step_b.isna() if step_b is None else cached.step_b == step_b)]
    if not cached.empty:
        return cached.reset_index(drop=True)
    masks_a, masks_b = queries.load_masks(store, run_a, step=step_a), queries.load_masks(store, run_b, step=step_b)
    records = [DivergenceRecord(layer, sad(masks_a[layer], masks_b[layer]), masks_a[layer].numel(),
                                iou(masks_a[layer], masks_b[layer]), run_a, run_b, step_a, step_b)
               for layer in sorted(set(masks_a) & set(masks_b)) if masks_a[layer].shape == masks_b[layer].shape]
    if not records:
        raise StoreError(f"runs {run_a} and {run_b} share no layer masks", "compare runs of the same model")
    store.add_divergence(records)
    return queries.divergence(store, [run_a]).query("run_a == @run_a and run_b == @run_b").reset_index(drop=True)
