"""Export runs with every child row to a file, and merge such a file into another store.

An export is a DuckDB file (``*.duckdb``) or a folder of Parquet files (one per table) with a
``manifest`` that names its schema version. Import merges it into a store in one transaction and
never duplicates a key: a run whose ``run_id`` is already there is skipped; an incoming finished run
whose key already has a finished run in the store is skipped (or, with ``replace``, replaces it);
runs of the key that never finished are replaced. Mask blobs are content-addressed, so a blob the
store already holds is not copied twice. Only finished runs cross over.

An import reads and checks the whole export before it touches the store (the manifest, every table
readable, the columns the store needs present, every value of the store's type and NOT NULL where the
schema says so), so a damaged or foreign file is refused with one line and the store stays as it was.

The point is moving results between machines: run the GPU suite on a GPU host, bring the export
back, and read its figures beside the local ones.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import duckdb

from workbench.errors import StoreError
from workbench.store import Store, connect_duckdb, foreign_file
from workbench.store.schema import LATEST_VERSION, MIGRATIONS

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


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:160]


def cannot_write(target: Path, err: BaseException) -> TransferError:
    reason = err.strerror if isinstance(err, OSError) and err.strerror else _first_line(err)
    return TransferError(f"{target} cannot be written ({reason})", "choose a writable path for the export")


def export_store(store: Store, target: str | Path, run_ids: Iterable[str] | None = None,
                 kind: str | None = None) -> ExportSummary:
    """Write the finished runs (all, or these ids / this kind) and all their child rows to ``target``:
    a ``.duckdb`` file, or otherwise a folder of Parquet files. A failed export leaves nothing behind."""
    target = Path(target)
    if target.exists() and (target.is_file() or any(target.iterdir())):
        raise TransferError(f"{target} already exists", "choose a new file or an empty folder")
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise TransferError(f"{parent} is a file, not a folder", "choose a path inside a folder for the export")
    where, params = ["status = 'finished'"], []
    if run_ids is not None:
        where.append("run_id IN (SELECT unnest(?))")
        params.append(list(run_ids))
    if kind is not None:
        where.append("kind = ?")
        params.append(kind)
    # what a failed export removes again: the file (and its WAL) or folders it made, or what it put in an empty folder
    made = [] if target.exists() else [p for p in (target, *target.parents) if not p.exists()]
    wal = target.with_name(target.name + ".wal")
    made += [wal] if _is_duckdb_file(target) and not wal.exists() else []
    emptied = target.is_dir()  # an empty folder the user gave: what the export put in it goes
    try:
        with tempfile.TemporaryDirectory(prefix="workbench-export-") as tmp, store.read() as con:
            if con is None:
                raise TransferError(f"store {store.path} does not exist", "give the store with --store")
            folder = Path(tmp) if _is_duckdb_file(target) else target
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise cannot_write(target, err) from None
            rows: dict[str, int] = {}
            version = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
            con.execute(f"CREATE TEMP TABLE chosen AS SELECT run_id FROM runs WHERE {' AND '.join(where)}", params)
            for table, sql in TABLES.items():
                rows[table] = con.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
                try:
                    con.execute(f"COPY ({sql}) TO {_quote(folder / (table + '.parquet'))} (FORMAT parquet)")
                except duckdb.IOException as err:
                    raise cannot_write(target, err) from None
            manifest = {"format": FORMAT_VERSION, "schema_version": version, "rows": rows,
                        "created_at": datetime.now(timezone.utc).isoformat(), "host": platform.node(),
                        "filters": {"run_ids": list(run_ids) if run_ids is not None else None, "kind": kind}}
            try:
                (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
                if _is_duckdb_file(target):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _write_duckdb_export(folder, target, manifest)
            except (OSError, duckdb.Error) as err:
                raise cannot_write(target, err) from None
    except BaseException:
        for path in made + (list(target.iterdir()) if emptied else []):
            try:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            except OSError:
                pass  # it was never made (its folder is not one)
        raise
    return ExportSummary(str(target), rows["runs"], rows)


def _write_duckdb_export(folder: Path, target: Path, manifest: dict) -> None:
    out = connect_duckdb(target)
    try:
        for table in TABLES:
            out.execute(f"CREATE TABLE {table} AS SELECT * FROM read_parquet({_quote(folder / (table + '.parquet'))})")
        out.execute("CREATE TABLE manifest (data VARCHAR)")
        out.execute("INSERT INTO manifest VALUES (?)", [json.dumps(manifest)])
    finally:
        out.close()


def _unpack(source: Path, folder: Path) -> dict:
    """Parquet files of every table of an export (a DuckDB export is copied out first); its manifest."""
    again = "export it again with `workbench export`"
    if not source.exists():
        raise TransferError(f"{source} does not exist", "give the path of a file or folder written by `workbench export`")
    if source.is_dir():
        try:
            manifest = json.loads((source / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise TransferError(f"{source} has no readable manifest.json",
                                "give a folder written by `workbench export`") from None
        for table in TABLES:
            if not (source / f"{table}.parquet").is_file():
                raise TransferError(f"{source} lacks {table}.parquet", again)
            shutil.copy(source / f"{table}.parquet", folder / f"{table}.parquet")
        return _checked_manifest(source, manifest)
    what = foreign_file(source)
    if what:
        raise TransferError(f"{source} is {what}, not an export",
                            "give a .duckdb file or a Parquet folder written by `workbench export`")
    try:
        con = connect_duckdb(source, read_only=True)
    except duckdb.Error as err:
        raise TransferError(f"{source} is not a DuckDB export ({_first_line(err)})",
                            "give a .duckdb file or a Parquet folder written by `workbench export`") from None
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "manifest" not in tables and "schema_version" in tables:
            raise TransferError(f"{source} is a workbench store, not an export",
                                f"export its runs first: `workbench export OUT.duckdb --store {source}`")
        row = con.execute("SELECT data FROM manifest").fetchone()
        manifest = json.loads(row[0]) if row and isinstance(row[0], str) else None
        for table in TABLES:
            con.execute(f"COPY {table} TO {_quote(folder / (table + '.parquet'))} (FORMAT parquet)")
    except duckdb.Error as err:
        raise TransferError(f"{source} is not a complete export ({_first_line(err)})", again) from None
    except ValueError:
        raise TransferError(f"{source} has a manifest that is not JSON", again) from None
    finally:
        con.close()
    return _checked_manifest(source, manifest)


def _checked_manifest(source: Path, manifest: object) -> dict:
    again = "export it again with `workbench export`"
    if not isinstance(manifest, dict):
        raise TransferError(f"{source} has a manifest that is not a JSON object", again)
    version = manifest.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise TransferError(f"{source} has a manifest whose schema_version is {version!r}, not a version number", again)
    if version > LATEST_VERSION:
        raise TransferError(f"{source} has schema v{version}, newer than this workbench (v{LATEST_VERSION})",
                            "upgrade the workbench package")
    form = manifest.get("format", FORMAT_VERSION)
    if isinstance(form, bool) or not isinstance(form, int) or not 1 <= form <= FORMAT_VERSION:
        raise TransferError(f"{source} has export format {form!r}; this workbench reads format {FORMAT_VERSION}",
                            "upgrade the workbench package, or export again with this one")
    return manifest


# Columns an import needs beyond the schema's NOT NULL ones (the merge orders incoming runs by them).
NEEDED_COLUMNS = {"runs": {"finished_at"}}


def _conform(source: Path, folder: Path) -> None:
    """Check every table of an unpacked export against this workbench's schema and rewrite it to exactly
    the store's columns and types (columns an older schema lacked become NULL). Every row is read here,
    so a damaged file fails now, before the store is opened."""
    again = "export it again with `workbench export`"
    con = connect_duckdb()
    try:
        for _, _, statements in MIGRATIONS:  # the latest schema, empty, in memory
            for statement in statements:
                con.execute(statement)
        for table in TABLES:
            file = folder / f"{table}.parquet"
            try:
                present = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({_quote(file)})").fetchall()]
            except duckdb.Error as err:
                raise TransferError(f"{source}: {table} is not a readable Parquet table "
                                    f"({_first_line(err).replace(str(file), table + '.parquet')})", again) from None
            columns = con.execute("SELECT column_name, is_nullable FROM duckdb_columns() WHERE database_name = "
                                  "current_database() AND table_name = ? ORDER BY column_index", [table]).fetchall()
            needed = {name for name, nullable in columns if not nullable} | NEEDED_COLUMNS.get(table, set())
            missing = sorted(needed - set(present))
            if missing:
                raise TransferError(f"{source}: {table} lacks the column(s) {', '.join(missing)}", again)
            common = ", ".join(f'"{name}"' for name, _ in columns if name in present)
            try:
                con.execute(f"INSERT INTO {table} ({common}) SELECT {common} FROM read_parquet({_quote(file)})")
            except duckdb.Error as err:
                raise TransferError(f"{source}: {table} does not fit the store's schema ({_first_line(err)})",
                                    again) from None
            conformed = folder / f"{table}.conformed.parquet"
            con.execute(f"COPY {table} TO {_quote(conformed)} (FORMAT parquet)")
            os.replace(conformed, file)
    finally:
        con.close()


def import_store(store: Store, source: str | Path, replace: bool = False) -> ImportSummary:
    """Merge an export into ``store`` in one transaction (see the module docstring for the rules)."""
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="workbench-import-") as tmp:
        folder = Path(tmp)
        _unpack(source, folder)
        _conform(source, folder)

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
