"""Stores, exports and run states a command cannot use: each ends in exit code 2 and one line naming the
problem and the fix, with no traceback, nothing run (no model loaded) and the store byte-for-byte as it was.

Groups: files that are no workbench store, damaged or foreign exports and unwritable export targets,
runs that are not finished, stores that cannot be written."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from workbench.cli import app
from workbench.records import JobOutput, MaskRecord, Metric
from workbench.store import Store
from workbench.store.transfer import export_store

SPEC = {"model": "tiny-llama", "data": "shakespeare", "method": "magnitude", "sparsity": 0.5,
        "evaluation": {"windows": 2, "seq_len": 32}}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_refused(result, store: Path | None = None, before: str | None = None) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and ". Fix: " in lines[0], result.stderr
    assert "Traceback" not in result.output + result.stderr
    if store is not None:
        assert digest(store) == before
    return lines[0]


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch):
    """A refused command never gets as far as preparing a job (loading a model)."""
    class Refuse:
        @staticmethod
        def prepare(*_args, **_kwargs):
            raise AssertionError("a job was prepared although the command should have been refused")

    monkeypatch.setattr("workbench.runner.executor_for", lambda kind: Refuse)


def fill(store: Store) -> dict[str, str]:
    """A finished run with masks, a finished run without, a failed and a running one (this process: alive)."""
    ids = {}
    ids["finished"] = store.start_run("k-finished", "prune", '{"kind": "prune"}', {"method": "magnitude"}, {})
    generator = torch.Generator().manual_seed(0)
    store.finish_run(ids["finished"], "k-finished",
                     JobOutput(metrics=[Metric("sparsity", 0.5)],
                               masks=[MaskRecord("layer.0", torch.rand(8, 16, generator=generator) > 0.5)]), 1.0)
    ids["no masks"] = store.start_run("k-dense", "prune", '{"kind": "prune"}', {"method": "dense"}, {})
    store.finish_run(ids["no masks"], "k-dense", JobOutput(metrics=[Metric("sparsity", 0.0)]), 1.0)
    ids["failed"] = store.start_run("k-failed", "prune", '{"kind": "prune"}', {}, {})
    store.fail_run(ids["failed"], "it broke")
    ids["running"] = store.start_run("k-running", "prune", '{"kind": "prune"}', {}, {})
    return ids


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A workbench store (its runs by state), and a DuckDB and a Parquet export of it."""
    folder = tmp_path_factory.mktemp("good")
    store = Store(folder / "wb.duckdb")
    ids = fill(store)
    export_store(store, folder / "export.duckdb")
    export_store(store, folder / "export-parquet")
    return {"store": store.path, "ids": ids, "duckdb": folder / "export.duckdb", "parquet": folder / "export-parquet"}


@pytest.fixture
def store_copy(good, tmp_path):
    path = tmp_path / "store" / "wb.duckdb"
    path.parent.mkdir()
    shutil.copy(good["store"], path)
    return path


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


# ------------------------------------------------------------ files that are no workbench store
def _duckdb_with(path: Path, statement: str) -> None:
    con = duckdb.connect(str(path))
    con.execute(statement)
    con.close()


