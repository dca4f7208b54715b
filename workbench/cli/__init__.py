"""The `workbench` command line (typer).

Every user error ends in one line on stderr, ``error: <problem>. Fix: <fix>.``, and exit code 2.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from workbench.errors import WorkbenchError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Prune, sparse-train and benchmark models as cached jobs logged into DuckDB.")

# `workbench bench ...`: benchmark commands (pruning speed, kernels), each defined beside its code.
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print figures (ratios measured in one run).")
app.add_typer(bench_app, name="bench")

StoreOption = typer.Option(None, "--store", envvar="WORKBENCH_STORE",
                           help="DuckDB file of results (default store/workbench.duckdb)")


def _store(path: Optional[Path]):
    from workbench.store import Store

    return Store(path)


def fail(err: WorkbenchError) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, default=_json_default, indent=2, sort_keys=True))


def _console():
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)  # no terminal: do not squeeze to 80


def _result_table(specs: list[Any], results: list[Any], title: str = "") -> None:
    from rich.table import Table

    from workbench.results import quality_metric  # deferred (start-up time): it imports pandas

    table = Table(title=title or None)
    for column in ("run", "kind", "model", "method", "pattern", "target", "sparsity", "quality", "cached", "wall s"):
        table.add_column(column)
    for spec, result in zip(specs, results):
        summary, metrics = spec.summary(), result.metrics
        quality_name = quality_metric(metrics)
        quality = f"{quality_name} {metrics[quality_name]:.4g}" if quality_name else "-"
        target = summary.get("target_sparsity")
        table.add_row(result.run_id or "-", spec.kind, str(summary.get("model", "-")), str(summary.get("method", "-")),
                      str(summary.get("pattern", "-")), "-" if target is None else f"{target:g}",
                      f"{metrics['sparsity']:.3f}" if "sparsity" in metrics else "-", quality,
                      "yes" if result.cached else "no",
                      f"{result.wall_s:.1f}" if result.wall_s is not None else result.status)
    _console().print(table)


@app.command()
def run(spec_file: Path = typer.Argument(..., help="YAML job spec"),
        store: Optional[str] = StoreOption,
        force: bool = typer.Option(False, "--force", help="recompute even when the key finished before"),
        as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
        quiet: bool = typer.Option(False, "--quiet", help="no progress bars")) -> None:
    """Run one job (or return its cached run)."""
    from workbench.runner import run_job
    from workbench.spec import load_spec

    try:
        result = run_job(load_spec(spec_file), _store(store), force=force, progress=not quiet and not as_json)
    except WorkbenchError as err:
        fail(err)
    if as_json:
        _print_json(result.as_dict())
    else:
        state = "cached" if result.cached else f"finished in {result.wall_s:.1f} s"
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items())
        typer.echo(f"{result.run_id} {state}: {metrics}")


@app.command()
def sweep(sweep_file: Path = typer.Argument(..., help="YAML sweep: base, grid, include"),
          store: Optional[str] = StoreOption,
          force: bool = typer.Option(False, "--force"),
          as_json: bool = typer.Option(False, "--json"),
          dry_run: bool = typer.Option(False, "--dry-run", help="list the expanded specs and stop")) -> None:
    """Expand a grid into jobs and run the ones not finished yet."""
    from workbench.runner import run_sweep
    from workbench.spec import load_sweep

    try:
        specs = load_sweep(sweep_file)
        if dry_run:
            for spec in specs:
                typer.echo(spec.canonical_json())
            return
        results = run_sweep(specs, _store(store), force=force, progress=not as_json)
    except WorkbenchError as err:
        fail(err)
    if as_json:
        _print_json([r.as_dict() for r in results])
    else:
        _result_table(specs, results)
    if any(r.status == "failed" for r in results):
        for r in results:
            if r.error:
                typer.echo(f"failed: {r.error}", err=True)
        raise typer.Exit(1)


@app.command()
def demo(store: Optional[str] = StoreOption,
         model: str = typer.Option("smollm2-135m", help="model of the suite"),
         baseline: bool = typer.Option(False, "--baseline",
                                       help="only dense, random and magnitude at 50% and 2:4 (minutes on a laptop)"),
         force: bool = typer.Option(False, "--force")) -> None:
    """Run the default comparison suite (cached: seconds the second time)."""
    import time

    from workbench.runner import run_sweep
    from workbench.suite import default_suite

    started = time.perf_counter()
    try:
        specs = default_suite(model=model, baseline=baseline)
        results = run_sweep(specs, _store(store), force=force, progress=True)
    except WorkbenchError as err:
        fail(err)
    _result_table(specs, results, title=f"default suite ({model})")
    typer.echo(f"suite wall time: {time.perf_counter() - started:.1f} s")
    if any(r.status == "failed" for r in results):
        for r in results:
            if r.error:
                typer.echo(f"failed: {r.error}", err=True)
        raise typer.Exit(1)


@app.command("ls")
def list_runs(store: Optional[str] = StoreOption,
              status: Optional[str] = typer.Option(None, help="running | finished | failed"),
              method: Optional[str] = None, model: Optional[str] = None,
              limit: int = typer.Option(50, help="most recent runs to list"),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """List runs with their headline metrics."""
    from workbench import queries
    from workbench.results import QUALITY_METRICS

    try:
        frame = queries.runs(_store(store), status=status, method=method, model=model, limit=limit)
    except WorkbenchError as err:
        fail(err)
    if as_json:
        _print_json(json.loads(frame.to_json(orient="records", date_format="iso")))
        return
    if frame.empty:
        typer.echo("no runs yet: run `workbench demo` or `workbench run SPEC.yaml`")
        return
    columns = [c for c in ["run_id", "status", "model", "method", "pattern", "allocation", "target_sparsity",
                           "sparsity", *QUALITY_METRICS, "wall_s"]
               if c in frame and frame[c].notna().any()]
    from rich.table import Table

    table = Table()
    for column in columns:
        table.add_column(column)
    for row in frame[columns].itertuples(index=False):
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    _console().print(table)


@app.command()
def show(run_id: str = typer.Argument(..., help="run id or a unique prefix"),
         store: Optional[str] = StoreOption,
         as_json: bool = typer.Option(False, "--json"),
         layers: bool = typer.Option(False, "--layers", help="also list per-layer stats")) -> None:
    """Show one run: spec, status, metrics (and per-layer stats)."""
    from workbench import queries

    try:
        record = queries.run(_store(store), run_id)
        layer_frame = queries.layer_stats(_store(store), [record["run_id"]]) if (layers or as_json) else None
    except WorkbenchError as err:
        fail(err)
    if as_json:
        record["layers"] = json.loads(layer_frame.to_json(orient="records"))
        _print_json(record)
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
def methods() -> None:
    """List pruning methods and allocations with their parameters and versions."""
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


@app.command("export-masks")
def export_masks(run_id: str, out: Path = typer.Argument(..., help="safetensors file to write"),
                 store: Optional[str] = StoreOption) -> None:
    """Write a run's masks as a safetensors file (uint8, 1 = kept), one tensor per layer."""
    from safetensors.torch import save_file

    from workbench import queries

    try:
        record = queries.run(_store(store), run_id)
        masks = queries.load_masks(_store(store), record["run_id"])
    except WorkbenchError as err:
        fail(err)
    save_file({name: mask.to(dtype=__import__("torch").uint8).contiguous() for name, mask in masks.items()},
              str(out), metadata={"run_id": record["run_id"], "key": record["key"], "kept": "1"})
    typer.echo(f"wrote {len(masks)} masks to {out}")


