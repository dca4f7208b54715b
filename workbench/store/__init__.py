"""The result store: one DuckDB database that many processes (and machines) share.

Two backends run the same schema and queries:

- a DuckDB file (the default, ``store/workbench.duckdb``). A DuckDB file admits one writing process and,
  while it writes, no readers. So a writer opens a connection only for one short transaction and
  retries while another process holds the lock; readers open a read-only connection per query.
- DuckLake with a PostgreSQL catalog (``ducklake:postgres:dbname=lake host=...``): many writers on many
  machines; the data files live under a shared data path. Conflicting commits are retried.

A run is complete only when ``finish_run``'s transaction commits: a killed job leaves a ``running`` (or
``failed``) row, never a finished-looking run.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import duckdb

from workbench.errors import StoreBusyError, StoreError
from workbench.faults import faultpoint
from workbench.records import JobOutput
from workbench.store.masks import ENCODING, encode_mask
from workbench.store.schema import LATEST_VERSION, MIGRATIONS, RUN_CHILD_TABLES

DEFAULT_STORE = Path("store") / "workbench.duckdb"
LAKE_PREFIX = "ducklake:"
T = TypeVar("T")
# Settings of every DuckDB connection the project opens: no extension is downloaded or loaded behind our
# back (the lake loads the ones the project ships, by path), and a table that is missing is an error,
# never a look-up of a Python variable of the same name (DuckDB's replacement scans).
DUCKDB_CONFIG: dict[str, Any] = {"autoinstall_known_extensions": False, "autoload_known_extensions": False,
                                 "python_enable_replacements": False}
NOT_A_STORE_FIX = "point --store (or WORKBENCH_STORE) at a workbench store, or at a new path"


# Settings DuckDB takes only per connection (``SET``), not in the config of ``duckdb.connect``.
SESSION_SETTINGS = {"enable_progress_bar", "enable_progress_bar_print"}


def connect_duckdb(path: str | Path = ":memory:", read_only: bool = False, **config: Any) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the project's settings (``DUCKDB_CONFIG``) and ``config``; every module
    connects through here."""
    session = {name: config.pop(name) for name in list(config) if name in SESSION_SETTINGS}
    con = duckdb.connect(str(path), read_only=read_only, config={**DUCKDB_CONFIG, **config})
    for name, value in session.items():
        con.execute(f"SET {name} = {sql_literal(str(value).lower() if isinstance(value, bool) else str(value))}")
    return con


def foreign_file(path: Path) -> str | None:
    """What ``path`` is when it is there but no DuckDB database (read from its first bytes), else None."""
    if path.is_dir():
        return "a directory"
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return None  # missing or unreadable: opening it says why
    if head[8:12] == b"DUCK":
        return None
    if not head:
        return "an empty file"
    if head.startswith(b"SQLite format 3\x00"):
        return "a SQLite database"
    if head.startswith(b"PAR1"):
        return "a Parquet file"
    return "a file of another format"


def default_store_path() -> Path:
    return Path(os.environ.get("WORKBENCH_STORE", DEFAULT_STORE))


def is_lake_url(location: object) -> bool:
    """True for a shared DuckLake store's URL (``ducklake:...``), False for a DuckDB file's path."""
    return str(location).startswith(LAKE_PREFIX)


def sql_literal(text: str) -> str:
    """``text`` as a SQL string literal (quotes doubled), for the few statements that take no parameters."""
    return "'" + str(text).replace("'", "''") + "'"


def _is_lock_error(err: Exception) -> bool:
    text = str(err).lower()
    # "different configuration": another thread of this process has the file open in the other mode
    # (read-only against read-write: a lease renewing while the job reads); it closes it within a moment.
    # "unique file handle conflict": two threads of this process opened the file at the same instant.
    return ("could not set lock" in text or "database is locked" in text or "lock on file" in text
            or "different configuration than existing connections" in text or "unique file handle conflict" in text)


def _is_catalog_init_race(err: Exception) -> bool:
    """Another writer is creating the same new DuckLake catalog (its tables appear at its commit)."""
    text = str(err)
    return "Failed to initialize DuckLake" in text or "already exists" in text or "duplicate key" in text


