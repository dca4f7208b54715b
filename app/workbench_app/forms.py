"""From the Launch page's form to a sweep the CLI runs: plain dicts, validated by ``workbench.spec``.

A single job is a sweep with only a base. A sweep crosses methods x (pattern, sparsity) x seeds; an
N:M pattern fixes its own sparsity, so it pairs with no sparsity value rather than with each of them.
The crossing is written out as the sweep's ``include`` list, so the file that runs shows every job.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import SpecError
from workbench.spec import JobSpec, parse_spec, parse_sweep, parse_yaml

MAX_YAML_CHARS = 100_000  # a spec or a sweep is a few lines; more is a paste gone wrong


def split_list(text: str) -> list[str]:
    return [part for part in re.split(r"[,\s]+", text.strip()) if part]


def numbers(text: str, what: str, integer: bool = False) -> list[float] | list[int]:
    values = []
    for part in split_list(text):
        try:
            values.append(int(part) if integer else float(part))
        except ValueError:
            raise SpecError(f"{what}: {part!r} is not a{'n integer' if integer else ' number'}",
                            f"list {what} separated by commas, e.g. {'0, 1' if integer else '0.5, 0.7'}") from None
    if not values:
        raise SpecError(f"no {what} given", f"list at least one of the {what}")
    return values


def is_nm(pattern: str) -> bool:
    return ":" in pattern


def build_sweep(common: dict[str, Any], methods: list[str], patterns: list[str], sparsities: list[float],
                seeds: list[int]) -> dict[str, Any]:
    """Every method x (pattern, sparsity) x calibration seed, as a sweep of explicit jobs over ``common``."""
    if not methods:
        raise SpecError("no method chosen", "pick at least one method")
    include = []
    for method in methods:
        for pattern in patterns or ["unstructured"]:
            for sparsity in ([None] if is_nm(pattern) else sparsities):
                for seed in seeds:
                    entry = {"method": method, "pattern": pattern, "calibration.seed": seed}
                    include.append(entry if sparsity is None else {**entry, "sparsity": sparsity})
    return {"base": common, "include": include}


def from_yaml(text: str) -> dict[str, Any]:
    """A pasted spec or sweep; a mapping with ``base``, ``grid`` or ``include`` is a sweep."""
    if len(text) > MAX_YAML_CHARS:
        raise SpecError(f"the YAML is {len(text):,} characters long", f"paste a spec or a sweep (under "
                        f"{MAX_YAML_CHARS:,} characters; a sweep's grid writes many jobs in a few lines)")
    data = parse_yaml(text, "the YAML")  # SpecError naming the line on bad syntax, and on a key given twice
    if not isinstance(data, dict):
        raise SpecError("the YAML must be a mapping of `key: value` lines", "paste a spec or a sweep")
    return data if {"base", "grid", "include"} & set(data) else {"base": data}


def expand(sweep: dict[str, Any]) -> list[JobSpec]:
    """The validated jobs of a sweep: exactly what `workbench sweep` would run (SpecError otherwise)."""
    if set(sweep) == {"base"}:
        return [parse_spec(sweep["base"])]
    return parse_sweep(sweep)


def job_tokens(samples: int, cal_len: int, windows: int, eval_len: int) -> int:
    """Tokens one prune job pushes through the model: its calibration windows and its evaluation windows."""
    return int(samples) * int(cal_len) + int(windows) * int(eval_len)


def seconds_per_token(runs: pd.DataFrame, specs: pd.DataFrame, model: str) -> tuple[float, int] | None:
    """(median wall seconds per token, runs it is taken over) of the finished prune runs of ``model`` among
    ``runs`` (``specs``: their flattened specs, by run id): what a new job of that model is estimated by.
    None when there are none."""
    needed = ["calibration.samples", "calibration.seq_len", "evaluation.windows", "evaluation.seq_len"]
    if runs.empty or specs.empty or not set(needed) <= set(specs.columns) or "wall_s" not in runs:
        return None
    done = runs[(runs["status"] == "finished") & (runs["kind"] == "prune") & (runs["model"] == model)
                & runs["wall_s"].notna()]
    if done.empty:
        return None
    fields = specs.reindex(done["run_id"])[needed].apply(pd.to_numeric, errors="coerce")
    tokens = (fields[needed[0]] * fields[needed[1]] + fields[needed[2]] * fields[needed[3]]).to_numpy()
    rates = done["wall_s"].to_numpy(dtype=float) / tokens
    rates = rates[np.isfinite(rates) & (rates > 0)]
    return (float(np.median(rates)), len(rates)) if len(rates) else None


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_line(model: str, jobs: int, samples: int, cal_len: int, windows: int, eval_len: int,
                  rate: tuple[float, int] | None) -> str:
    """What a launch will cost, roughly: tokens per job and, from this store's history, time per job and in all."""
    tokens = job_tokens(samples, cal_len, windows, eval_len)
    line = (f"Each job reads {samples:,} × {cal_len:,} calibration tokens and evaluates {windows:,} × {eval_len:,}: "
            f"{tokens:,} tokens through {model}.")
    if rate is None:
        return (line + f" No finished prune run of {model} in this store to time it by; time grows with those "
                "tokens, so try e.g. 8 × 128 first for a quick look.")
    per_job = rate[0] * tokens
    total = f", {jobs} jobs about {duration(per_job * jobs)} one after another" if jobs > 1 else ""
    return (line + f" Roughly {duration(per_job)} per job{total} (by the median pace of the {rate[1]:,} newest finished "
            f"prune run{'s' * (rate[1] != 1)} of {model} here; methods differ, cached jobs take no time).")
