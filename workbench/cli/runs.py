"""Commands that read, annotate or move stored runs: `workbench ls`, `show`, `methods`, `export-masks`,
`export-model`, `gc`, `tag`, `rm`, `export`, `import`, and the `workbench store` group (init, copy, bench)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

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
    """List runs with their headline metrics; a running row shows its host, pid and age, its lease (how long
    ago its worker last renewed its claim, or "expired"), and "running (stale)" when a killed job of this host
    left it (`workbench gc` removes those)."""
    # deferred (start-up time): queries import pandas
    from workbench import queries
    from workbench.progress import read_running
    from workbench.results import QUALITY_METRICS, age_text, lease_text

    frame = queries.with_leases(open_store(store), queries.runs(open_store(store), status=status, method=method,
                                                                model=model, limit=limit))
    jobs = read_running(open_store(store).artifacts_dir) if (frame["status"] == "running").any() else {}
    frame = frame.assign(phase=[jobs[run].summary() if run in jobs else None for run in frame["run_id"]])
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
                             age=[age_text(_seconds_since(created)) if run else ""
                                  for created, run in zip(frame["created_at"], running)],
                             lease=[lease_text(age, expired) if run else "" for age, expired, run
                                    in zip(frame["lease_age_s"], frame["lease_expired"], running)],
                             phase=frame["phase"].where(running, ""))
    columns = [c for c in ["run_id", "status", "model", "method", "pattern", "allocation", "target_sparsity",
                           "sparsity", *QUALITY_METRICS, "wall_s", "host", "pid", "age", "lease", "phase"]
               if c in frame and frame[c].notna().any()
               and (c not in ("host", "pid", "age", "lease", "phase") or running.any())]
    table = Table()
    for column in columns:
        table.add_column(column, no_wrap=column in ("run_id", "status"))  # "running (stale)" stays one phrase
    for row in frame[columns].itertuples(index=False):
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    console().print(table)


def _seconds_since(created: object) -> float:
    """Seconds since a naive UTC timestamp."""
    from datetime import datetime, timezone

    return (datetime.now(timezone.utc).replace(tzinfo=None) - created).total_seconds()


def _source_run(store: Any, spec: dict[str, Any]) -> str | None:
    """The finished run a run was made from, which its spec names by key (a recovery's pruned run)."""
    key = (spec.get("params") or {}).get("from_run")
    found = store.finished_run(key) if isinstance(key, str) else None
    return found["run_id"] if found else None


@app.command()
@handles_errors
def show(run_id: str = typer.Argument(..., help="run id or a unique prefix"),
         store: Optional[str] = StoreOption,
         as_json: bool = typer.Option(False, "--json"),
         layers: bool = typer.Option(False, "--layers", help="also list per-layer stats")) -> None:
    """Show one run: spec, status, metrics (and per-layer stats)."""
    # deferred (start-up time): queries import pandas
    from workbench import queries

    record = queries.run(open_store(store), run_id)
    record["source_run"] = _source_run(open_store(store), record["spec"])
    layer_frame = queries.layer_stats(open_store(store), [record["run_id"]]) if (layers or as_json) else None
    if as_json:
        record["layers"] = json.loads(layer_frame.to_json(orient="records"))
        print_json(record)
        return
    for field in ("run_id", "key", "status", "error", "created_at", "finished_at", "wall_s", "host", "source_run"):
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
    # deferred (start-up time): the registries import every method's module (torch only inside its functions)
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
def export_model(run_id: str = typer.Argument(..., help="a finished prune run or structured recovery (id or prefix)"),
                 out: Path = typer.Argument(..., help="new or empty folder for the Hugging Face model"),
                 store: Optional[str] = StoreOption) -> None:
    """Rebuild a prune run's model (masks checked against the stored ones), or train a structured recovery again
    (its perplexity checked), and save it as a Hugging Face folder."""
    # deferred (start-up time): rebuilding the model imports torch and transformers
    from workbench.model_export import export_model as export

    exported = export(open_store(store), run_id, out)
    typer.echo(f"wrote {exported.folder} ({exported.parameters:,} parameters; {', '.join(exported.files)})")


@app.command("export-masks")
@handles_errors
def export_masks(run_id: str, out: Path = typer.Argument(..., help="safetensors file to write"),
                 store: Optional[str] = StoreOption) -> None:
    """Write a run's masks as a safetensors file (uint8, 1 = kept), one tensor per layer."""
    # deferred (start-up time): the export imports torch and safetensors
    from workbench.model_export import export_masks as export

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


@app.command()
@handles_errors
def tag(run_id: str = typer.Argument(..., help="run id or a unique prefix"),
        add: Optional[list[str]] = typer.Option(None, "--add", help="a tag to add (repeat for more)"),
        remove: Optional[list[str]] = typer.Option(None, "--remove", help="a tag to remove (repeat for more)"),
        note: Optional[str] = typer.Option(None, "--note", help="the run's note (replaces it; '' clears it)"),
        store: Optional[str] = StoreOption) -> None:
    """Add and remove a run's tags and set its note (the spec's tags stay as they are); without options, show them."""
    # deferred (start-up time): queries import pandas
    from workbench import queries
    from workbench.store.notes import annotate, merged_tags

    opened = open_store(store)
    record = queries.run(opened, run_id)
    spec_tags, user_tags, text = record["tags"], record["user_tags"], record["note"]
    if add or remove or note is not None:
        changed = annotate(opened, record["run_id"], add=add or (), remove=remove or (), note=note)
        spec_tags, user_tags, text = changed.spec_tags, changed.tags, changed.note
    tags = ", ".join(merged_tags(spec_tags, user_tags)) or "none"
    typer.echo(f"{record['run_id']}: tags {tags}" + (f" (from its spec: {', '.join(spec_tags)})" if spec_tags else ""))
    if text:
        typer.echo(f"note: {text}")


@app.command("rm")
@handles_errors
def remove_runs(run_ids: list[str] = typer.Argument(..., help="run ids or unique prefixes"),
                yes: bool = typer.Option(False, "--yes", "-y", help="delete without asking"),
                store: Optional[str] = StoreOption) -> None:
    """Delete runs with their metrics, layer stats, mask references and notes in one transaction (a running run
    cannot be deleted); `workbench gc` then drops the mask blobs no other run uses."""
    # deferred (start-up time): queries import pandas
    from workbench import queries
    from workbench.store import check_deletable

    opened = open_store(store)
    records = [queries.run(opened, run_id) for run_id in run_ids]
    for record in records:  # before asking: the transaction checks again
        check_deletable(record["run_id"], record["status"])
    ids = list(dict.fromkeys(record["run_id"] for record in records))
    if not yes:
        typer.confirm(f"Delete {len(ids)} run{'s' if len(ids) > 1 else ''} ({', '.join(ids)}) with all "
                      f"{'their' if len(ids) > 1 else 'its'} rows?", abort=True)
    deleted = opened.delete_runs(ids)
    typer.echo(f"deleted {len(deleted)} run{'s' if len(deleted) > 1 else ''}: {' '.join(deleted)} "
               "(`workbench gc` drops the mask blobs no other run uses)")


@app.command("export")
@handles_errors
def export(out: Path = typer.Argument(..., help="a .duckdb file, or a folder for Parquet files"),
           run: Optional[list[str]] = typer.Option(None, "--run", help="run id (repeat; default: every finished run)"),
           kind: Optional[str] = typer.Option(None, help="only runs of this kind (prune, train, bench)"),
           store: Optional[str] = StoreOption) -> None:
    """Write finished runs and all their rows (metrics, layers, masks, kernel results) to a file."""
    # deferred (start-up time): queries import pandas, the transfer DuckDB
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
    # deferred (start-up time): the transfer imports DuckDB
    from workbench.store.transfer import import_store

    summary = import_store(open_store(store), source, replace)
    typer.echo(f"imported {len(summary.imported)} runs ({len(summary.skipped_present)} already here, "
               f"{len(summary.skipped_key)} whose key already finished here, {len(summary.replaced)} replaced): "
               + ", ".join(f"{n} {table}" for table, n in summary.rows.items()))


store_app = typer.Typer(no_args_is_help=True, help="The store itself: create a shared one, copy runs between "
                                                   "stores, measure it under concurrent writers.")
app.add_typer(store_app, name="store")


@store_app.command("init")
@handles_errors
def store_init(url: str = typer.Argument(..., help="ducklake:postgres:dbname=NAME host=HOST user=USER (or a file)"),
               data_path: Optional[Path] = typer.Option(None, "--data-path", envvar="WORKBENCH_LAKE_DATA",
                                                        help="folder of the lake's data files, shared by every "
                                                             "machine (default store/lake-data)")) -> None:
    """Create a store (the DuckLake catalog in an existing PostgreSQL database, and the schema); idempotent."""
    from workbench.errors import StoreError
    from workbench.store import Store

    opened = Store(url, data_path=data_path)
    try:
        opened.check_writable()
        opened.transaction(lambda con: None)  # attaching creates the catalog; the first write migrates the schema
    except StoreError as err:
        if opened.is_lake:
            raise StoreError(err.problem, "create the PostgreSQL database first (`createdb -h HOST -U USER NAME`), "
                                          "check that the server is reachable (README, Shared store)") from None
        raise
    where = f"; data files under {opened.data_path.resolve()}" if opened.is_lake else ""
    typer.echo(f"store {url} ready at schema v{opened.schema_version()}{where}")


@store_app.command("copy")
@handles_errors
def store_copy(source: str = typer.Argument(..., help="store to copy finished runs from (file or ducklake: URL)"),
               target: str = typer.Argument(..., help="store to merge them into (file or ducklake: URL)"),
               replace: bool = typer.Option(False, "--replace", help="replace the target's finished runs of the same keys"),
               kind: Optional[str] = typer.Option(None, help="only runs of this kind (prune, train, bench)")) -> None:
    """Copy finished runs with all their rows from one store to another, either way between a file and a
    shared store; runs and keys already there are skipped, so copying again changes nothing."""
    # deferred (start-up time): the transfer imports DuckDB
    import tempfile

    from workbench.store import Store
    from workbench.store.transfer import export_store, import_store

    with tempfile.TemporaryDirectory(prefix="workbench-copy-") as tmp:
        exported = export_store(Store(source), Path(tmp) / "runs", kind=kind)
        summary = import_store(Store(target), Path(tmp) / "runs", replace)
    typer.echo(f"copied {len(summary.imported)} of {exported.runs} finished runs ({len(summary.skipped_present)} "
               f"already there, {len(summary.skipped_key)} whose key already finished there, "
               f"{len(summary.replaced)} replaced)")


@store_app.command("bench")
@handles_errors
def store_bench(store: Optional[str] = StoreOption,
                writers: int = typer.Option(8, min=1, help="writer processes, each running every job"),
                jobs: int = typer.Option(100, min=1, help="tiny prune jobs (new keys on every bench)"),
                kills: int = typer.Option(0, min=0, help="writers killed with SIGKILL mid-job (each replaced)"),
                executor: str = typer.Option("local", "--executor",
                                             help="local (writer processes) | ray (each writer a sweep on a local "
                                                  "Ray cluster the bench starts)"),
                ray_cpus: int = typer.Option(2, "--ray-cpus", min=1, help="ray: CPUs of that cluster"),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Writers racing over the same jobs while a reader polls `workbench ls --json`; prints jobs present exactly
    once, re-runs, duplicates and the errors writers and the reader saw."""
    from workbench.benchmarks.store_stress import run_stress
    from workbench.store import Store

    location = store or str(Store().location)
    report = run_stress(location, writers=writers, jobs=jobs, kills=kills, progress=not as_json, executor=executor,
                        ray_cpus=ray_cpus)
    if as_json:
        print_json(report.as_dict())
    else:
        for line in report.lines():
            typer.echo(line)
        for error in sorted(set(report.writer_errors + report.reader_errors))[:10]:
            typer.echo(f"  error: {error}")
    if report.present_once != jobs or report.reruns or report.writer_errors or report.reader_errors:
        raise typer.Exit(1)