def _is_conflict(err: Exception) -> bool:
    text = str(err).lower()
    return "conflict" in text or "database is locked" in text or "serializ" in text


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def process_gone(pid: Any, since: Any = None) -> bool:
    """True when process ``pid`` of this host no longer runs: it is gone, a zombie, or the pid now belongs
    to a process that started after ``since`` (a naive UTC datetime: when the run was registered)."""
    import psutil  # deferred: only gc and the run listing ask

    try:
        process = psutil.Process(int(pid))
        if process.status() == psutil.STATUS_ZOMBIE:
            return True
        started = process.create_time()
    except psutil.NoSuchProcess:
        return True
    except (psutil.Error, TypeError, ValueError, OverflowError):
        return False  # no pid, or not ours to inspect: assume it still runs
    if since is None:
        return False
    try:
        registered = since.replace(tzinfo=timezone.utc).timestamp()
    except (AttributeError, TypeError, ValueError, OverflowError):
        return False
    return started > registered + 2.0  # the pid was reused (process start times are exact to about 1 s)


def is_stale(status: Any, host: Any, pid: Any, created_at: Any) -> bool:
    """A ``running`` row left by a killed job: registered on this host by a process that is gone."""
    return status == "running" and host == platform.node() and pid is not None and process_gone(pid, created_at)


def check_deletable(run_id: str, status: str | None) -> None:
    """Refuse deleting a run that is not there (``status`` None) or still running."""
    if status is None:
        raise StoreError(f"no run {run_id}", "list runs with `workbench ls`")
    if status == "running":
        raise StoreError(f"run {run_id} is running and cannot be deleted",
                         "wait for it to end, or stop it; a running row a killed job left goes with `workbench gc`")


@dataclass
class GarbageSummary:
    """What `Store.collect_garbage` removed."""

    stale_runs: list[str] = field(default_factory=list)
    mask_blobs: int = 0
    checkpoints: list[str] = field(default_factory=list)


