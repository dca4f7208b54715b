"""A run's masks as safetensors, and a finished prune run's model as a Hugging Face folder people load with plain
``from_pretrained``.

The store keeps masks, not weights (a 135M-parameter model is 0.5 GB per run), so the export rebuilds the
run's model: it prunes the run's spec again (its key proves the model, data and code are the ones the run
used), checks that every mask equals the stored one bit for bit, and saves the result. That is exact for
methods that update kept weights too (SparseGPT), where applying masks to dense weights would not be. A
structured recovery (a train run that fine-tunes a pruned run's shrunk model) is trained again from its spec,
and its final perplexity must match the stored one.

The folder holds ``config.json`` and ``model.safetensors`` (dense storage: pruned weights are zeros, or
the shrunk model for structured runs), the tokenizer where the model has a Hugging Face one,
``sparsity.json`` (method, pattern, target and achieved sparsity, per-layer sparsity, key and headline
metrics) and a short ``README.md`` model card.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from workbench import queries
from workbench.errors import SpecError, StoreError
from workbench.jobs import JobContext, stored_spec
from workbench.jobs import prune as prune_job
from workbench.results import HEADLINE_METRICS
from workbench.store import Store
from workbench.store.transfer import TransferError, cannot_write


@dataclass
class ExportedModel:
    folder: Path
    run_id: str
    parameters: int
    files: list[str]


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SpecError(f"{out} is a file", "give a folder to write the model into")
    if out.is_dir() and any(out.iterdir()):
        raise SpecError(f"folder {out} is not empty", "give a new or empty folder")


def _exportable_run(store: Store, run_id: str) -> dict[str, Any]:
    record = queries.run(store, run_id)
    if record["status"] != "finished":
        raise StoreError(f"run {record['run_id']} is {record['status']}, not finished",
                         "export a finished run (see `workbench ls`)")
    if record["kind"] != "prune" and not _is_recovery(record):
        raise SpecError(f"run {record['run_id']} is a {record['kind']} run; only prune runs and structured "
                        "recoveries export a model", "give the id of a prune run or of a structured-recovery run")
    return record


def _is_recovery(record: dict[str, Any]) -> bool:
    if record["kind"] != "train":
        return False
    from workbench.training.registry import METHODS, resolve_method

    method = record["spec"].get("method")
    return method in METHODS and resolve_method(method).starts_from_run


def _retrained(store: Store, record: dict[str, Any], spec: Any, progress: bool) -> tuple[Any, Any]:
    """A recovery's model and tokenizer, trained again from its spec; the final perplexity must be the stored one."""
    from workbench.jobs import train as train_job

    context = JobContext(store=store, progress=progress)
    prepared = train_job.prepare(spec, context)
    measured = train_job.execute(prepared, context).metric_dict()["perplexity"]
    stored = record["metrics"]["perplexity"]
    if not math.isclose(measured, stored, rel_tol=1e-3):
        raise StoreError(f"training run {record['run_id']}'s spec again gave perplexity {measured:.6g}, not the "
                         f"stored {stored:.6g}", "the installed code or libraries differ from the run's; re-run the "
                                                 "spec and export that run")
    return prepared.model, prepared.tokenizer


def sparsity_report(record: dict[str, Any], layer_rows: Any) -> dict[str, Any]:
    spec = record["spec"]
    headline = {name: value for name, value in record["metrics"].items() if name in HEADLINE_METRICS}
    return {
        "run_id": record["run_id"],
        "key": record["key"],
        "model": spec.get("model"),
        "method": spec.get("method"),
        "structure": spec.get("structure"),
        "pattern": record.get("pattern"),
        "allocation": spec.get("allocation"),
        "target_sparsity": record.get("target_sparsity"),
        "achieved_sparsity": record["metrics"].get("sparsity"),
        "metrics": headline,
        "layers": {row["layer"]: row["achieved_sparsity"] for row in layer_rows.to_dict("records")},
    }


def _model_card(report: dict[str, Any]) -> str:
    structure = f", structure {report['structure']}" if report.get("structure") else ""
    metrics = ", ".join(f"{name} {value:.4g}" for name, value in sorted(report["metrics"].items()))
    return (f"# {report['model']} pruned with {report['method']}\n\n"
            f"Pruned by the Sparsity Workbench: method `{report['method']}`, pattern `{report['pattern']}`"
            f"{structure}, target sparsity {report['target_sparsity']}, achieved {report['achieved_sparsity']}.\n"
            f"Run `{report['run_id']}` (key `{report['key'][:16]}`). Metrics: {metrics or 'none'}.\n\n"
            "Weights are stored dense (pruned weights are zeros), so any stack that loads the base model "
            "loads this one; `sparsity.json` lists the sparsity of every pruned layer.\n")


def export_model(store: Store, run_id: str, out: str | Path, progress: bool = False) -> ExportedModel:
    """Rebuild a finished prune run's (or structured recovery's) model and save it as a Hugging Face folder (see
    the module doc)."""
    out = Path(out)
    _check_target(out)
    record = _exportable_run(store, run_id)
    if record["kind"] == "prune":
        loaded = prune_job.rebuild_run(store, record)[0].loaded
        model, tokenizer = loaded.model, loaded.tokenizer
    else:
        model, tokenizer = _retrained(store, record, stored_spec(record), progress)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(out)
    report = sparsity_report(record, queries.layer_stats(store, [record["run_id"]]))
    (out / "sparsity.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    (out / "README.md").write_text(_model_card(report))
    parameters = sum(p.numel() for p in model.parameters())
    return ExportedModel(out, record["run_id"], parameters, sorted(p.name for p in out.iterdir()))


def export_masks(store: Store, run_id: str, out: str | Path) -> tuple[str, int]:
    """Write a finished run's masks to ``out`` as safetensors (uint8, 1 = kept), one tensor per layer; returns
    the run id and the number of masks. The file appears whole or not at all."""
    out = Path(out)
    if out.is_dir():
        raise TransferError(f"{out} is a directory", f"give a file path, e.g. {out / 'masks.safetensors'}")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise TransferError(f"folder {folder} does not exist", "create it first, or give a path in an existing folder")
    record = queries.run(store, run_id)
    if record["status"] != "finished":
        raise TransferError(f"run {record['run_id']} is {record['status']}, not finished",
                            "export the masks of a finished run (see `workbench ls --status finished`)")
    masks = queries.load_masks(store, record["run_id"])
    if not masks:
        raise TransferError(f"run {record['run_id']} stored no masks", "give a prune or sparse-training run")
    partial = folder / f".{out.name}.{os.getpid()}.partial"
    try:
        save_file({name: mask.to(dtype=torch.uint8).contiguous() for name, mask in masks.items()}, str(partial),
                  metadata={"run_id": record["run_id"], "key": record["key"], "kept": "1"})
        os.replace(partial, out)
    except (OSError, SafetensorError) as err:
        partial.unlink(missing_ok=True)
        raise cannot_write(out, err) from None
    return record["run_id"], len(masks)
