"""The training sweep's table: final quality, sparsity and how much the masks moved, early and late.

Read from the store through the query module, so a cached sweep reports in seconds. "Late SAD" is
the SAD summed over the snapshots of the last quarter of training: SR-STE's claim is that it falls
faster there than plain STE's.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from workbench import queries
from workbench.store import Store

COLUMNS = ["run_id", "method", "pattern", "density", "target_sparsity", "accuracy", "perplexity", "sparsity",
           "total_sad", "early_sad", "late_sad", "steps", "wall_s", "cached"]


def sad_by_quarter(sad: pd.DataFrame, steps: int) -> tuple[float, float]:
    """SAD summed over snapshots in the first and in the last quarter of training."""
    early = float(sad.loc[sad["step"] <= steps / 4, "value"].sum())
    late = float(sad.loc[sad["step"] > 3 * steps / 4, "value"].sum())
    return early, late


def training_table(store: Store, results: list[Any]) -> pd.DataFrame:
    """One row per finished training run of ``results`` (RunResults of a sweep)."""
    rows = []
    for result in results:
        if result.status != "finished":
            continue
        run = queries.run(store, result.run_id)
        spec, final = run["spec"], run["metrics"]
        sad = queries.metrics(store, [result.run_id], ["sad"])
        early, late = sad_by_quarter(sad, spec["steps"])
        label = spec["method"] + (f" decay={spec['params']['decay']:g}" if "decay" in spec["params"] else "")
        rows.append({"run_id": result.run_id, "method": label, "pattern": run["pattern"], "density": spec["density"],
                     "target_sparsity": spec["sparsity"], "accuracy": final.get("accuracy"),
                     "perplexity": final.get("perplexity"), "sparsity": final.get("sparsity"),
                     "total_sad": final.get("total_sad"), "early_sad": early, "late_sad": late,
                     "steps": spec["steps"], "wall_s": result.wall_s, "cached": result.cached})
    return pd.DataFrame(rows, columns=COLUMNS)


def train_sweep_command(store_path: Any, force: bool = False, as_json: bool = False) -> pd.DataFrame:
    """Run the default suite's training sweep (cached runs are served from the store) and print its
    table with the environment it ran in."""
    import json
    import platform
    import time

    import torch
    import typer

    from workbench.runner import run_sweep
    from workbench.suite import default_suite

    store = Store(store_path)
    started = time.perf_counter()
    results = run_sweep(default_suite(kinds=["train"]), store, force=force, progress=not as_json)
    table = training_table(store, results)
    failed = [r.error for r in results if r.status != "finished"]
    if as_json:
        typer.echo(json.dumps({"rows": json.loads(table.to_json(orient="records")), "failed": failed}, indent=2))
        return table
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()} threads"
    typer.echo(f"torch {torch.__version__}, {device}, {platform.node()}")
    typer.echo(table.drop(columns=["run_id", "perplexity"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    typer.echo(f"sweep wall time: {time.perf_counter() - started:.1f} s")
    for error in failed:
        typer.echo(f"failed: {error}", err=True)
    return table
