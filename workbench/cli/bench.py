"""`workbench bench ...`: benchmarks that print figures (the app's pages, kernels, latency, the training
sweep, pruning speed against llmcompressor, the start-up of the read-only commands)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from workbench.cli.bench_kernels import build_sm90_command, kernels_command, latency_command, report_command, suite_command
from workbench.cli.common import StoreOption, handles_errors, open_store
from workbench.errors import WorkbenchError
from workbench.kernels.backends import BACKENDS  # names only: the registry imports no backend (torch)

app = typer.Typer(no_args_is_help=True, help="Benchmarks that print figures (ratios measured in one run).")


@app.command("app")
@handles_errors
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
        raise WorkbenchError(f"no app folder with workbench_app/benchmark.py beside {app_file}",
                             "run from the root of a repository checkout, or pass --app <checkout>/app/main.py")
    sys.path.insert(0, str(app_file.resolve().parent))
    # deferred (start-up time): the synthetic store imports torch and pandas
    from workbench_app.benchmark import Sizes, build_store, environment, time_pages, time_pages_in_browser

    if rebuild or not store.exists():
        started = time.perf_counter()
        counts = build_store(store, Sizes(runs=runs, layer_rows=layer_rows))
        typer.echo(f"built {store} in {time.perf_counter() - started:.1f} s: "
                   + ", ".join(f"{n:,} {table}" for table, n in counts.items()))
    figures = time_pages(store, app_file, repeat)
    typer.echo(" ".join(f"{k}={v}" for k, v in environment().items()))
    typer.echo(f"store {store} ({store.stat().st_size / 2**20:.0f} MiB), {repeat} sessions per page, seconds:")
    typer.echo(figures.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if browser:
        drawn = time_pages_in_browser(store, app_file, max(1, repeat // 2))
        typer.echo(f"in chromium (navigation to every chart drawn), {max(1, repeat // 2)} visits per page, seconds:")
        typer.echo(drawn.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


@app.command("kernels")
@handles_errors
def bench_kernels(
        device: str = typer.Option("auto", help="cpu | cuda | auto"),
        backend: list[str] = typer.Option([], "--backend", help=f"{', '.join(BACKENDS)} "
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
    kernels_command(store_path=store, device=device, backends=backend, dtypes=dtype, shapes=shape, tokens=tokens,
                    sparsity=sparsity, block=block, budget_ms=budget_ms, model_shapes=model_shapes, force=force,
                    as_json=as_json)


@app.command("build-sm90")
@handles_errors
def bench_build_sm90(jobs: Optional[int] = typer.Option(None, min=1, help="nvcc processes at a time (default: the "
                                                                        "machine's cores, 3 GiB of memory each)")
                     ) -> None:
    """Compile the Hopper 2:4 sparse GEMM library (CUTLASS sm90) of the semi24-sm90 backend; print its path."""
    build_sm90_command(jobs or default_build_jobs())


def default_build_jobs() -> int:
    """As many nvcc processes as cores, as long as each has about 3 GiB of memory (CUTLASS's templates are big)."""
    import psutil

    return max(1, min(os.cpu_count() or 1, psutil.virtual_memory().total // (3 * 2**30)))


@app.command("latency")
@handles_errors
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
        structure: Optional[str] = typer.Option(None, help="variant shrunk without --masks-run: remove heads, channels, "
                                                          "blocks or heads+channels (magnitude-sp) at --sparsity"),
        sparsity: Optional[float] = typer.Option(None, help="sparsity of the converted or shrunk model"),
        channel_multiple: int = typer.Option(1, help="with --structure: blocks keep a multiple of this many channels"),
        store: Optional[str] = StoreOption, force: bool = typer.Option(False, "--force"),
        as_json: bool = typer.Option(False, "--json")) -> None:
    """Prefill and decode latency of a model with dense vs sparse linear layers (or shrunk by structured pruning)."""
    latency_command(store_path=store, device=device, model=model, random_weights=random_weights, variants=variant,
                    dtype=dtype, prefill=prefill, decode=decode, context=context, masks_run=masks_run, fuse=fuse,
                    compile_models=compile_models, structure=structure, sparsity=sparsity,
                    channel_multiple=channel_multiple, force=force, as_json=as_json)


@app.command("suite")
@handles_errors
def bench_suite(
        device: str = typer.Option("auto", help="cpu | cuda | auto"),
        masks_run: Optional[str] = typer.Option(None, "--masks-run",
                                                help="pruning run for the latency (default: newest 2:4 smollm2 run)"),
        budget_s: Optional[float] = typer.Option(None, help="leave out cases that would start after this many seconds "
                                                           "(the parts share it; a part cut short runs again next time)"),
        part: Optional[list[str]] = typer.Option(None, "--part", help="only this part of the suite, by name (repeat)"),
        store: Optional[str] = StoreOption, force: bool = typer.Option(False, "--force"),
        as_json: bool = typer.Option(False, "--json")) -> None:
    """The default kernel and latency suite of this device (GPU or CPU)."""
    suite_command(store, device, masks_run, budget_s, force, as_json, parts=part)


@app.command("report")
@handles_errors
def bench_report(run_ids: Optional[list[str]] = typer.Argument(None, help="bench runs (default: all)"),
                 store: Optional[str] = StoreOption, as_json: bool = typer.Option(False, "--json")) -> None:
    """Tables of stored benchmark runs: speedups, latency, ceilings, one-time costs, failures, targets."""
    report_command(store, run_ids, as_json)


@app.command("train")
@handles_errors
def bench_train(store: Optional[str] = StoreOption, force: bool = typer.Option(False, "--force"),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Run the suite's training sweep (fashion-cnn) and print accuracy, sparsity, SAD and wall times."""
    # deferred (start-up time): torch, the runner and the queries (torch), the report (pandas), the suite (pydantic)
    import torch

    from workbench import queries
    from workbench.suite import default_suite
    from workbench.sweeps import run_sweep
    from workbench.training.report import training_table

    opened = open_store(store)
    started = time.perf_counter()
    results = run_sweep(default_suite(kinds=["train"]), opened, force=force, progress=not as_json)
    finished = [r.run_id for r in results if r.status == "finished"]
    table = training_table(results, {run_id: queries.run(opened, run_id) for run_id in finished},
                           queries.metrics(opened, finished, ["sad"]))
    failed = [r.error for r in results if r.status != "finished"]
    if as_json:
        typer.echo(json.dumps({"rows": json.loads(table.to_json(orient="records")), "failed": failed}, indent=2))
        return
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()} threads"
    typer.echo(f"torch {torch.__version__}, {device}, {platform.node()}")
    typer.echo(table.drop(columns=["run_id", "perplexity"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    typer.echo(f"sweep wall time: {time.perf_counter() - started:.1f} s")
    for error in failed:
        typer.echo(f"failed: {error}", err=True)


@app.command("prune")
@handles_errors
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
    # deferred (start-up time): the benchmark imports torch
    import torch

    from workbench.benchmarks.prune_speed import Case, environment, format_summary, run_cases

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cases = [Case(model, name, kind, sparsity, samples, seq_len, eval_windows, layers, device, attention, precision)
             for name in method for kind in pattern]
    env = environment(device)
    typer.echo(" ".join(f"{k}={v}" for k, v in env.items()))
    summaries = run_cases(cases, repeats, reference, on_result=lambda summary: typer.echo(format_summary(summary)))
    out = out or Path("store") / "bench" / f"prune-{model}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"environment": {**env, "load_average_end": os.getloadavg()}, "cases": summaries},
                              indent=2))
    typer.echo(f"wrote {out}")


@app.command("startup")
@handles_errors
def bench_startup(repeat: int = typer.Option(5, min=1, help="fresh processes timed per command (median shown)")) -> None:
    """Time the read-only commands (ls, show, methods, a spec's validation, a cached run) in fresh processes
    against `import torch`, and check that none of them imports torch or transformers (exit 1 if one does)."""
    # deferred (start-up time): building the store runs a tiny job (torch), in this process only
    import tempfile

    from workbench.benchmarks.startup import HEAVY, TARGET_S, build_store, format_table, measure, read_only_commands

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="workbench-startup-") as tmp:
        store, run_id = build_store(Path(tmp))
        timings = measure(read_only_commands(store, run_id, Path(tmp)), repeat)
    typer.echo(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.node()}, load average "
               f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after; {repeat} fresh processes per command, "
               f"target {TARGET_S:g} s each on an idle machine")
    typer.echo(format_table(timings))
    heavy = [t.label for t in timings if t.heavy]
    if heavy:
        typer.echo(f"imported {' or '.join(HEAVY)}: {', '.join(heavy)}", err=True)
        raise typer.Exit(1)
