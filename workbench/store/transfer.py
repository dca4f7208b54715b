"""Export runs with every child row to a file, and merge such a file into another store.

An export is a DuckDB file (``*.duckdb``) or a folder of Parquet files (one per table) with a
``manifest`` that names its schema version. Import merges it into a store in one transaction and
never duplicates a key: a run whose ``run_id`` is already there is skipped; an incoming finished run
whose key already has a finished run in the store is skipped (or, with ``replace``, replaces it);
runs of the key that never finished are replaced. Mask blobs are content-addressed, so a blob the
store already holds is not copied twice. Only finished runs cross over.

The point is moving results between machines: run the GPU suite on a GPU host, bring the export
back, and read its figures beside the local ones.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import duckdb

from workbench.errors import StoreError
from workbench.store import Store
from workbench.store.schema import LATEST_VERSION

FORMAT_VERSION = 1
# (table, SQL that picks the rows belonging to the runs in the temporary table `chosen`)
TABLES: dict[str, str] = {
    "runs": "SELECT * FROM runs WHERE run_id IN (SELECT run_id FROM chosen)",
    "metrics": "SELECT * FROM metrics WHERE run_id IN (SELECT run_id FROM chosen)",
    "layer_stats": "SELECT * FROM layer_stats WHERE run_id IN (SELECT run_id FROM chosen)",
    "masks": "SELECT * FROM masks WHERE run_id IN (SELECT run_id FROM chosen)",
    "mask_blobs": "SELECT * FROM mask_blobs WHERE hash IN (SELECT hash FROM masks WHERE run_id IN (SELECT run_id FROM chosen))",
    "divergence": "SELECT * FROM divergence WHERE run_a IN (SELECT run_id FROM chosen) AND run_b IN (SELECT run_id FROM chosen)",
    "kernel_results": "SELECT * FROM kernel_results WHERE run_id IN (SELECT run_id FROM chosen)",
}


class TransferError(StoreError):
    """An export that cannot be written or an import file that cannot be read."""


@dataclass
class ExportSummary:
    path: str
    runs: int
    rows: dict[str, int] = field(default_factory=dict)


@dataclass
class ImportSummary:
    imported: list[str] = field(default_factory=list)
    skipped_present: list[str] = field(default_factory=list)  # same run_id already in the store
    skipped_key: list[str] = field(default_factory=list)  # the key already has a finished run
    replaced: list[str] = field(default_factory=list)  # local runs of the key that made way
    rows: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _is_duckdb_file(path: Path) -> bool:
    return path.suffix in (".duckdb", ".db")


def export_store(store: Store, target: str | Path, run_ids: Iterable[str] | None = None,
                 kind: str | None = None) -> ExportSummary:
    """Write the finished runs (all, or these ids / this kind) and all their child rows to ``target``:
    a ``.duckdb`` file, or otherwise a folder of Parquet files."""
    target = Path(target)
    if target.exists() and (target.is_file() or any(target.iterdir())):
        raise TransferError(f"{target} already exists", "choose a new file or an empty folder")
    where, params = ["status = 'finished'"], []
    if run_ids is not None:
        where.append("run_id IN (SELECT unnest(?))")
        params.append(list(run_ids))
    if kind is not None:
        where.append("kind = ?")
        params.append(kind)
    with tempfile.TemporaryDirectory(prefix="workbench-export-") as tmp:
        folder = Path(tmp) if _is_duckdb_file(target) else target
        folder.mkdir(parents=True, exist_ok=True)
        rows: dict[str, int] = {}
        with store.read() as con:
            if con is None:
                raise TransferError(f"store {store.path} does not exist", "give the store with --store")
            version = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
            con.execute(f"CREATE TEMP TABLE chosen AS SELECT run_id FROM runs WHERE {' AND '.join(where)}", params)
            for table, sql in TABLES.items():
                rows[table] = con.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
                con.execute(f"COPY ({sql}) TO {_quote(folder / (table + '.parquet'))} (FORMAT parquet)")
        manifest = {"format": FORMAT_VERSION, "schema_version": version, "rows": rows,
                    "created_at": datetime.now(timezone.utc).isoformat(), "host": platform.node(),
                    "filters": {"run_ids": list(run_ids) if run_ids is not None else None, "kind": kind}}
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if _is_duckdb_file(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            out = duckdb.connect(str(target))
            try:
                for table in TABLES:
                    out.execute(f"CREATE TABLE {table} AS SELECT * FROM read_parquet({_quote(folder / (table + '.parquet'))})")
                out.execute("CREATE TABLE manifest (data VARCHAR)")
                out.execute("INSERT INTO manifest VALUES (?)", [json.dumps(manifest)])
            finally:
                out.close()
    return ExportSummary(str(target), rows["runs"], rows)


def _unpack(source: Path, folder: Path) -> dict:
    """Parquet files of every table of an export (a DuckDB export is copied out first); its manifest."""
    if not source.exists():
        raise TransferError(f"{source} does not exist", "give the path of a file or folder written by `workbench export`")
    if source.is_dir():
        try:
            manifest = json.loads((source / "manifest.json").read_text())
        except (OSError, ValueError):
            raise TransferError(f"{source} has no readable manifest.json", "give a folder written by `workbench export`") from None
        for table in TABLES:
            if not (source / f"{table}.parquet").is_file():
                raise TransferError(f"{source} lacks {table}.parquet", "export it again with `workbench export`")
            shutil.copy(source / f"{table}.parquet", folder / f"{table}.parquet")
        return manifest
    try:
        con = duckdb.connect(str(source), read_only=True)
    except duckdb.Error as err:
        raise TransferError(f"{source} is not a DuckDB export ({str(err).splitlines()[0][:120]})",
                            "give a .duckdb file or a Parquet folder written by `workbench export`") from None
    try:
        manifest = json.loads(con.execute("SELECT data FROM manifest").fetchone()[0])
        for table in TABLES:
            con.execute(f"COPY {table} TO {_quote(folder / (table + '.parquet'))} (FORMAT parquet)")
    except duckdb.Error as err:
        raise TransferError(f"{source} is not a complete export ({str(err).splitlines()[0][:120]})",
                            "export it again with `workbench export`") from None
    finally:
        con.close()
    return manifest


def import_store(store: Store, source: str | Path, replace: bool = False) -> ImportSummary:
    """Merge an export into ``store`` in one transaction (see the module docstring for the rules)."""
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="workbench-import-") as tmp:
        folder = Path(tmp)
        manifest = _unpack(source, folder)
        if manifest.get("schema_version", 0) > LATEST_VERSION:
            raise TransferError(f"{source} has schema v{manifest['schema_version']}, newer than this workbench "
                                f"(v{LATEST_VERSION})", "upgrade the workbench package")

        def parquet(table: str) -> str:
            return f"read_parquet({_quote(folder / (table + '.parquet'))})"

        def merge(con: duckdb.DuckDBPyConnection) -> ImportSummary:
            summary = ImportSummary()
            incoming = con.execute(f"SELECT run_id, key FROM {parquet('runs')} WHERE status = 'finished' "
                                   "ORDER BY finished_at").fetchall()
            chosen: list[str] = []
            for run_id, key in incoming:
                if con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]:
                    summary.skipped_present.append(run_id)
                    continue
                local = con.execute("SELECT run_id, status FROM runs WHERE key = ?", [key]).fetchall()
                if any(status == "finished" for _, status in local) and not replace:
                    summary.skipped_key.append(run_id)
                    continue
                for old, _ in local:
                    Store._delete_run_rows(con, old)
                    summary.replaced.append(old)
                chosen.append(run_id)
            summary.imported = chosen
            con.execute("CREATE OR REPLACE TEMP TABLE chosen (run_id VARCHAR)")
            if chosen:
                con.executemany("INSERT INTO chosen VALUES (?)", [[r] for r in chosen])
            for table in TABLES:
                local_columns = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
                source_columns = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {parquet(table)}").fetchall()}
                columns = ", ".join(c for c in local_columns if c in source_columns)
                rows = f"SELECT {columns} FROM {parquet(table)}"
                if table == "mask_blobs":  # content-addressed: a blob the store holds is not copied again
                    sql = (f"{rows} WHERE hash IN (SELECT hash FROM {parquet('masks')} WHERE run_id IN "
                           "(SELECT run_id FROM chosen)) AND hash NOT IN (SELECT hash FROM mask_blobs)")
                elif table == "divergence":
                    sql = (f"{rows} WHERE (run_a IN (SELECT run_id FROM chosen) OR run_b IN (SELECT run_id FROM chosen)) "
                           "AND run_a IN (SELECT run_id FROM runs) AND run_b IN (SELECT run_id FROM runs)")
                else:
                    sql = f"{rows} WHERE run_id IN (SELECT run_id FROM chosen)"
                before = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                con.execute(f"INSERT INTO {table} ({columns}) {sql}")
                summary.rows[table] = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] - before
            con.execute("DROP TABLE chosen")
            return summary

        store.check_writable()
        return store.transaction(merge)
