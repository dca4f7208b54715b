"""Specs as flat tables: dotted field names (``calibration.samples``), for grouping, scatter matrices and diffs."""

from __future__ import annotations

import json
from typing import Any, Mapping

import pandas as pd

ABSENT = "—"


def flatten(spec: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings become dotted keys; lists become their JSON text (a table cell holds one value)."""
    flat: dict[str, Any] = {}
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if type(value) is dict:  # JSON objects (a plain type test: typing.Mapping checks cost 10x more)
            flat.update(flatten(value, f"{name}."))  # an empty one (no params) carries no field
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat


def spec_table(frame: pd.DataFrame) -> pd.DataFrame:
    """(run_id, spec JSON) rows -> one row per run, one column per dotted spec field, indexed by run_id."""
    if frame.empty:
        return pd.DataFrame(index=pd.Index([], name="run_id"))
    rows = [flatten(json.loads(text)) for text in frame["spec"]]
    table = pd.DataFrame.from_records(rows, index=pd.Index(frame["run_id"], name="run_id"))
    return table.reindex(sorted(table.columns), axis=1)


def numeric_fields(table: pd.DataFrame) -> list[str]:
    """Spec fields that are numbers (booleans excluded) and take more than one value: the axes worth plotting."""
    fields = []
    for column in table.columns:
        series = table[column]
        if pd.api.types.is_bool_dtype(series) or pd.api.types.infer_dtype(series, skipna=True) == "boolean":
            continue
        values = pd.to_numeric(series, errors="coerce")
        present = values.notna().sum()
        if present and present == series.notna().sum() and values.nunique() > 1:
            fields.append(column)
    return fields


def spec_diff(specs: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The fields whose values differ between the given runs' specs: rows = fields, columns = runs.

    A field one spec lacks (another job kind, a method's own parameter) counts as different and shows
    as ``—``. Values are compared by their JSON text, so 0.5 and 0.50 agree and 1 and "1" do not.
    """
    flat = {run_id: flatten(spec) for run_id, spec in specs.items()}
    fields = sorted(set().union(*[set(f) for f in flat.values()])) if flat else []
    differing = [field for field in fields
                 if len({json.dumps(f.get(field, ABSENT), sort_keys=True) for f in flat.values()}) > 1]
    labels = labels or {}
    table = pd.DataFrame({labels.get(run_id, run_id): [_cell(f.get(field, ABSENT)) for field in differing]
                          for run_id, f in flat.items()}, index=pd.Index(differing, name="field"))
    return table


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# Run columns that name what a run did (beside them, the spec's own fields); the spec's ``sparsity`` is the
# run's ``target_sparsity`` and its ``pattern.*`` fields are the run's ``pattern``.
RUN_SETTINGS = ["model", "data", "kind", "method", "pattern", "allocation", "target_sparsity"]
NOT_SETTINGS = {"sparsity", "name", "tags", "device", "checkpoint_every"}


def setting_fields(spec_fields: list[str], seeds: tuple[str, ...] = ()) -> list[str]:
    """What tells one setting of a sweep from another: the run columns above and every spec field but
    labels, runtime-only fields and the ``seeds`` (runs differing only in a seed repeat one setting)."""
    return RUN_SETTINGS + [f for f in spec_fields if f not in NOT_SETTINGS and f not in seeds
                           and not f.startswith("pattern.") and f not in RUN_SETTINGS]


def varying(frame: pd.DataFrame, fields: list[str]) -> list[str]:
    """The ``fields`` of ``frame`` that take more than one value among its rows (a missing value counts)."""
    return [f for f in fields if f in frame and frame[f].astype(str).nunique() > 1]