def _sqlite(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE runs (run_id TEXT)")
    con.commit()
    con.close()
    return path


FOREIGN = {
    "duckdb with other tables": lambda p: _duckdb_with(p, "CREATE TABLE other (x INTEGER)"),
    "duckdb with a foreign runs table": lambda p: _duckdb_with(p, "CREATE TABLE runs (x INTEGER, name VARCHAR)"),
    "duckdb with a foreign schema_version": lambda p: _duckdb_with(p, "CREATE TABLE schema_version (v VARCHAR)"),
    "sqlite file": lambda p: _sqlite(p),
    "random bytes": lambda p: p.write_bytes(os.urandom(4096)),
    "empty file": lambda p: p.write_bytes(b""),
}
COMMANDS = {
    "run": lambda ctx: ["run", ctx["spec"]],
    "run --force": lambda ctx: ["run", ctx["spec"], "--force"],
    "ls": lambda ctx: ["ls"],
    "ls --json": lambda ctx: ["ls", "--json"],
    "show": lambda ctx: ["show", "abc"],
    "gc": lambda ctx: ["gc"],
    "export": lambda ctx: ["export", ctx["tmp"] / "out.duckdb"],
    "import": lambda ctx: ["import", ctx["export"]],
    "export-masks": lambda ctx: ["export-masks", "abc", ctx["tmp"] / "m.safetensors"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_a_file_that_is_no_workbench_store_is_refused(kind, command, tmp_path, spec_file, good):
    store = tmp_path / "foreign.duckdb"
    FOREIGN[kind](store)
    before = digest(store)
    args = COMMANDS[command]({"spec": spec_file, "tmp": tmp_path, "export": good["duckdb"]})
    line = assert_refused(invoke(*args, "--store", store), store, before)
    assert str(store) in line and "--store" in line
    assert ("is not a workbench store (" in line) == kind.startswith("duckdb")
    assert "SQLite database" in line if kind == "sqlite file" else "download" not in line
    assert not (tmp_path / "out.duckdb").exists() and not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("limit", ["-1", "-50"])
def test_a_negative_ls_limit_is_refused(limit, store_copy):
    before = digest(store_copy)
    line = assert_refused(invoke("ls", "--limit", limit, "--store", store_copy), store_copy, before)
    assert f"limit {limit}" in line


def test_every_connection_refuses_extension_downloads_and_python_lookups(good, tmp_path):
    from workbench.store import connect_duckdb

    settings = ("SELECT current_setting('autoinstall_known_extensions'), current_setting('autoload_known_extensions'), "
                "current_setting('python_enable_replacements')")
    with Store(good["store"]).read() as con:
        assert con.execute(settings).fetchone() == (False, False, False)
    assert connect_duckdb(good["duckdb"], read_only=True).execute(settings).fetchone() == (False, False, False)
    no_such_table_here = pd.DataFrame({"x": [1]})  # noqa: F841  (a variable must not stand in for a table)
    with Store(good["store"]).read() as con, pytest.raises(duckdb.CatalogException):
        con.execute("SELECT * FROM no_such_table_here").fetchall()
    # a DuckDB file with no tables at all is a new store: readers see nothing, a writer creates the schema
    empty = tmp_path / "empty.duckdb"
    _duckdb_with(empty, "SELECT 1")
    assert json.loads(invoke("ls", "--json", "--store", empty).stdout) == []


# ------------------------------------------------------------ exports and imports
def _parquet_export(good, tmp_path) -> Path:
    folder = tmp_path / "export"
    shutil.copytree(good["parquet"], folder)
    return folder


def _rewrite(folder: Path, table: str, select: str) -> None:
    file = folder / f"{table}.parquet"
    con = duckdb.connect()
    con.execute(f"COPY ({select.format(t=f'read_parquet({str(file)!r})')}) TO '{file}.new' (FORMAT parquet)")
    con.close()
    os.replace(f"{file}.new", file)


def _manifest(folder: Path, text: str) -> None:
    (folder / "manifest.json").write_text(text)


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def _duckdb_export_with(good, tmp_path, statement: str) -> Path:
    path = tmp_path / "export.duckdb"
    shutil.copy(good["duckdb"], path)
    _duckdb_with(path, statement)
    return path


IMPORTS = {
    "manifest is a JSON list": (lambda g, t: _manifest(_parquet_export(g, t), "[1, 2]") or t / "export", "not a JSON object"),
    "manifest is not JSON": (lambda g, t: _manifest(_parquet_export(g, t), "{schema") or t / "export", "manifest"),
    "manifest schema_version is a string": (
        lambda g, t: _manifest(_parquet_export(g, t), '{"schema_version": "2"}') or t / "export", "schema_version"),
    "manifest schema_version is newer": (
        lambda g, t: _manifest(_parquet_export(g, t), '{"schema_version": 999}') or t / "export", "newer"),
    "manifest format is newer": (
        lambda g, t: _manifest(_parquet_export(g, t), '{"schema_version": 1, "format": 7}') or t / "export", "format"),
    "runs.parquet of random bytes": (
        lambda g, t: (_parquet_export(g, t) / "runs.parquet").write_bytes(os.urandom(3000)) and t / "export",
        "runs is not a readable Parquet table"),
    "truncated metrics.parquet": (lambda g, t: _truncate(_parquet_export(g, t) / "metrics.parquet") or t / "export",
                                  "metrics"),
    "runs.parquet missing": (lambda g, t: (_parquet_export(g, t) / "runs.parquet").unlink() or t / "export",
                             "lacks runs.parquet"),
    "runs with other columns": (
        lambda g, t: _rewrite(_parquet_export(g, t), "runs", "SELECT 1 AS a, 'x' AS b") or t / "export", "lacks"),
    "runs without status": (
        lambda g, t: _rewrite(_parquet_export(g, t), "runs", "SELECT * EXCLUDE (status) FROM {t}") or t / "export",
        "status"),
    "runs with a NULL status": (
        lambda g, t: _rewrite(_parquet_export(g, t), "runs", "SELECT * REPLACE (NULL::VARCHAR AS status) FROM {t}")
        or t / "export", "status"),
    "metrics whose value is text": (
        lambda g, t: _rewrite(_parquet_export(g, t), "metrics", "SELECT * REPLACE ('high' AS value) FROM {t}")
        or t / "export", "metrics does not fit"),
    "duckdb export without a manifest": (
        lambda g, t: _duckdb_export_with(g, t, "DROP TABLE manifest"), "not a complete export"),
    "duckdb export whose manifest is not JSON": (
        lambda g, t: _duckdb_export_with(g, t, "UPDATE manifest SET data = '{oops'"), "not JSON"),
    "duckdb export missing a table": (lambda g, t: _duckdb_export_with(g, t, "DROP TABLE masks"), "not a complete export"),
    "duckdb export whose runs lack columns": (
        lambda g, t: _duckdb_export_with(g, t, "ALTER TABLE runs DROP COLUMN key"), "lacks the column(s) key"),
    "a workbench store instead of an export": (lambda g, t: g["store"], "is a workbench store, not an export"),
    "a sqlite file": (lambda g, t: _sqlite(t / "x.db"), "SQLite"),
    "random bytes": (lambda g, t: (t / "x.duckdb").write_bytes(os.urandom(500)) and t / "x.duckdb", "not an export"),
}


@pytest.mark.parametrize("case", sorted(IMPORTS))
def test_a_damaged_or_foreign_export_is_refused_and_the_store_kept(case, good, tmp_path, store_copy):
    make, fragment = IMPORTS[case]
    source = make(good, tmp_path)
    before = digest(store_copy)
    line = assert_refused(invoke("import", source, "--store", store_copy), store_copy, before)
    assert fragment in line


def test_an_import_into_a_new_store_that_is_refused_creates_no_store(good, tmp_path):
    source = IMPORTS["runs without status"][0](good, tmp_path)
    assert_refused(invoke("import", source, "--store", tmp_path / "new" / "wb.duckdb"))
    assert not (tmp_path / "new" / "wb.duckdb").exists()


UNWRITABLE = {
    "duckdb file under a file": (lambda t: t / "blocker" / "out.duckdb", "is a file, not a folder"),
    "parquet folder under a file": (lambda t: t / "blocker" / "out", "is a file, not a folder"),
    "duckdb file under /proc": (lambda t: Path("/proc") / "workbench-export.duckdb", "cannot be written"),
    "parquet folder under /proc": (lambda t: Path("/proc") / "workbench-export", "cannot be written"),
}
EXPORTS = {
    **{f"export to a {k}": (lambda ctx, k=k: ["export", UNWRITABLE[k][0](ctx["tmp"])], UNWRITABLE[k][1])
       for k in UNWRITABLE},
    "export to an existing file": (lambda ctx: ["export", ctx["blocker"]], "already exists"),
    "export-masks into a missing folder": (
        lambda ctx: ["export-masks", ctx["ids"]["finished"], ctx["tmp"] / "nope" / "m.safetensors"], "does not exist"),
    "export-masks to a directory": (lambda ctx: ["export-masks", ctx["ids"]["finished"], ctx["tmp"]], "is a directory"),
    "export-masks under /proc": (
        lambda ctx: ["export-masks", ctx["ids"]["finished"], "/proc/workbench-masks.safetensors"], "cannot be written"),
}


@pytest.mark.parametrize("case", sorted(EXPORTS))
def test_an_export_that_cannot_be_written_is_refused(case, good, tmp_path, store_copy):
    if "/proc" in case and not Path("/proc/self").exists():
        pytest.skip("no /proc here")
    (tmp_path / "blocker").write_text("x")
    make, fragment = EXPORTS[case]
    args = make({"tmp": tmp_path, "ids": good["ids"], "blocker": tmp_path / "blocker"})
    before, listed = digest(store_copy), sorted(p.name for p in tmp_path.iterdir())
    assert fragment in assert_refused(invoke(*args, "--store", store_copy), store_copy, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == listed  # nothing left behind


def test_a_failed_export_into_an_empty_folder_leaves_it_empty(good, tmp_path, store_copy, monkeypatch):
    from workbench.store import transfer

    target = tmp_path / "empty"
    target.mkdir()
    monkeypatch.setitem(transfer.TABLES, "zz_broken", "SELECT * FROM no_such_table")
    with pytest.raises(duckdb.CatalogException):
        export_store(Store(store_copy), target)
    assert list(target.iterdir()) == []


# ------------------------------------------------------------ runs that are not finished
NOT_FINISHED = {
    "export-masks of a running run": (lambda ctx: ["export-masks", ctx["ids"]["running"], ctx["out"]], "is running"),
    "export-masks of a failed run": (lambda ctx: ["export-masks", ctx["ids"]["failed"], ctx["out"]], "is failed"),
    "export-masks of a run without masks": (
        lambda ctx: ["export-masks", ctx["ids"]["no masks"], ctx["out"]], "stored no masks"),
    "export-model of a running run": (
        lambda ctx: ["export-model", ctx["ids"]["running"], ctx["tmp"] / "model"], "not finished"),
    "export-model of a failed run": (
        lambda ctx: ["export-model", ctx["ids"]["failed"], ctx["tmp"] / "model"], "not finished"),
}


@pytest.mark.parametrize("case", sorted(NOT_FINISHED))
def test_masks_and_models_of_unfinished_runs_are_refused(case, good, tmp_path, store_copy):
    make, fragment = NOT_FINISHED[case]
    args = make({"ids": good["ids"], "out": tmp_path / "m.safetensors", "tmp": tmp_path})
    before = digest(store_copy)
    assert fragment in assert_refused(invoke(*args, "--store", store_copy), store_copy, before)
    assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / "model").exists()


def test_masks_of_a_finished_run_still_export(good, tmp_path, store_copy):
    from safetensors.torch import load_file

    result = invoke("export-masks", good["ids"]["finished"], tmp_path / "m.safetensors", "--store", store_copy)
    assert result.exit_code == 0, result.output
    assert list(load_file(str(tmp_path / "m.safetensors"))) == ["layer.0"]
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


# ------------------------------------------------------------ stores that cannot be written
UNWRITABLE_STORES = {
    "under /proc": lambda t: Path("/proc") / "workbench.duckdb",
    "in a /proc subfolder": lambda t: Path("/proc") / "workbench-store" / "workbench.duckdb",
    "under a file": lambda t: t / "blocker" / "workbench.duckdb",
    "a directory": lambda t: t,
}


@pytest.mark.parametrize("command", ["run", "run --force", "gc", "import"])
@pytest.mark.parametrize("case", sorted(UNWRITABLE_STORES))
def test_a_store_that_cannot_be_written_is_refused_before_any_work(case, command, good, tmp_path, spec_file):
    if "/proc" in case and not Path("/proc/self").exists():
        pytest.skip("no /proc here")
    (tmp_path / "blocker").write_text("x")
    store = UNWRITABLE_STORES[case](tmp_path)
    args = {"run": ["run", spec_file], "run --force": ["run", spec_file, "--force"], "gc": ["gc"],
            "import": ["import", good["duckdb"]]}[command]
    listed = sorted(p.name for p in tmp_path.iterdir())
    line = assert_refused(invoke(*args, "--store", store))  # no_model_loads: refused before prepare
    assert str(store) in line or str(store.parent) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == listed


def test_check_writable_probes_instead_of_trusting_permission_bits(tmp_path):
    from workbench.errors import StoreError

    if Path("/proc/self").exists():
        with pytest.raises(StoreError, match="not writable"):
            Store("/proc/workbench.duckdb").check_writable()
    Store(tmp_path / "fresh" / "wb.duckdb").check_writable()  # a new store in a new folder is fine
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == []  # and the probe is gone
