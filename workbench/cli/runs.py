"""Commands that read or move stored runs: `workbench ls`, `show`, `methods`, `export-masks`, `export-model`,
`gc`, `export`, `import`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from workbench.cli.common import StoreOption, console, handles_errors, open_store, print_json

app = typer.Typer()


@app.command("ls")
@handles_errors
def list_runs(store: Optional[str] = StoreOption,
              status: Optional[str] = typer.Option(None, help="running | finished | failed"),
              method: Optional[str] = None, model: Optional[str] = None,
              limit: int = typer.Option(50, help="most recent runs to list (0: all)"),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """List runs with their headline metrics; a running row shows its host, pid and age, and "running (stale)"
    when a killed job of this host left it (`workbench gc` removes those)."""
    # deferred (start-up time): queries import torch and pandas
    from workbench import queries
    from workbench.results import QUALITY_METRICS

    frame = queries.runs(open_store(store), status=status, method=method, model=model, limit=limit)
    if as_json:
        print_json(json.loads(frame.to_json(orient="records", date_format="iso")))
        return
    if frame.empty:
        typer.echo("no runs yet: run `workbench demo` or `workbench run SPEC.yaml`")
        return
    running = frame["status"] == "running"
    if running.any():  # where and since when each running row runs, so that a stale one is recognised
        frame = frame.assign(status=frame["status"].where(~frame["stale"], "running (stale)"),
                             pid=frame["pid"].astype("Int64").astype(str).where(running, ""),
                             host=frame["host"].where(running, ""),
                             age=[_age(created) if run else "" for created, run in zip(frame["created_at"], running)])
    columns = [c for c in ["run_id", "status", "model", "method", "pattern", "allocation", "target_sparsity",
                           "sparsity", *QUALITY_METRICS, "wall_s", "host", "pid", "age"]
               if c in frame and frame[c].notna().any() and (c not in ("host", "pid", "age") or running.any())]
    table = Table()
    for column in columns:
        table.add_column(column)
    for row in frame[columns].itertuples(index=False):
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    console().print(table)


def _age(created: object) -> str:
    """How long ago a naive UTC timestamp was, as 45s, 12m, 3h05m or 2d04h."""
    from datetime import datetime, timezone

    seconds = max(0, int((datetime.now(timezone.utc).replace(tzinfo=None) - created).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


@app.command()
@handles_errors
def show(run_id: str = typer.Argument(..., help="run id or a unique prefix"),
         store: Optional[str] = StoreOption,
         as_json: bool = typer.Option(False, "--json"),
         layers: bool = typer.Option(False, "--layers", help="also list per-layer stats")) -> None:
    """Show one run: spec, status, metrics (and per-layer stats)."""
    # deferred (start-up time): queries import torch and pandas
    from workbench import queries

    record = queries.run(open_store(store), run_id)
    layer_frame = queries.layer_stats(open_store(store), [record["run_id"]]) if (layers or as_json) else None
    if as_json:
        record["layers"] = json.loads(layer_frame.to_json(orient="records"))
        print_json(record)
        return
    for field in ("run_id", "key", "status", "error", "created_at", "finished_at", "wall_s", "host"):
        if record.get(field) is not None:
            typer.echo(f"{field:>12}: {record[field]}")
    typer.echo("        spec: " + json.dumps(record["spec"], sort_keys=True))
    for name, value in sorted(record["metrics"].items()):
        typer.echo(f"{name:>24} = {value:.6g}")
    if layer_frame is not None and not layer_frame.empty:
        typer.echo(layer_frame.drop(columns=["run_id", "extra"]).to_string(index=False))


@app.command()
@handles_errors
def methods() -> None:
    """List pruning methods and allocations with their parameters and versions."""
    # deferred (start-up time): the pruning registries import torch
    from workbench.pruning.allocation import ALLOCATIONS, resolve_allocation
    from workbench.pruning.registry import METHODS, resolve_method

    for name in METHODS:
        method = resolve_method(name)
        params = ", ".join(f"{k}={v.default!r}" for k, v in method.Params.model_fields.items())
        typer.echo(f"method {name} v{method.version}  {params}")
    for name in ALLOCATIONS:
        allocation = resolve_allocation(name)
        params = ", ".join(f"{k}={v.default!r}" for k, v in allocation.Params.model_fields.items())
        typer.echo(f"allocation {name} v{allocation.version}  {params}")
    from workbench.structured.criteria import CRITERIA, resolve_criterion

    for name in CRITERIA:
        criterion = resolve_criterion(name)
        params = ", ".join(f"{k}={v.default!r}" for k, v in criterion.Params.model_fields.items())
        structures = "|".join(sorted(criterion.structures))
        typer.echo(f"criterion {name} v{criterion.version}  structure: {structures}  {params}")


@app.command("export-model")
@handles_errors
def export_model(run_id: str = typer.Argument(..., help="a finished prune run (id or unique prefix)"),
                 out: Path = typer.Argument(..., help="new or empty folder for the Hugging Face model"),
                 store: Optional[str] = StoreOption) -> None:
    """Rebuild a prune run's model (masks checked against the stored ones) and save it as a Hugging Face folder."""
    # deferred (start-up time): rebuilding the model imports torch and transformers
    from workbench.model_export import export_model as export

    exported = export(open_store(store), run_id, out)
    typer.echo(f"wrote {exported.folder} ({exported.parameters:,} parameters; {', '.join(exported.files)})")


