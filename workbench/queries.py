"""The query module: every reader (CLI, Streamlit app, Jupyter widgets) reads the store through here.

Each function opens a read-only connection for one query and closes it, so readers never hold the
file while a job wants to write. Every function returns a pandas DataFrame (or a tensor for masks);
a store that does not exist yet gives empty frames with the documented columns, never an error.
User text only ever reaches SQL as a bound parameter.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import duckdb
import pandas as pd

from workbench.errors import StoreError, WorkbenchError
from workbench.results import HEADLINE_METRICS, TASK_SEPARATOR, is_task_score
from workbench.store import Store, is_stale
from workbench.store.masks import decode_mask
from workbench.store.notes import merged_tags, parse_tags

if TYPE_CHECKING:  # masks decode to tensors; every other query starts without torch
    import torch

RUN_COLUMNS = ["run_id", "key", "kind", "name", "model", "data", "method", "pattern", "allocation",
               "target_sparsity", "status", "error", "created_at", "finished_at", "wall_s", "host", "pid"]

# HEADLINE_METRICS (workbench.results): the metrics readers show as columns beside each run (the rest
# stay in `metrics`).


def _store(store: Store | str | Path | None) -> Store:
    return store if isinstance(store, Store) else Store(store)


def _frame(store: Store | str | Path | None, sql: str, params: Sequence[Any] = (),
           columns: list[str] | None = None) -> pd.DataFrame:
    with _store(store).read() as con:
        if con is None:
            return pd.DataFrame(columns=columns or [])
        return con.execute(sql, list(params)).df()


def runs(store: Store | str | Path | None = None, *, status: str | None = None, kind: str | None = None,
         model: str | None = None, method: str | None = None, limit: int | None = None) -> pd.DataFrame:
    """One row per run with its headline metrics (``results.HEADLINE_METRICS``) as columns, newest first,
    then a column per downstream task score any of them has (``<task>/acc``, ``<task>/acc_norm``...; see
    ``results.is_task_score``), ``stale``: True for a ``running`` row left by a killed job of this host
    (`workbench gc` removes it), ``tags`` (a tuple: the spec's, then those the user added) and the user's
    ``note`` (see `run_notes`). ``limit``: the newest so many runs (None or 0: all)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 0):
        raise WorkbenchError(f"limit {limit!r} is not a count of runs", "give a limit of 1 or more, or 0 for every run")
    where, params = [], []
    for column, value in (("status", status), ("kind", kind), ("model", model), ("method", method)):
        if value is not None:
            where.append(f"r.{column} = ?")
            params.append(value)
    pivots = ", ".join(
        f"max(CASE WHEN m.name = '{name}' THEN m.value END) AS {name}" for name in HEADLINE_METRICS)
    sql = f"""
        WITH final AS (
            SELECT run_id, name, arg_max(value, coalesce(step, -1)) AS value FROM metrics GROUP BY run_id, name)
        SELECT {', '.join('r.' + c for c in RUN_COLUMNS)}, {pivots}
        FROM runs r LEFT JOIN final m ON m.run_id = r.run_id
        {'WHERE ' + ' AND '.join(where) if where else ''}
        GROUP BY ALL ORDER BY r.created_at DESC {'LIMIT ?' if limit else ''}"""
    if limit:
        params.append(int(limit))
    frame = _frame(store, sql, params, [*RUN_COLUMNS, *HEADLINE_METRICS])
    frame["stale"] = [is_stale(state, host, None if pd.isna(pid) else int(pid), None if pd.isna(created) else created)
                      for state, host, pid, created in zip(frame["status"], frame["host"], frame["pid"],
                                                          frame["created_at"])]
    return _with_notes(store, _with_task_scores(store, frame))


NOTE_COLUMNS = ["run_id", "spec_tags", "user_tags", "note", "updated_at"]


