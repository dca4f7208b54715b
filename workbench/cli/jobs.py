"""Commands that run jobs: `workbench run`, `workbench sweep`, `workbench demo`, and `workbench tasks` (what a
prune spec's `evaluation.tasks` can name)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from workbench.cli.common import StoreOption, handles_errors, open_store, print_json, report_failures, result_table
from workbench.records import shortfall_warning

app = typer.Typer()

ExecutorOption = typer.Option("local", "--executor", help="local (in this process, or --workers processes) | ray")
WorkersOption = typer.Option(1, "--workers", min=1, help="local: worker processes (1: in this process); "
                                                         "ray: CPUs of a cluster started here")
AddressOption = typer.Option(None, "--address", help="ray: the cluster to join (auto, host:port, ray://host:10001); "
                                                     "default: start one on this machine")


def _run_suite(specs: list, store: Optional[str], force: bool, progress: bool, executor: str, workers: int,
               address: Optional[str], title: str = "", as_json: bool = False) -> list:
    """Run a sweep's specs on the chosen executor; Ctrl-C prints what ended and exits 130 (run again to resume)."""
    # deferred (start-up time): the runner and the store (DuckDB); Ray is imported only when asked for
    from workbench.executors import make_executor
    from workbench.sweeps import SweepInterrupted, run_sweep

    chosen = make_executor(executor, workers, address)
    try:
        return run_sweep(specs, open_store(store), force=force, progress=progress, executor=chosen)
    except SweepInterrupted as stop:
        ended = [(spec, result) for spec, result in zip(specs, stop.results) if result is not None]
        typer.echo(f"interrupted: {len(ended)} of {len(specs)} jobs ended, nothing left claimed; "
                   "run the same command again to resume", err=True)
        if as_json:
            print_json([result.as_dict() for _, result in ended])
        elif ended:
            result_table([spec for spec, _ in ended], [result for _, result in ended], title=title)
        raise typer.Exit(130) from None
    except KeyboardInterrupt:  # before the first job was handed out: nothing ran, nothing is claimed
        typer.echo("interrupted before any job started, nothing left claimed; "
                   "run the same command again to resume", err=True)
        raise typer.Exit(130) from None


@app.command()
@handles_errors
def run(spec_file: Path = typer.Argument(..., help="YAML job spec"),
        store: Optional[str] = StoreOption,
        force: bool = typer.Option(False, "--force", help="recompute even when the key finished before"),
        as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
        quiet: bool = typer.Option(False, "--quiet", help="no progress bars")) -> None:
    """Run one job (or return its cached run)."""
    # deferred (start-up time): the spec's pydantic models; then the runner and the store (DuckDB). A cached
    # run never imports torch: the runner imports a job's executor only when the job runs.
    from workbench.spec import load_spec

    spec = load_spec(spec_file)
    from workbench.runner import run_job

    result = run_job(spec, open_store(store), force=force, progress=not quiet and not as_json)
    if as_json:
        print_json(result.as_dict())
    else:
        state = "cached" if result.cached else f"finished in {result.wall_s:.1f} s"
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items())
        typer.echo(f"{result.run_id} {state}: {metrics}")
    if warning := shortfall_warning(result.metrics):
        typer.echo(f"warning: run {result.run_id}: {warning}", err=True)


@app.command()
@handles_errors
def sweep(sweep_file: Path = typer.Argument(..., help="YAML sweep: base, grid, include"),
          store: Optional[str] = StoreOption,
          force: bool = typer.Option(False, "--force"),
          as_json: bool = typer.Option(False, "--json"),
          dry_run: bool = typer.Option(False, "--dry-run", help="list the expanded specs and stop"),
          executor: str = ExecutorOption, workers: int = WorkersOption,
          address: Optional[str] = AddressOption) -> None:
    """Expand a grid into jobs and run the ones not finished yet (Ctrl-C stops; the same command resumes)."""
    # deferred (start-up time): the spec pydantic models
    from workbench.spec import load_sweep

    specs = load_sweep(sweep_file)
    if dry_run:
        for spec in specs:
            typer.echo(spec.canonical_json())
        return
    results = _run_suite(specs, store, force, not as_json, executor, workers, address, as_json=as_json)
    if as_json:
        print_json([r.as_dict() for r in results])
    else:
        result_table(specs, results)
    report_failures(results)


@app.command()
@handles_errors
def demo(store: Optional[str] = StoreOption,
         model: str = typer.Option("smollm2-135m", help="model of the suite"),
         baseline: bool = typer.Option(False, "--baseline",
                                       help="only dense, random and magnitude at 50% and 2:4 (minutes on a laptop)"),
         force: bool = typer.Option(False, "--force"),
         executor: str = ExecutorOption, workers: int = WorkersOption,
         address: Optional[str] = AddressOption) -> None:
    """Run the default comparison suite (cached: seconds the second time)."""
    # deferred (start-up time): the suite pydantic models
    from workbench.suite import default_suite

    started = time.perf_counter()
    specs = default_suite(model=model, baseline=baseline)
    results = _run_suite(specs, store, force, True, executor, workers, address, title=f"default suite ({model})")
    result_table(specs, results, title=f"default suite ({model})")
    typer.echo(f"suite wall time: {time.perf_counter() - started:.1f} s")
    report_failures(results)


@app.command()
@handles_errors
def tasks(all_tasks: bool = typer.Option(False, "--all", help="also list every task lm-evaluation-harness knows "
                                                               "(their data sets come from the Hugging Face hub)"),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """List the tasks `evaluation.tasks` can name offline (built on first use from held-out text)."""
    # deferred (start-up time): the task builders read the corpora; the harness index imports lm_eval
    from workbench.evaluation import harness_version
    from workbench.evaluation.local import describe_tasks

    rows = describe_tasks()
    names = []
    if all_tasks:
        from workbench.evaluation.harness import all_task_names

        names = all_task_names()
    if as_json:
        print_json({"local": rows, "lm_eval": harness_version(), **({"harness": names} if all_tasks else {})})
        return
    typer.echo("local tasks (offline; built from the held-out text the calibration never reads):")
    for row in rows:
        typer.echo(f"  {row['task']:<22} {row['output_type']:<16} {row['documents']:>4} documents  "
                   f"metrics: {', '.join(row['metrics'])}  {row['description']}")
    typer.echo(f"  files: {Path(rows[0]['yaml']).parent}/ (lm_eval --include_path reads them too)")
    typer.echo(f"any lm-evaluation-harness task (lm-eval {harness_version()}) also works where its data set can be "
               "read: online, or from the Hugging Face cache" + ("" if all_tasks else "; `--all` lists them"))
    for name in names:
        typer.echo(f"  {name}")
