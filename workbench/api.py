"""The notebook-facing Python API: runs as DataFrames, masks as tensors, jobs from dicts, SAD/IoU.

A thin layer over what the CLI and the app already use: reads go through ``workbench.queries``, jobs
through ``workbench.runner``, and metric directions, labels, Pareto fronts and SAD/IoU come from
``workbench.results``, so a notebook sees exactly the numbers the other readers show. Every function takes ``store=`` (a Store,
a path, or None for ``WORKBENCH_STORE`` / ``store/workbench.duckdb``).

```python
from workbench import api
api.run({"model": "tiny-llama", "method": "magnitude", "sparsity": 0.5})
frame = api.runs(method="magnitude")
api.divergence_summary(frame.run_id[0], frame.run_id[1])
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd
import torch
from torch import nn

from workbench import queries
from workbench.errors import AssetError, PruningError, SpecError, StoreError
from workbench.metrics.divergence import iou, sad
from workbench.records import DivergenceRecord
from workbench.results import LOWER_IS_BETTER, Overlap, describe, pareto_front
from workbench.runner import RunResult, run_job
from workbench.spec import JobSpec, parse_spec, parse_sweep
from workbench.store import Store
from workbench.sweeps import run_sweep as _run_sweep

StoreLike = Store | str | Path | None


def open_store(path: StoreLike = None) -> Store:
    """The store at ``path`` (default: ``WORKBENCH_STORE`` or ``store/workbench.duckdb``)."""
    return path if isinstance(path, Store) else Store(path)


# ---------------------------------------------------------------- reading runs
def filter_runs(frame: pd.DataFrame, **filters: Any) -> pd.DataFrame:
    """Rows of a ``queries.runs`` frame whose columns equal the filters (a list or tuple means any of).

    A filter of None is no filter, so that a form's "any" choice passes straight through."""
    unknown = sorted(set(filters) - set(queries.RUN_COLUMNS))
    if unknown:
        raise SpecError(f"unknown run filter {unknown[0]!r}", f"filter on one of: {', '.join(queries.RUN_COLUMNS)}")
    keep = pd.Series(True, index=frame.index)
    for column, value in filters.items():
        if value is None:
            continue
        values = list(value) if isinstance(value, (list, tuple, set)) else [value]
        keep &= frame[column].isin(values)
    return frame[keep]


def runs(*, store: StoreLike = None, **filters: Any) -> pd.DataFrame:
    """One row per run with its headline metrics as columns, newest first, filtered by any run column
    (``kind``, ``model``, ``method``, ``pattern``, ``allocation``, ``status``...)."""
    return filter_runs(queries.runs(open_store(store)), **filters).reset_index(drop=True)


def get_run(run_id: str, *, store: StoreLike = None) -> dict[str, Any]:
    """One run (a unique prefix of its id is enough): its row, parsed spec, identities and final metrics."""
    return queries.run(open_store(store), run_id)


def _run_id(store: Store, run_id: str) -> str:
    return queries.run(store, run_id)["run_id"]


def metrics(run_ids: Iterable[str] | None = None, *, names: Iterable[str] | None = None,
            store: StoreLike = None) -> pd.DataFrame:
    """Long table (run_id, name, value, step) of every logged metric."""
    return queries.metrics(open_store(store), run_ids, names)


def curves(run_id: str, *, store: StoreLike = None) -> pd.DataFrame:
    """A run's per-step metrics as a wide table: one row per step, one column per metric."""
    store = open_store(store)
    frame = queries.metrics(store, [_run_id(store, run_id)])
    frame = frame[frame["step"].notna()]
    if frame.empty:
        return pd.DataFrame(columns=["step"])
    wide = frame.pivot_table(index="step", columns="name", values="value", aggfunc="last")
    wide.columns.name = None
    return wide.reset_index().astype({"step": int})


def layers(run_ids: Iterable[str] | str, *, store: StoreLike = None) -> pd.DataFrame:
    """Per-layer rows (shape, target and achieved sparsity, N:M validity, extras) of one or more runs."""
    store = open_store(store)
    ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
    return queries.layer_stats(store, [_run_id(store, r) for r in ids])


def kernel_results(run_ids: Iterable[str] | str, *, store: StoreLike = None) -> pd.DataFrame:
    """The measured cases of bench runs: one row per backend, case and timing mode (see README)."""
    store = open_store(store)
    ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
    return queries.kernel_results(store, [_run_id(store, r) for r in ids])