def run_notes(store: Store | str | Path | None = None, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """(run_id, spec_tags, user_tags, note, updated_at) of every run (or these): the tags its spec gave and
    those the user added (tuples), and the user's note (``workbench.store.notes``). A store written before
    annotations existed reads as runs without any."""
    where, params = "", []
    if run_ids is not None:
        where, params = "WHERE r.run_id IN (SELECT unnest(?))", [list(run_ids)]
    try:
        frame = _frame(store, "SELECT r.run_id, r.tags AS spec_tags, n.tags AS user_tags, n.note, n.updated_at "
                              f"FROM runs r LEFT JOIN run_notes n ON n.run_id = r.run_id {where}", params, NOTE_COLUMNS)
    except (duckdb.CatalogException, duckdb.BinderException):  # no run_notes table or runs.tags column yet
        frame = pd.DataFrame(columns=NOTE_COLUMNS)
    for column in ("spec_tags", "user_tags"):
        frame[column] = frame[column].map(parse_tags).astype(object)
    frame["note"] = frame["note"].astype(object).where(frame["note"].notna(), None)
    return frame


def _with_notes(store: Store | str | Path | None, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (runs) with ``tags`` (the spec's, then the user's) and ``note`` columns."""
    notes = run_notes(store, None if frame.empty else frame["run_id"]).set_index("run_id")
    spec_tags, user_tags = notes["spec_tags"].to_dict(), notes["user_tags"].to_dict()
    notes_by_run = notes["note"].to_dict()
    return frame.assign(tags=pd.Series([merged_tags(spec_tags.get(r, ()), user_tags.get(r, ())) for r in frame["run_id"]],
                                       index=frame.index, dtype=object),
                        note=pd.Series([notes_by_run.get(r) for r in frame["run_id"]], index=frame.index, dtype=object))


def _with_task_scores(store: Store | str | Path | None, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (runs) with one column per task score its runs have, sorted by name. Task names are
    open-ended, so they are pivoted here rather than named in SQL."""
    if frame.empty:
        return frame
    scores = _frame(store, "SELECT run_id, name, value FROM metrics WHERE step IS NULL AND contains(name, ?)",
                    [TASK_SEPARATOR], ["run_id", "name", "value"])
    if scores.empty:
        return frame
    scores = scores[scores["name"].map(is_task_score).astype(bool) & scores["run_id"].isin(frame["run_id"])]
    if scores.empty:
        return frame
    wide = scores.pivot_table(index="run_id", columns="name", values="value", aggfunc="last")
    return frame.join(wide[sorted(wide.columns)], on="run_id")



def with_leases(store: Store | str | Path | None, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (runs) with the claims of their keys: ``lease_host``, ``lease_age_s`` (seconds since the worker
    last renewed its lease) and ``lease_expired``; None where a run is not running or its key has no claim."""
    from datetime import datetime, timezone

    from workbench.store import claims

    now = datetime.now(timezone.utc).replace(tzinfo=None)
    held = {}
    if not frame.empty and (frame["status"] == "running").any():
        for claim in claims.claims(_store(store)):  # oldest first: a live claim outranks a dead one of the same key
            if claim.key not in held or held[claim.key].dead(now):
                held[claim.key] = claim
    found = [held.get(key) if state == "running" else None for key, state in zip(frame["key"], frame["status"])]
    return frame.assign(lease_host=[c.host if c else None for c in found],
                        lease_age_s=[round((now - c.renewed_at).total_seconds(), 1) if c else None for c in found],
                        lease_expired=[c.dead(now) if c else None for c in found])


def run(store: Store | str | Path | None, run_id: str) -> dict[str, Any]:
    """One run (a unique prefix of its id is enough): its row, parsed spec, final metrics, the spec's ``tags``,
    the ``user_tags`` added since and the user's ``note``."""
    found = _frame(store, "SELECT * FROM runs WHERE starts_with(run_id, ?) ORDER BY created_at DESC", [run_id])
    if found.empty:
        raise StoreError(f"no run matches {run_id!r}", "list runs with `workbench ls`")
    if len(found) > 1:
        raise StoreError(f"{len(found)} runs match {run_id!r}", "give more characters of the run id")
    row = found.iloc[0].to_dict()
    row["spec"] = json.loads(row["spec"])
    row["identity"] = json.loads(row["identity"]) if row.get("identity") else {}
    notes = run_notes(store, [row["run_id"]])
    row["tags"] = list(notes["spec_tags"].iloc[0]) if len(notes) else []
    row["user_tags"] = list(notes["user_tags"].iloc[0]) if len(notes) else []
    row["note"] = notes["note"].iloc[0] if len(notes) else None
    final = metrics(store, [row["run_id"]])
    row["metrics"] = (final.sort_values("step", na_position="first").groupby("name")["value"].last().to_dict()
                      if not final.empty else {})
    return row


def metrics(store: Store | str | Path | None = None, run_ids: Iterable[str] | None = None,
            names: Iterable[str] | None = None) -> pd.DataFrame:
    """Long table (run_id, name, value, step): every metric, over steps where logged per step."""
    where, params = [], []
    if run_ids is not None:
        where.append("run_id IN (SELECT unnest(?))")
        params.append(list(run_ids))
    if names is not None:
        where.append("name IN (SELECT unnest(?))")
        params.append(list(names))
    sql = (f"SELECT run_id, name, value, step FROM metrics {'WHERE ' + ' AND '.join(where) if where else ''} "
           "ORDER BY run_id, name, step")
    return _frame(store, sql, params, ["run_id", "name", "value", "step"])


def layer_stats(store: Store | str | Path | None = None, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Per-layer rows: shape, target and achieved sparsity, N:M validity, reconstruction error, extras."""
    where, params = "", []
    if run_ids is not None:
        where, params = "WHERE run_id IN (SELECT unnest(?))", [list(run_ids)]
    columns = ["run_id", "layer", "block", "shape", "numel", "target_sparsity", "achieved_sparsity", "pattern",
               "nm_valid", "recon_error", "extra"]
    return _frame(store, f"SELECT {', '.join(columns)} FROM layer_stats {where} ORDER BY run_id, block, layer",
                  params, columns)


def mask_index(store: Store | str | Path | None, run_id: str) -> pd.DataFrame:
    """The masks a run stored: (layer, step, hash, rows, cols, kept)."""
    return _frame(store, "SELECT layer, step, hash, rows, cols, kept FROM masks WHERE run_id = ? ORDER BY layer, step",
                  [run_id], ["layer", "step", "hash", "rows", "cols", "kept"])


def load_masks(store: Store | str | Path | None, run_id: str, layers: Iterable[str] | None = None,
               step: int | None = None) -> dict[str, torch.Tensor]:
    """A run's masks as bool tensors (True = kept), at ``step`` (default: each layer's last step)."""
    where, params = ["m.run_id = ?"], [run_id]
    if layers is not None:
        where.append("m.layer IN (SELECT unnest(?))")
        params.append(list(layers))
    if step is not None:
        where.append("m.step = ?")
        params.append(step)
    sql = f"""SELECT m.layer, m.step, m.rows, m.cols, b.data FROM masks m
              JOIN (SELECT hash, any_value(data) AS data FROM mask_blobs GROUP BY hash) b ON b.hash = m.hash
              WHERE {' AND '.join(where)} ORDER BY m.layer, m.step"""
    frame = _frame(store, sql, params, ["layer", "step", "rows", "cols", "data"])
    out: dict[str, torch.Tensor] = {}
    for row in frame.itertuples(index=False):
        out[row.layer] = decode_mask(bytes(row.data), int(row.rows), int(row.cols))  # later steps overwrite
    return out


def load_mask(store: Store | str | Path | None, run_id: str, layer: str, step: int | None = None) -> torch.Tensor:
    masks = load_masks(store, run_id, [layer], step)
    if layer not in masks:
        raise StoreError(f"run {run_id} has no mask for layer {layer!r}", "list its layers with queries.mask_index")
    return masks[layer]


def divergence(store: Store | str | Path | None = None, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """SAD / IoU rows: between two runs' masks, or between steps of one run (run_a == run_b)."""
    where, params = "", []
    if run_ids is not None:
        ids = list(run_ids)
        where, params = "WHERE run_a IN (SELECT unnest(?)) OR run_b IN (SELECT unnest(?))", [ids, ids]
    columns = ["run_a", "run_b", "step_a", "step_b", "layer", "sad", "numel", "sad_fraction", "iou"]
    return _frame(store, f"SELECT {', '.join(columns)} FROM divergence {where} ORDER BY run_a, run_b, step_b, layer",
                  params, columns)


def kernel_results(store: Store | str | Path | None = None, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per measured kernel case (see README, Database tables)."""
    where, params = "", []
    if run_ids is not None:
        where, params = "WHERE run_id IN (SELECT unnest(?))", [list(run_ids)]
    return _frame(store, f"SELECT * FROM kernel_results {where}", params, ["run_id"])


def run_specs(store: Store | str | Path | None = None, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """(run_id, kind, spec): each run's canonical spec JSON, for spec diffs and grouping by any spec field."""
    where, params = "", []
    if run_ids is not None:
        where, params = "WHERE run_id IN (SELECT unnest(?))", [list(run_ids)]
    return _frame(store, f"SELECT run_id, kind, spec FROM runs {where} ORDER BY created_at DESC", params,
                  ["run_id", "kind", "spec"])


def mask_runs(store: Store | str | Path | None = None) -> pd.DataFrame:
    """Runs that stored masks: (run_id, layers, snapshots, first_step, last_step)."""
    return _frame(store, """SELECT run_id, count(DISTINCT layer) AS layers, count(DISTINCT step) AS snapshots,
                                   min(step) AS first_step, max(step) AS last_step
                            FROM masks GROUP BY run_id ORDER BY run_id""",
                  (), ["run_id", "layers", "snapshots", "first_step", "last_step"])


def schema_version(store: Store | str | Path | None = None) -> int:
    return _store(store).schema_version()
