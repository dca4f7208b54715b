"""The `workbench` command line (typer).

Every user error ends in one line on stderr, ``error: <problem>. Fix: <fix>.``, and exit code 2: each
command wears `common.handles_errors`. Commands live by concern: `jobs` (run, sweep, demo), `runs`
(ls, show, methods, export-masks, gc, export, import) and `bench` (every `workbench bench ...`).
Start-up stays light: modules that import torch are imported inside the commands that need them.
"""

from __future__ import annotations

import typer

from workbench.cli import bench, jobs, runs
from workbench.cli.common import fail, handles_errors

__all__ = ["app", "bench_app", "fail", "handles_errors", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Prune, sparse-train and benchmark models as cached jobs logged into DuckDB.")
app.add_typer(jobs.app)  # no name: the commands sit at the top level, in this order
app.add_typer(runs.app)
bench_app = bench.app
app.add_typer(bench_app, name="bench")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
