"""The training sweep's table: final quality, sparsity and how much the masks moved, early and late.

Pure functions of what the store holds (`workbench bench train` reads it and prints the table), so a
cached sweep reports in seconds. "Late SAD" is the SAD summed over the snapshots of the last quarter of
training: SR-STE's claim is that it falls faster there than plain STE's.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import pandas as pd

COLUMNS = ["run_id", "method", "pattern", "density", "target_sparsity", "accuracy", "perplexity", "sparsity",
           "total_sad", "early_sad", "late_sad", "steps", "wall_s", "cached"]


def sad_by_quarter(sad: pd.DataFrame, steps: int) -> tuple[float, float]:
    """SAD summed over snapshots in the first and in the last quarter of training."""
    early = float(sad.loc[sad["step"] <= steps / 4, "value"].sum())
    late = float(sad.loc[sad["step"] > 3 * steps / 4, "value"].sum())
    return early, late


def training_table(results: Iterable[Any], records: Mapping[str, Mapping[str, Any]], sad: pd.DataFrame
                   ) -> pd.DataFrame:
    """One row per finished training run of ``results`` (RunResults of a sweep). ``records`` maps
    their run ids to run records (``queries.run``: spec, pattern, final metrics); ``sad`` is the long
    metric table of their ``sad`` snapshots (run_id, value, step)."""
    rows = []
    for result in results:
        if result.status != "finished":
            continue
        run = records[result.run_id]
        spec, final = run["spec"], run["metrics"]
        early, late = sad_by_quarter(sad[sad["run_id"] == result.run_id], spec["steps"])
        label = spec["method"] + (f" decay={spec['params']['decay']:g}" if "decay" in spec["params"] else "")
        rows.append({"run_id": result.run_id, "method": label, "pattern": run["pattern"], "density": spec["density"],
                     "target_sparsity": spec["sparsity"], "accuracy": final.get("accuracy"),
                     "perplexity": final.get("perplexity"), "sparsity": final.get("sparsity"),
                     "total_sad": final.get("total_sad"), "early_sad": early, "late_sad": late,
                     "steps": spec["steps"], "wall_s": result.wall_s, "cached": result.cached})
    return pd.DataFrame(rows, columns=COLUMNS)