@app.command("export-masks")
@handles_errors
def export_masks(run_id: str, out: Path = typer.Argument(..., help="safetensors file to write"),
                 store: Optional[str] = StoreOption) -> None:
    """Write a run's masks as a safetensors file (uint8, 1 = kept), one tensor per layer."""
    # deferred (start-up time): the transfer imports torch and safetensors
    from workbench.store.transfer import export_masks as export

    _, count = export(open_store(store), run_id, out)
    typer.echo(f"wrote {count} masks to {out}")


@app.command()
@handles_errors
def gc(store: Optional[str] = StoreOption) -> None:
    """Delete running rows that killed jobs of this host left (and their rows), mask blobs no run refers to,
    and checkpoint folders of keys that finished."""
    removed = open_store(store).collect_garbage()
    typer.echo(f"removed {len(removed.stale_runs)} stale running runs of this host, {removed.mask_blobs} "
               f"unreferenced mask blobs, {len(removed.checkpoints)} checkpoint folders of finished keys")


@app.command("export")
@handles_errors
def export(out: Path = typer.Argument(..., help="a .duckdb file, or a folder for Parquet files"),
           run: Optional[list[str]] = typer.Option(None, "--run", help="run id (repeat; default: every finished run)"),
           kind: Optional[str] = typer.Option(None, help="only runs of this kind (prune, train, bench)"),
           store: Optional[str] = StoreOption) -> None:
    """Write finished runs and all their rows (metrics, layers, masks, kernel results) to a file."""
    # deferred (start-up time): queries and the transfer import torch
    from workbench import queries
    from workbench.store.transfer import export_store

    ids = [queries.run(open_store(store), r)["run_id"] for r in run] if run else None
    summary = export_store(open_store(store), out, ids, kind)
    typer.echo(f"exported {summary.runs} runs to {summary.path}: "
               + ", ".join(f"{n} {table}" for table, n in summary.rows.items()))


@app.command("import")
@handles_errors
def import_runs(source: Path = typer.Argument(..., help="a file or folder written by `workbench export`"),
                replace: bool = typer.Option(False, "--replace", help="replace local finished runs of the same keys"),
                store: Optional[str] = StoreOption) -> None:
    """Merge an export into the store without duplicating keys."""
    # deferred (start-up time): the transfer imports torch
    from workbench.store.transfer import import_store

    summary = import_store(open_store(store), source, replace)
    typer.echo(f"imported {len(summary.imported)} runs ({len(summary.skipped_present)} already here, "
               f"{len(summary.skipped_key)} whose key already finished here, {len(summary.replaced)} replaced): "
               + ", ".join(f"{n} {table}" for table, n in summary.rows.items()))
