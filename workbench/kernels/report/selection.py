"""Per case, the fastest backend; per run, the headline figures.

The fastest backend of a case is judged on graph replay (GPU) or the wall clock (CPU), the form a
deployed model runs in; eager figures stay beside it as a record of the launch overhead.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable

DEPLOYED_TIMINGS = ("graph", "wall")
LARGE_TOKENS = 2048  # where the compute-bound targets apply


def _case_key(row: dict[str, Any]) -> tuple:
    return (row.get("phase"), row.get("model"), row.get("dtype"), row.get("out_features"), row.get("in_features"),
            row.get("tokens"), row.get("batch"))


def _measured(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("status") == "ok" and r.get("timing") in DEPLOYED_TIMINGS
            and r.get("phase") in ("kernel", "prefill", "decode") and r.get("median_us")]


def mark_best(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set ``best`` on every measured row: True for the fastest backend of its case."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in _measured(rows):
        groups[_case_key(row)].append(row)
    for group in groups.values():
        fastest = min(group, key=lambda r: r["median_us"])
        for row in group:
            row["best"] = row is fastest
    return rows


def _geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def headline_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """cases, failed, unsupported; best_speedup (any sparse row); speedup: the geometric mean, over
    cases with at least 2048 tokens, of the fastest sparse backend's speedup over dense."""
    measured = [r for r in rows if r.get("phase") in ("kernel", "prefill", "decode")]
    metrics: dict[str, float] = {
        "cases": len({_case_key(r) for r in measured}),
        "failed": sum(r.get("status") in ("failed", "timeout") for r in measured),
        "unsupported": sum(r.get("status") == "unsupported" for r in measured),
        "skipped": sum(r.get("status") == "skipped" for r in measured),
    }
    sparse = [r for r in _measured(rows) if r.get("backend") != "dense" and r.get("speedup")]
    if sparse:
        metrics["best_speedup"] = max(r["speedup"] for r in sparse)
    per_case: dict[tuple, float] = {}
    for row in sparse:
        if (row.get("tokens") or 0) >= LARGE_TOKENS and row.get("phase") in ("kernel", "prefill"):
            key = _case_key(row)
            per_case[key] = max(per_case.get(key, 0.0), row["speedup"])
    if per_case:
        metrics["speedup"] = _geometric_mean(list(per_case.values()))
    return metrics
