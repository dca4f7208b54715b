"""What every command shares: the ``--store`` option, the error decorator, JSON and table printing."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from workbench.errors import WorkbenchError

Command = TypeVar("Command", bound=Callable[..., Any])

StoreOption = typer.Option(None, "--store", envvar="WORKBENCH_STORE",
                           help="DuckDB file of results (default store/workbench.duckdb)")


def fail(err: WorkbenchError) -> NoReturn:
    """End the command: one line ``error: <problem>. Fix: <fix>.`` on stderr, exit code 2."""
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


def handles_errors(command: Command) -> Command:
    """Every command wears this (below ``@app.command``): a ``WorkbenchError`` raised anywhere in it
    ends the command through `fail`. Other exceptions are bugs and keep their stack traces."""

    @functools.wraps(command)  # typer reads the wrapped function's signature and docstring
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except WorkbenchError as err:
            fail(err)

    wrapper.handles_errors = True  # type: ignore[attr-defined]  # tests check that every command has it
    return wrapper  # type: ignore[return-value]


def open_store(path: Optional[str | Path]) -> Any:
    # deferred (start-up time): the store imports DuckDB
    from workbench.store import Store

    return Store(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, default=_json_default, indent=2, sort_keys=True))


def console() -> Console:
    found = Console()
    return found if found.is_terminal else Console(width=160)  # no terminal: do not squeeze to 80


def result_table(specs: list[Any], results: list[Any], title: str = "") -> None:
    """One row per job of a sweep: what it was, its sparsity and quality, whether it came from the cache."""
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
    console().print(table)


def report_failures(results: list[Any]) -> None:
    """Exit code 1 (after each error on stderr) when a job of the sweep failed."""
    if any(r.status == "failed" for r in results):
        for r in results:
            if r.error:
                typer.echo(f"failed: {r.error}", err=True)
        raise typer.Exit(1)