def block_sparsity(run_ids: Iterable[str] | str, *, store: StoreLike = None) -> pd.DataFrame:
    """Target and achieved sparsity per transformer block (weighted by each layer's size), per run:
    the picture that shows what a layer-wise allocation such as OWL did."""
    frame = layers(run_ids, store=store).dropna(subset=["block"])
    columns = ["run_id", "block", "numel", "target_sparsity", "achieved_sparsity"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    weighted = frame.assign(target=frame["target_sparsity"] * frame["numel"],
                            achieved=frame["achieved_sparsity"] * frame["numel"])
    sums = weighted.groupby(["run_id", "block"], as_index=False)[["numel", "target", "achieved"]].sum(min_count=1)
    sums["target_sparsity"] = sums["target"] / sums["numel"]
    sums["achieved_sparsity"] = sums["achieved"] / sums["numel"]
    return sums.astype({"block": int})[columns]


def masks(run_id: str, *, layers: Iterable[str] | None = None, step: int | None = None,
          store: StoreLike = None) -> dict[str, torch.Tensor]:
    """A run's masks as bool tensors (True = kept), each layer's last step unless ``step`` is given."""
    store = open_store(store)
    return queries.load_masks(store, _run_id(store, run_id), layers, step)


def mask_steps(run_id: str, *, store: StoreLike = None) -> list[int]:
    """The steps at which a run stored masks ([0] for a one-shot pruning run; snapshots for training)."""
    store = open_store(store)
    return sorted(int(step) for step in queries.mask_index(store, _run_id(store, run_id))["step"].unique())


# ---------------------------------------------------------------- masks on models
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> float:
    """Zero the pruned weights of ``model`` in place; returns the sparsity of the masked weights.

    Keys are the modules' qualified names, as the store keeps them. A mask that names no module of
    the model, or does not match its weight's size, is an error: it was made for another model."""
    zeros, total = 0, 0
    with torch.no_grad():
        for name, mask in masks.items():
            try:
                module = model.get_submodule(name)
            except AttributeError:
                raise PruningError(f"the model has no layer {name!r} to apply a mask to",
                                   "apply masks to the model the run pruned (see its spec's `model`)") from None
            weight = module.weight
            if mask.numel() != weight.numel():
                raise PruningError(f"the mask for {name} has {mask.numel()} entries, its weight {weight.numel()}",
                                   "apply masks to the model the run pruned (see its spec's `model`)")
            weight.mul_(mask.reshape(weight.shape).to(device=weight.device, dtype=weight.dtype))
            zeros += int((weight == 0).sum())
            total += weight.numel()
    return zeros / total if total else 0.0


def load_pruned_model(run_id: str, *, store: StoreLike = None) -> Any:
    """The run's model (``LoadedModel``) with the run's stored masks applied to its dense weights.

    This is exactly the pruned model for methods that only choose a mask (magnitude, random, Wanda,
    DSnoT); methods that also update the kept weights (SparseGPT) store masks, not weights, so for
    them this gives the dense weights under the SparseGPT mask."""
    from workbench.models import load_model

    store = open_store(store)
    record = queries.run(store, run_id)
    if record["kind"] != "prune":
        raise SpecError(f"run {record['run_id']} is a {record['kind']} run; only prune runs start from a model's "
                        "stored weights", "apply its masks to your own model with api.apply_masks")
    loaded = load_model(record["spec"]["model"])
    expected = record["identity"].get("model")
    if expected and loaded.identity != expected:
        raise AssetError(f"model {loaded.name} now has identity {loaded.identity}, the run used {expected}",
                         "reinstall the model the run used, or re-run the spec")
    apply_masks(loaded.model, queries.load_masks(store, record["run_id"]))
    return loaded


# ---------------------------------------------------------------- running jobs
def run(spec: Mapping[str, Any] | JobSpec, *, store: StoreLike = None, force: bool = False,
        progress: bool = True) -> RunResult:
    """Run one job from a dict (as in a YAML spec), or return its cached run."""
    return run_job(parse_spec(dict(spec) if isinstance(spec, Mapping) else spec), open_store(store),
                   force=force, progress=progress)


def sweep_specs(sweep: Mapping[str, Any] | Iterable[Mapping[str, Any] | JobSpec]) -> list[JobSpec]:
    """A sweep dict (``base``/``grid``/``include``) or a list of spec dicts, validated into specs."""
    if isinstance(sweep, Mapping):
        return parse_sweep(dict(sweep))
    return [parse_spec(dict(item) if isinstance(item, Mapping) else item) for item in sweep]


def sweep(sweep: Mapping[str, Any] | Iterable[Mapping[str, Any] | JobSpec], *, store: StoreLike = None,
          force: bool = False, progress: bool = True,
          on_result: Callable[[JobSpec, RunResult], None] | None = None) -> pd.DataFrame:
    """Run every spec of a sweep not finished yet; one row per job (failed jobs included, with their error)."""
    specs = sweep_specs(sweep)
    results = _run_sweep(specs, open_store(store), force=force, progress=progress, on_result=on_result)
    return results_frame(specs, results)


def results_frame(specs: list[JobSpec], results: list[RunResult]) -> pd.DataFrame:
    """A sweep's results as a table: what ran, whether it came from the cache, its final metrics."""
    rows = [{"run_id": r.run_id, "key": r.key, "job": describe(s), "kind": s.kind, "status": r.status,
             "cached": r.cached, "wall_s": r.wall_s, "error": r.error, **r.metrics} for s, r in zip(specs, results)]
    return pd.DataFrame(rows, columns=None if rows else ["run_id", "key", "job", "kind", "status", "cached", "wall_s",
                                                         "error"])


# ---------------------------------------------------------------- SAD / IoU
def compare(run_a: str, run_b: str, *, step_a: int | None = None, step_b: int | None = None,
            store: StoreLike = None) -> pd.DataFrame:
    """Per-layer SAD and IoU between two runs' masks (final masks unless steps are given).

    Computed once and cached in the store's ``divergence`` table (the one write a reader makes);
    layers present in only one run, or with different shapes, are skipped (they are not the same
    weights)."""
    store = open_store(store)
    run_a, run_b = _run_id(store, run_a), _run_id(store, run_b)
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


def _kept(store: Store, run_id: str, step: int | None) -> pd.Series:
    """Kept weights per layer at ``step`` (default: each layer's last step), from the mask index."""
    index = queries.mask_index(store, run_id)
    index = index[index["step"] == step] if step is not None else index.sort_values("step").groupby("layer").tail(1)
    return index.set_index("layer")["kept"].astype("int64")


def _totals(rows: pd.DataFrame, kept_a: pd.Series, kept_b: pd.Series) -> dict[str, float]:
    """Model-wide SAD and IoU from per-layer rows and each side's kept weights per layer (exact:
    ``results.Overlap.of_counts``)."""
    total = Overlap.of_counts(int(kept_a.reindex(rows["layer"]).sum()), int(kept_b.reindex(rows["layer"]).sum()),
                              int(rows["sad"].sum()), int(rows["numel"].sum()))
    return {**total.as_dict(), "layers": int(len(rows))}


def divergence_summary(run_a: str, run_b: str, *, step_a: int | None = None, step_b: int | None = None,
                       store: StoreLike = None) -> dict[str, float]:
    """Model-wide SAD (count and fraction of all compared weights) and IoU of the kept sets."""
    store = open_store(store)
    rows = compare(run_a, run_b, step_a=step_a, step_b=step_b, store=store)
    return _totals(rows, _kept(store, rows["run_a"].iloc[0], step_a), _kept(store, rows["run_b"].iloc[0], step_b))


def mask_drift(run_id: str, *, store: StoreLike = None) -> pd.DataFrame:
    """SAD and IoU between a run's consecutive mask snapshots (as a training job logs them), one row
    per step pair, summed over layers: how the sparse topology settles."""
    store = open_store(store)
    run_id = _run_id(store, run_id)
    rows = queries.divergence(store, [run_id])
    rows = rows[(rows["run_a"] == run_id) & (rows["run_b"] == run_id)
                & rows["step_a"].notna() & rows["step_b"].notna()]
    out = [{"step_a": int(a), "step_b": int(b),
            **_totals(group, _kept(store, run_id, int(a)), _kept(store, run_id, int(b)))}
           for (a, b), group in rows.groupby(["step_a", "step_b"])]
    return pd.DataFrame(out, columns=["step_a", "step_b", "sad", "numel", "sad_fraction", "iou", "layers"])


# ---------------------------------------------------------------- trade-offs
# pareto_front (higher sparsity, better quality; sparsities within 1e-3 count as equal) and the
# direction table LOWER_IS_BETTER are ``workbench.results``'s, re-exported here.

def nonempty(frame: pd.DataFrame, columns: Iterable[str]) -> list[str]:
    """The columns of ``frame`` (in the given order) that hold at least one value."""
    return [c for c in columns if c in frame and frame[c].notna().any()]


__all__ = ["open_store", "filter_runs", "runs", "get_run", "metrics", "curves", "layers", "kernel_results",
           "block_sparsity", "masks", "mask_steps", "apply_masks", "load_pruned_model", "run", "sweep", "sweep_specs",
           "results_frame", "compare", "divergence_summary", "mask_drift", "pareto_front", "nonempty",
           "LOWER_IS_BETTER"]