@app.command()
def gc(store: Optional[str] = StoreOption) -> None:
    """Delete mask blobs that no run refers to any more."""
    try:
        removed = _store(store).gc_blobs()
    except WorkbenchError as err:
        fail(err)
    typer.echo(f"removed {removed} unreferenced mask blobs")


@bench_app.command("app")
def bench_app_pages(
        store: Path = typer.Option(Path("store") / "app-bench.duckdb", "--store",
                                   help="synthetic store to build (if missing) and time the pages on"),
        runs: int = typer.Option(10_000, help="runs in the synthetic store"),
        layer_rows: int = typer.Option(1_000_000, help="per-layer rows in the synthetic store"),
        repeat: int = typer.Option(5, help="fresh sessions timed per page"),
        rebuild: bool = typer.Option(False, "--rebuild", help="build the store again even if it exists"),
        app_file: Path = typer.Option(Path("app") / "main.py", "--app", help="the app's main script"),
        browser: bool = typer.Option(False, "--browser", help="also time each page drawn in headless chromium")) -> None:
    """Time every page of the Streamlit app on a large synthetic store (cold and warm render)."""
    # the benchmark lives beside the app (app/workbench_app/benchmark.py), not in the installed library
    if not (app_file.is_file() and (app_file.parent / "workbench_app" / "benchmark.py").is_file()):
        fail(WorkbenchError(f"no app folder with workbench_app/benchmark.py beside {app_file}",
                            "run from the root of a repository checkout, or pass --app <checkout>/app/main.py"))
    sys.path.insert(0, str(app_file.resolve().parent))
    from workbench_app.benchmark import Sizes, build_store, environment, time_pages, time_pages_in_browser
    if rebuild or not store.exists():
        started = __import__("time").perf_counter()
        counts = build_store(store, Sizes(runs=runs, layer_rows=layer_rows))
        typer.echo(f"built {store} in {__import__('time').perf_counter() - started:.1f} s: "
                   + ", ".join(f"{n:,} {table}" for table, n in counts.items()))
    figures = time_pages(store, app_file, repeat)
    typer.echo(" ".join(f"{k}={v}" for k, v in environment().items()))
    typer.echo(f"store {store} ({store.stat().st_size / 2**20:.0f} MiB), {repeat} sessions per page, seconds:")
    typer.echo(figures.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if browser:
        drawn = time_pages_in_browser(store, app_file, max(1, repeat // 2))
        typer.echo(f"in chromium (navigation to every chart drawn), {max(1, repeat // 2)} visits per page, seconds:")
        typer.echo(drawn.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


@bench_app.command("kernels")
def bench_kernels(
        device: str = typer.Option("auto", help="cpu | cuda | auto"),
        backend: list[str] = typer.Option([], "--backend", help="dense, semi24, semi24-cutlass, semi24-tuned, "
                                                                "semi24-sm90, semi24-fastest, bsr, bsr-triton, csr "
                                                                "(repeat; default: all the device has)"),
        dtype: list[str] = typer.Option([], "--dtype", help="fp32, bf16, fp16, fp8, int8 (repeat)"),
        shape: list[str] = typer.Option([], "--shape", help="weight OUTxIN, e.g. 4096x11008 (repeat)"),
        tokens: list[int] = typer.Option([], "--tokens", help="tokens per call (repeat)"),
        sparsity: float = typer.Option(0.9, help="sparsity of the BSR and CSR weights (2:4 is 0.5)"),
        block: int = typer.Option(64, help="BSR block size"),
        budget_ms: Optional[float] = typer.Option(None, help="measuring time per case and timing mode"),
        model_shapes: bool = typer.Option(True, "--model-shapes/--no-model-shapes",
                                          help="add the shapes of every model pruned in the store"),
        store: Optional[str] = StoreOption, force: bool = typer.Option(False, "--force"),
        as_json: bool = typer.Option(False, "--json")) -> None:
    """Time sparse matmul kernels against dense (a cached `bench` job; README, Kernel benchmarks)."""
    from workbench.cli.bench_kernels import kernels_command

    try:
        kernels_command(store, device, backend, dtype, shape, tokens, sparsity, block, budget_ms, model_shapes,
                        force, as_json)
    except WorkbenchError as err:
        fail(err)


@bench_app.command("build-sm90")
def bench_build_sm90(jobs: int = typer.Option(2, help="nvcc processes at a time (each needs a few GiB of memory)")
                     ) -> None:
    """Compile the Hopper 2:4 sparse GEMM library (CUTLASS sm90) of the semi24-sm90 backend; print its path."""
    from workbench.cli.bench_kernels import build_sm90_command

    try:
        build_sm90_command(jobs)
    except WorkbenchError as err:
        fail(err)


@bench_app.command("latency")
def bench_latency(
        device: str = typer.Option("auto", help="cpu | cuda | auto"),
        model: str = typer.Option("smollm2-135m", help="smollm2-135m, llama-7b (random weights) or a built-in"),
        random_weights: bool = typer.Option(True, "--random-weights/--real-weights"),
        variant: list[str] = typer.Option([], "--variant", help="backend of the linear layers (repeat)"),
        dtype: Optional[str] = typer.Option(None, help="fp32, bf16 or fp16"),
        prefill: list[int] = typer.Option([], "--prefill", help="prefill tokens (repeat)"),
        decode: list[int] = typer.Option([], "--decode", help="decode batch sizes (repeat)"),
        context: Optional[int] = typer.Option(None, help="tokens in the cache of a decode step"),
        masks_run: Optional[str] = typer.Option(None, "--masks-run", help="pruning run whose masks are used"),
        fuse: bool = typer.Option(False, "--fuse", help="q/k/v and gate/up as one matmul each, in both models"),
        compile_models: bool = typer.Option(False, "--compile", help="torch.compile both models before timing"),
        store: Optional[str] = StoreOption, force: bool = typer.Option(False, "--force"),
        as_json: bool = typer.Option(False, "--json")) -> None:
    """Prefill and decode latency of a model with dense vs sparse linear layers."""
    from workbench.cli.bench_kernels import latency_command

    try:
        latency_command(store, device, model, random_weights, variant, dtype, prefill, decode, context, masks_run,
                        force, as_json, fuse=fuse, compile_models=compile_models)
    except WorkbenchError as err:
        fail(err)


@bench_app.command("suite")
def bench_suite(
        device: str = typer.Option("auto", help="cpu | cuda | auto"),
        masks_run: Optional[str] = typer.Option(None, "--masks-run",
                                                help="pruning run for the latency (default: newest 2:4 smollm2 run)"),
        budget_s: Optional[float] = typer.Option(None, help="leave out cases that would start after this many seconds"),
        part: Optional[list[str]] = typer.Option(None, "--part", help="only this part of the suite, by name (repeat)"),
        store: Optional[str] = StoreOption, force: bool = typer.Option(False, "--force"),
        as_json: bool = typer.Option(False, "--json")) -> None:
    """The default kernel and latency suite of this device (GPU or CPU)."""
    from workbench.cli.bench_kernels import suite_command

    try:
        suite_command(store, device, masks_run, budget_s, force, as_json, parts=part)
    except WorkbenchError as err:
        fail(err)


@bench_app.command("report")
def bench_report(run_ids: Optional[list[str]] = typer.Argument(None, help="bench runs (default: all)"),
                 store: Optional[str] = StoreOption, as_json: bool = typer.Option(False, "--json")) -> None:
    """Tables of stored benchmark runs: speedups, latency, ceilings, one-time costs, failures, targets."""
    from workbench.cli.bench_kernels import report_command

    try:
        report_command(store, run_ids, as_json)
    except WorkbenchError as err:
        fail(err)


@bench_app.command("train")
def bench_train(store: Optional[str] = StoreOption, force: bool = typer.Option(False, "--force"),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Run the suite's training sweep (fashion-cnn) and print accuracy, sparsity, SAD and wall times."""
    from workbench.training.report import train_sweep_command

    try:
        train_sweep_command(store, force, as_json)
    except WorkbenchError as err:
        fail(err)


@bench_app.command("prune")
def bench_prune(
        model: str = typer.Option("smollm2-135m", help="smollm2-135m, llama-7b-random or tiny-llama-random"),
        method: list[str] = typer.Option(["wanda", "sparsegpt"], "--method", help="wanda, sparsegpt (repeat)"),
        pattern: list[str] = typer.Option(["unstructured", "2:4"], "--pattern", help="unstructured or N:M (repeat)"),
        sparsity: float = typer.Option(0.5, help="target sparsity of the unstructured cases"),
        samples: int = typer.Option(64, help="calibration windows"),
        seq_len: int = typer.Option(512, help="tokens per calibration window"),
        eval_windows: int = typer.Option(64, help="evaluation windows (0: no quality measure)"),
        layers: Optional[int] = typer.Option(None, help="blocks of a random-weight model (default: all)"),
        device: str = typer.Option("auto", help="cpu | cuda | auto"),
        repeats: int = typer.Option(1, help="runs per implementation, alternating their order"),
        reference: bool = typer.Option(True, "--reference/--no-reference", help="also run llmcompressor"),
        attention: str = typer.Option("model", help="attention kernel of our calibration passes: model | eager "
                                                    "(llmcompressor's, for bit-identical statistics)"),
        precision: str = typer.Option("model", help="our calibration forward passes: model (its dtype) | bfloat16 "
                                                    "(autocast; AMX on recent x86, tensor cores on GPUs)"),
        out: Optional[Path] = typer.Option(None, help="JSON file of every figure (default store/bench/)")) -> None:
    """Time Wanda and SparseGPT against llmcompressor: wall, CPU, peak memory, quality, mask agreement."""
    from workbench.benchmarks.prune_speed import prune_command

    prune_command(model, method, pattern, sparsity, samples, seq_len, eval_windows, layers, device, repeats,
                  reference, out, attention, echo=typer.echo, precision=precision)


@app.command("export")
def export(out: Path = typer.Argument(..., help="a .duckdb file, or a folder for Parquet files"),
           run: Optional[list[str]] = typer.Option(None, "--run", help="run id (repeat; default: every finished run)"),
           kind: Optional[str] = typer.Option(None, help="only runs of this kind (prune, train, bench)"),
           store: Optional[str] = StoreOption) -> None:
    """Write finished runs and all their rows (metrics, layers, masks, kernel results) to a file."""
    from workbench import queries
    from workbench.store.transfer import export_store

    try:
        ids = [queries.run(_store(store), r)["run_id"] for r in run] if run else None
        summary = export_store(_store(store), out, ids, kind)
    except WorkbenchError as err:
        fail(err)
    typer.echo(f"exported {summary.runs} runs to {summary.path}: "
               + ", ".join(f"{n} {table}" for table, n in summary.rows.items()))


@app.command("import")
def import_runs(source: Path = typer.Argument(..., help="a file or folder written by `workbench export`"),
                replace: bool = typer.Option(False, "--replace", help="replace local finished runs of the same keys"),
                store: Optional[str] = StoreOption) -> None:
    """Merge an export into the store without duplicating keys."""
    from workbench.store.transfer import import_store

    try:
        summary = import_store(_store(store), source, replace)
    except WorkbenchError as err:
        fail(err)
    typer.echo(f"imported {len(summary.imported)} runs ({len(summary.skipped_present)} already here, "
               f"{len(summary.skipped_key)} whose key already finished here, {len(summary.replaced)} replaced): "
               + ", ".join(f"{n} {table}" for table, n in summary.rows.items()))


def main() -> None:
    try:
        app()
    except WorkbenchError as err:  # errors raised outside a command's own handling
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