_FILE_LOCKS: dict[str, threading.RLock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def _file_lock(path: Path) -> threading.RLock:
    """One lock per DuckDB file for all the threads of this process (see ``Store._one_thread``)."""
    key = os.path.realpath(path)
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(key, threading.RLock())


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back if a transaction is still open (a failed COMMIT has already rolled back)."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


def _extension_file(name: str) -> Path:
    """The extension binary shipped in a duckdb-extension-* wheel (loaded by path: no network needed)."""
    import importlib.util

    package = {"ducklake": "duckdb_extension_ducklake", "postgres_scanner": "duckdb_extension_postgres_scanner",
               "sqlite_scanner": "duckdb_extension_sqlite_scanner"}[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise StoreError(f"the DuckDB {name} extension is not installed",
                         f"run `pip install {package.replace('_', '-')}=={duckdb.__version__}`")
    folder = Path(list(spec.submodule_search_locations)[0]) / "extensions"
    found = sorted(folder.glob(f"v{duckdb.__version__}/{name}.duckdb_extension"))
    if not found:
        raise StoreError(f"no {name} extension for DuckDB {duckdb.__version__} in {folder}",
                         f"install duckdb and {package.replace('_', '-')} at the same version")
    return found[0]


class _CatalogInitRace(Exception):
    """Attaching a new DuckLake catalog failed because another writer was initialising it."""


class Store:
    """One result database. ``Store(location)`` never opens a connection until it is used.

    ``location``: a DuckDB file path (default ``WORKBENCH_STORE`` or store/workbench.duckdb), or a
    DuckLake URL ``ducklake:postgres:<libpq conninfo>`` / ``ducklake:sqlite:<file>`` whose data files go
    to ``data_path`` (default ``WORKBENCH_LAKE_DATA`` or store/lake-data/; share it between machines).
    """

    def __init__(self, path: str | Path | None = None, busy_timeout_s: float = 120.0,
                 data_path: str | Path | None = None):
        location = str(path) if path is not None else str(default_store_path())
        self.is_lake = location.startswith(LAKE_PREFIX)
        self.location = location
        self.path = None if self.is_lake else Path(location)
        self.data_path = Path(data_path or os.environ.get("WORKBENCH_LAKE_DATA", Path("store") / "lake-data"))
        self.busy_timeout_s = busy_timeout_s
        self._migrated = False
        self._checked = False  # check_writable passed (probed once per Store)
        self._verified = False  # the file holds a workbench schema
        self._lake_connections: dict[bool, duckdb.DuckDBPyConnection] = {}

    def __repr__(self) -> str:
        return f"Store({self.location!r})"

    @property
    def artifacts_dir(self) -> Path:
        """Folder for files kept beside the database (checkpoints): next to the file, or the lake's data path."""
        return self.data_path if self.is_lake else self.path.parent

    def exists(self) -> bool:
        return self.is_lake or self.path.exists()

    # ------------------------------------------------------------ connections
    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if self.is_lake:
            return self._connect_lake(read_only)
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.01
        while True:
            try:
                return connect_duckdb(self.path, read_only=read_only, enable_progress_bar=False)
            except (duckdb.IOException, duckdb.ConnectionException, duckdb.BinderException) as err:
                if not _is_lock_error(err):
                    what = foreign_file(self.path)
                    if what:
                        raise StoreError(f"store {self.path} is {what}, not a DuckDB database",
                                         NOT_A_STORE_FIX) from None
                    raise StoreError(f"store {self.path} cannot be opened ({str(err).splitlines()[0][:160]})",
                                     "check the path and its permissions, or set --store / WORKBENCH_STORE") from None
                if time.monotonic() > deadline:
                    raise StoreBusyError(f"store {self.path} stayed locked by another process for {self.busy_timeout_s:.0f} s",
                                         "wait for the running job to finish, or raise the timeout") from None
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)

    def _connect_lake(self, read_only: bool) -> duckdb.DuckDBPyConnection | None:
        """A cursor on this process's attached lake (attaching costs ~0.5 s, so it is done once)."""
        base = self._lake_connections.get(read_only)
        if base is None:
            base = self._attach_lake(read_only)
            if base is None:
                return None
            self._lake_connections[read_only] = base
        cursor = base.cursor()
        cursor.execute("USE lake")
        cursor.execute("SET enable_progress_bar = false")  # a session setting: each cursor needs it (no bar on stdout)
        return cursor

    def _attach_lake(self, read_only: bool) -> duckdb.DuckDBPyConnection | None:
        """Attach the catalog. A new catalog is initialised by the first ATTACH in one PostgreSQL
        transaction; writers racing to attach it at once fail on its tables (already exists / duplicate
        key) until it commits, so they wait and attach again, and then find it initialised."""
        deadline = time.monotonic() + min(self.busy_timeout_s, 60.0)
        attempt = 0
        while True:
            try:
                return self._attach_lake_once(read_only)
            except _CatalogInitRace as race:
                attempt += 1
                if time.monotonic() > deadline:
                    raise StoreError(f"shared store {self.location} cannot be attached ({race})",
                                     "check that the catalog database exists and is reachable, and the data path"
                                     ) from None
                time.sleep(min(0.05 * 2 ** attempt, 1.0) * (0.5 + random.random()))

    def _attach_lake_once(self, read_only: bool) -> duckdb.DuckDBPyConnection | None:
        catalog = self.location[len(LAKE_PREFIX):]
        con = connect_duckdb(":memory:", extension_directory=tempfile.gettempdir(), enable_progress_bar=False)
        try:
            con.execute(f"LOAD {sql_literal(_extension_file('ducklake'))}")
            scanner = {"postgres": "postgres_scanner", "sqlite": "sqlite_scanner"}.get(catalog.split(":", 1)[0])
            if scanner:
                con.execute(f"LOAD {sql_literal(_extension_file(scanner))}")
            self.data_path.mkdir(parents=True, exist_ok=True)
            # ATTACH takes no bound parameters: both strings enter as quoted SQL literals
            options = f"DATA_PATH {sql_literal(f'{self.data_path.resolve()}/')}" + (", READ_ONLY" if read_only else "")
            con.execute(f"ATTACH {sql_literal(self.location)} AS lake ({options})")
            con.execute("USE lake")
        except duckdb.Error as err:
            con.close()
            if read_only and "does not exist" in str(err):
                return None  # a catalog no job has written yet: readers see an empty store
            if _is_catalog_init_race(err):
                raise _CatalogInitRace(str(err).splitlines()[0][:160]) from None
            raise StoreError(f"shared store {self.location} cannot be attached ({str(err).splitlines()[0][:160]})",
                             "check that the catalog database exists and is reachable, and the data path") from None
        return con

    def check_writable(self) -> None:
        """Fail early (before any work) when the store cannot be created or written, or when the file is
        there but is no workbench store. Permission bits are not trusted (root passes them, and /proc
        or a read-only mount refuses anyway): a file is really created in the folder and removed."""
        if self.is_lake or self._checked:
            return
        with self._one_thread():  # the probes below open and close the file: see _one_thread
            self._check_writable()

    def _one_thread(self) -> Any:
        """Held while a thread of this process has a DuckDB file open (a connection, or a probe of the file).
        DuckDB locks the file with POSIX record locks, which belong to the process and are all dropped
        when any descriptor of the file closes; so a second thread opening the file (another connection,
        a probe) while one holds it would let another process in to write at the same time and corrupt
        the file. A lease renewing in a background thread is such a second thread."""
        return nullcontext() if self.is_lake else _file_lock(self.path)

    def _check_writable(self) -> None:
        fix = "choose a writable location with --store or WORKBENCH_STORE"
        folder = self.path.parent if str(self.path.parent) else Path(".")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"store folder {folder} cannot be created ({err.strerror})", fix) from None
        what = foreign_file(self.path)
        if what:
            raise StoreError(f"store {self.path} is {what}, not a DuckDB database", NOT_A_STORE_FIX)
        try:
            if self.path.exists():
                open(self.path, "r+b").close()  # opened for writing, nothing written
            handle, probe = tempfile.mkstemp(prefix=".workbench-probe-", dir=folder)  # DuckDB adds a .wal beside it
            os.close(handle)
            os.unlink(probe)
        except OSError as err:
            raise StoreError(f"store {self.path} is not writable ({err.strerror})", fix) from None
        if self.path.exists():
            with self.read():  # refuses a DuckDB file that is not a workbench store
                pass
        self._checked = True

    def _verify(self, con: duckdb.DuckDBPyConnection) -> bool:
        """True when the file store holds the workbench schema, False for a database without tables (a
        new store). A DuckDB file that holds other tables is refused before any query of ours runs on it."""
        if self.is_lake or self._verified:
            return True
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                            "WHERE table_catalog = current_database()").fetchall()}
        if not tables:
            return False
        if "schema_version" not in tables:
            raise StoreError(f"{self.path} is not a workbench store (no schema_version table)", NOT_A_STORE_FIX)
        try:
            con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        except duckdb.Error:  # a foreign table that happens to be called schema_version
            raise StoreError(f"{self.path} is not a workbench store (its schema_version table is another program's)",
                             NOT_A_STORE_FIX) from None
        self._verified = True
        return True

    @contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection inside one transaction: everything or nothing is written.
        (No retry of the body: on a shared store prefer ``transaction``, which retries conflicts.)"""
        with self._one_thread():
            self.check_writable()
            con = self._connect(read_only=False)
            try:
                if not self._migrated:
                    self._migrate(con)
                con.execute("BEGIN TRANSACTION")
                try:
                    yield con
                    con.execute("COMMIT")
                except BaseException:
                    _rollback(con)
                    raise
            finally:
                con.close()

    def transaction(self, body: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``body(con)`` in one transaction; on a shared store a conflicting commit reruns it."""
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.02
        while True:
            try:
                with self.write() as con:
                    return body(con)
            except (duckdb.TransactionException, duckdb.IOException, duckdb.CatalogException) as err:
                if not (self.is_lake and _is_conflict(err)):
                    raise
                if time.monotonic() > deadline:
                    raise StoreBusyError(f"shared store {self.location} kept conflicting for {self.busy_timeout_s:.0f} s",
                                         "retry later, or raise the timeout") from None
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)

    @contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection | None]:
        """A read-only connection, or None when the store does not exist yet (readers show empty tables)."""
        if not self.exists():
            yield None
            return
        with self._one_thread():
            con = self._connect(read_only=True)
            try:
                if con is not None and not self._verify(con):
                    yield None  # a DuckDB file without tables: nothing stored yet
                else:
                    yield con
            finally:
                if con is not None:
                    con.close()

    # ------------------------------------------------------------ schema
    def _migrate(self, con: duckdb.DuckDBPyConnection) -> None:
        for attempt in range(20):
            try:
                self._verify(con)
                con.execute("BEGIN TRANSACTION")
                con.execute("CREATE TABLE IF NOT EXISTS schema_version "
                            "(version INTEGER, description VARCHAR, applied_at TIMESTAMP)")
                current = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
                if current > LATEST_VERSION:
                    con.execute("ROLLBACK")
                    raise StoreError(f"store {self.location} has schema v{current}, newer than this workbench "
                                     f"(v{LATEST_VERSION})", "upgrade the workbench package")
                for version, description, statements in MIGRATIONS:
                    if version > current:
                        for statement in statements:
                            con.execute(statement)
                        con.execute("INSERT INTO schema_version VALUES (?, ?, ?)", [version, description, _now()])
                con.execute("COMMIT")
                break
            except duckdb.Error as err:
                _rollback(con)
                if not (self.is_lake and _is_conflict(err)) or attempt == 19:
                    raise
                time.sleep(0.05 * (attempt + 1) * random.random())
        self._migrated = True

    def schema_version(self) -> int:
        with self.read() as con:
            if con is None:
                return 0
            return con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]

    # ------------------------------------------------------------ run lifecycle
    # The two look-ups of a cached run take their key and run id as quoted literals, not bound parameters:
    # DuckDB imports pandas to bind a Python value (half a second), and a cached run answers without it.
    def finished_run(self, key: str) -> dict[str, Any] | None:
        """The finished run with this key, if any (no write lock taken)."""
        with self.read() as con:
            if con is None:
                return None
            try:
                row = con.execute(
                    f"SELECT run_id, status, wall_s FROM runs WHERE key = {sql_literal(key)} AND status = 'finished' "
                    "ORDER BY finished_at DESC LIMIT 1").fetchone()
            except duckdb.CatalogException:
                return None
        return None if row is None else {"run_id": row[0], "status": row[1], "wall_s": row[2]}

    def final_metrics(self, run_id: str) -> dict[str, float]:
        """Each metric of the run at its last step (where it is logged over steps), by name."""
        with self.read() as con:
            if con is None:
                return {}
            rows = con.execute("SELECT name, arg_max(value, coalesce(step, -1)) FROM metrics "
                               f"WHERE run_id = {sql_literal(run_id)} GROUP BY name ORDER BY name").fetchall()
        return {name: float("nan") if value is None else float(value) for name, value in rows}

    def start_run(self, key: str, kind: str, spec_json: str, summary: dict[str, Any], identity: dict[str, str],
                  name: str | None = None, tags: Sequence[str] = ()) -> str:
        """Register a ``running`` row; ``name`` and ``tags`` are the spec's labels (not in ``spec_json``)."""
        from workbench import __version__

        run_id = f"{key[:10]}-{uuid.uuid4().hex[:6]}"
        self.transaction(lambda con: con.execute(
                """INSERT INTO runs (run_id, key, kind, name, model, data, method, pattern, allocation,
                   target_sparsity, spec, identity, status, created_at, code_version, host, pid, tags)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)""",
                [run_id, key, kind, name, summary.get("model"), summary.get("data"), summary.get("method"),
                 summary.get("pattern"), summary.get("allocation"), summary.get("target_sparsity"), spec_json,
                 json.dumps(identity, sort_keys=True), _now(), __version__, platform.node(), os.getpid(),
                 json.dumps(list(tags)) if tags else None]))
        return run_id

    def fail_run(self, run_id: str, error: str, claim_id: str | None = None) -> None:
        """Mark the run failed unless it already ended (a finished run stays finished); with ``claim_id``,
        release the key's claim in the same transaction."""
        from workbench.store.claims import release_in

        def fail(con: duckdb.DuckDBPyConnection) -> None:
            con.execute("UPDATE runs SET status = 'failed', error = ?, finished_at = ? "
                        "WHERE run_id = ? AND status = 'running'",
                        [error[:4000], _now(), run_id])
            if claim_id is not None:
                release_in(con, claim_id)

        self.transaction(fail)

    def finish_run(self, run_id: str, key: str, output: JobOutput, wall_s: float, claim_id: str | None = None) -> None:
        """One transaction: the run's rows, its masks, the status flip; and older runs of the key go.
        With ``claim_id`` the key's claim is released in it too, and the write is refused
        (``ClaimLostError``) when the claim was taken over meanwhile (workbench/store/claims.py)."""
        from workbench.store.claims import ClaimLostError, release_in
        from workbench.store.notes import carry_notes

        encoded = [(record, encode_mask(record.mask)) for record in output.masks]

        def write_all(con: duckdb.DuckDBPyConnection) -> None:
            if claim_id is not None and not release_in(con, claim_id):
                raise ClaimLostError(f"the lease on key {key[:12]} expired while run {run_id} ran and another "
                                     "worker took the key over", "nothing to do: that worker's run is stored; "
                                     "raise WORKBENCH_LEASE_S if this machine stalls for longer than the lease")
            if con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchone()[0] == 0:
                raise StoreError(f"run {run_id} was replaced by another run of the same key while it ran",
                                 "nothing to do: the other run's results are in the store")
            stale = [r[0] for r in con.execute("SELECT run_id FROM runs WHERE key = ? AND run_id <> ?",
                                               [key, run_id]).fetchall()]
            carry_notes(con, stale, run_id)  # the user's tags and note stay with the key's result
            for old in stale:
                self._delete_run_rows(con, old)
            if output.metrics:
                con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?)",
                                [[run_id, m.name, float(m.value), m.step] for m in output.metrics])
            if output.layers:
                con.executemany(
                    "INSERT INTO layer_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [[run_id, s.layer, s.block, "x".join(map(str, s.shape)), s.numel, s.target_sparsity,
                      s.achieved_sparsity, s.pattern, s.nm_valid, s.recon_error, json.dumps(s.extra)]
                     for s in output.layers])
            if encoded:
                self._write_masks(con, run_id, encoded)
            if output.divergence:
                con.executemany(
                    "INSERT INTO divergence VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [[d.run_a or run_id, d.run_b or run_id, d.step_a, d.step_b, d.layer, d.sad, d.numel,
                      d.sad / d.numel if d.numel else 0.0, d.iou] for d in output.divergence])
            if output.kernel_results:
                self._write_kernel_results(con, run_id, output.kernel_results)
            faultpoint("finish:rows_written")
            con.execute("UPDATE runs SET status = 'finished', error = NULL, finished_at = ?, wall_s = ? WHERE run_id = ?",
                        [_now(), wall_s, run_id])
            faultpoint("finish:status_flipped")

        self.transaction(write_all)

    def _write_masks(self, con: duckdb.DuckDBPyConnection, run_id: str, encoded: list) -> None:
        hashes = sorted({e.hash for _, e in encoded})
        present = {r[0] for r in con.execute("SELECT hash FROM mask_blobs WHERE hash IN (SELECT unnest(?))",
                                             [hashes]).fetchall()}
        new_blobs, seen = [], set(present)
        for _, e in encoded:
            if e.hash not in seen:
                seen.add(e.hash)
                new_blobs.append([e.hash, ENCODING, e.data])
        if new_blobs:
            con.executemany("INSERT INTO mask_blobs VALUES (?, ?, ?)", new_blobs)
        con.executemany("INSERT INTO masks VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [[run_id, r.layer, r.step, e.hash, e.rows, e.cols, e.kept] for r, e in encoded])

    def _write_kernel_results(self, con: duckdb.DuckDBPyConnection, run_id: str, rows: list[dict[str, Any]]) -> None:
        columns = [c[0] for c in con.execute("DESCRIBE kernel_results").fetchall()]
        for row in rows:
            unknown = set(row) - set(columns)
            record = {c: row.get(c) for c in columns}
            record["run_id"] = run_id
            extra = {k: row[k] for k in unknown}
            if extra or isinstance(record.get("extra"), dict):
                record["extra"] = json.dumps({**(record.get("extra") or {}), **extra}, default=str)
            if isinstance(record.get("versions"), dict):
                record["versions"] = json.dumps(record["versions"], sort_keys=True)
            con.execute(f"INSERT INTO kernel_results ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                        [record[c] for c in columns])

    @staticmethod
    def _delete_run_rows(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
        for table, column in RUN_CHILD_TABLES.items():
            con.execute(f"DELETE FROM {table} WHERE {column} = ?", [run_id])
        con.execute("DELETE FROM divergence WHERE run_a = ? OR run_b = ?", [run_id, run_id])
        con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])

    def delete_runs(self, run_ids: Sequence[str]) -> list[str]:
        """Delete these runs (exact ids) with every row that hangs off them, in one transaction; mask blobs
        no other run uses stay until `collect_garbage`. An unknown or running run refuses it all."""
        ids = list(dict.fromkeys(run_ids))
        if ids and not self.exists():
            raise StoreError(f"no run {ids[0]} (store {self.location} does not exist)", "list runs with `workbench ls`")

        def delete(con: duckdb.DuckDBPyConnection) -> list[str]:
            status = dict(con.execute("SELECT run_id, status FROM runs WHERE run_id IN (SELECT unnest(?))",
                                      [ids]).fetchall())
            for run_id in ids:
                check_deletable(run_id, status.get(run_id))
            for run_id in ids:
                self._delete_run_rows(con, run_id)
            return ids

        return self.transaction(delete) if ids else []

    def add_divergence(self, records: list) -> None:
        """Cache on-demand divergence rows (SAD/IoU between two runs) in their own short transaction."""
        self.transaction(lambda con: con.executemany(
            "INSERT INTO divergence VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [[d.run_a, d.run_b, d.step_a, d.step_b, d.layer, d.sad, d.numel,
              d.sad / d.numel if d.numel else 0.0, d.iou] for d in records]))

    def stale_runs(self) -> list[str]:
        """Ids of ``running`` rows of this host whose process is gone (a killed job; see `is_stale`)."""
        with self.read() as con:
            if con is None:
                return []
            rows = con.execute("SELECT run_id, status, host, pid, created_at FROM runs WHERE status = 'running' "
                               "AND host = ?", [platform.node()]).fetchall()
        return [r[0] for r in rows if is_stale(*r[1:])]

    def collect_garbage(self) -> GarbageSummary:
        """One transaction: delete the stale ``running`` rows of this host (see `is_stale`) with their
        child rows, then mask blobs no run refers to, and the checkpoint folders
        (``<store dir>/checkpoints/<key>/``) of keys that finished and have no run in progress."""
        self.check_writable()
        if not self.exists():
            return GarbageSummary()

        def collect(con: duckdb.DuckDBPyConnection) -> GarbageSummary:
            summary = GarbageSummary()
            running = con.execute("SELECT run_id, status, host, pid, created_at FROM runs WHERE status = 'running' "
                                  "AND host = ?", [platform.node()]).fetchall()
            for row in running:
                if is_stale(*row[1:]):
                    self._delete_run_rows(con, row[0])
                    summary.stale_runs.append(row[0])
            summary.mask_blobs = con.execute(
                "SELECT count(*) FROM mask_blobs WHERE hash NOT IN (SELECT hash FROM masks)").fetchone()[0]
            con.execute("DELETE FROM mask_blobs WHERE hash NOT IN (SELECT hash FROM masks)")
            folder = self.artifacts_dir / "checkpoints"
            if folder.is_dir():
                # inside the transaction: a file store's lock keeps a new run of the key from starting meanwhile
                done = {r[0] for r in con.execute(
                    "SELECT DISTINCT key FROM runs WHERE status = 'finished' AND key NOT IN "
                    "(SELECT key FROM runs WHERE status = 'running')").fetchall()}
                for path in sorted(folder.iterdir()):
                    if path.is_dir() and path.name in done:
                        shutil.rmtree(path, ignore_errors=True)
                        summary.checkpoints.append(path.name)
            return summary

        return self.transaction(collect)

    def gc_blobs(self) -> int:
        """Delete mask blobs no run refers to any more (left by replaced runs); returns how many."""
        def collect(con: duckdb.DuckDBPyConnection) -> int:
            count = con.execute("SELECT count(*) FROM mask_blobs WHERE hash NOT IN (SELECT hash FROM masks)").fetchone()[0]
            con.execute("DELETE FROM mask_blobs WHERE hash NOT IN (SELECT hash FROM masks)")
            return count

        return self.transaction(collect)
