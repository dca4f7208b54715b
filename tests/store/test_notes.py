"""A run's tags and note (the spec's tags stay as they are, the user's sit beside them) and deleting runs:
in the store, through the queries, and as `workbench tag` / `workbench rm`."""

from __future__ import annotations

import hashlib
import json

import duckdb
import pytest
import torch
from typer.testing import CliRunner

from workbench import queries
from workbench.cli import app
from workbench.errors import StoreError
from workbench.records import DivergenceRecord, JobOutput, LayerStat, MaskRecord, Metric
from workbench.store import DUCKDB_CONFIG, Store
from workbench.store.notes import annotate
from workbench.store.schema import LATEST_VERSION, MIGRATIONS

LAYER = "model.layers.0.mlp.up_proj"


def _finished(store: Store, name: str, tags: tuple[str, ...] = (), mask_seed: int = 0, key: str | None = None) -> str:
    key = key or hashlib.sha256(name.encode()).hexdigest()
    run_id = store.start_run(key, "prune", json.dumps({"kind": "prune", "name": name}), {"model": "tiny-llama"}, {},
                             name, tags)
    mask = torch.arange(32).view(4, 8) % (mask_seed + 2) != 0
    store.finish_run(run_id, key, JobOutput(metrics=[Metric("sparsity", 0.5), Metric("perplexity", 30.0)],
                                            layers=[LayerStat(LAYER, 0, (4, 8), 0.5, 0.5, "unstructured")],
                                            masks=[MaskRecord(LAYER, mask)]), 1.0)
    return run_id


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "wb.duckdb")


def _count(store: Store, sql: str, params: list | None = None) -> int:
    with store.read() as con:
        return con.execute(sql, params or []).fetchone()[0]


def test_tags_are_added_beside_the_specs_which_stay_as_they_are(store):
    run_id = _finished(store, "a", tags=("baseline", "smol"))
    added = annotate(store, run_id, add=["good", " review ", "baseline", "good"], note="  first look  ")
    assert added.spec_tags == ("baseline", "smol") and added.tags == ("good", "review") and added.note == "first look"
    assert added.all_tags == ("baseline", "smol", "good", "review")
    assert annotate(store, run_id, remove=["good"]).tags == ("review",)
    assert annotate(store, run_id, tags=["x", "y"]).tags == ("x", "y")  # the app's editor replaces the list
    with pytest.raises(StoreError, match="comes from its spec"):
        annotate(store, run_id, remove=["baseline"])
    with pytest.raises(StoreError, match="has no tag 'nope'"):
        annotate(store, run_id, remove=["nope"])
    for bad in ("", "   ", "two\nlines", "x" * 65):
        with pytest.raises(StoreError, match="tag"):
            annotate(store, run_id, add=[bad])
    with pytest.raises(StoreError, match="no run zzz"):
        annotate(store, "zzz", add=["a"])
    record = queries.run(store, run_id)
    assert (record["tags"], record["user_tags"], record["note"]) == (["baseline", "smol"], ["x", "y"], "first look")
    row = queries.runs(store).set_index("run_id").loc[run_id]
    assert row["tags"] == ("baseline", "smol", "x", "y") and row["note"] == "first look"
    annotate(store, run_id, tags=[], note="")  # nothing of the user's left: no row
    assert _count(store, "SELECT count(*) FROM run_notes") == 0
    assert queries.runs(store).set_index("run_id").loc[run_id, "tags"] == ("baseline", "smol")


def test_a_run_that_replaces_its_key_takes_the_tags_and_note_over(store):
    first = _finished(store, "a", tags=("spec",))
    annotate(store, first, add=["keep"], note="the first one")
    second = _finished(store, "a", tags=("spec",))  # same key: a --force rerun
    assert list(queries.runs(store)["run_id"]) == [second]
    assert queries.run(store, second)["user_tags"] == ["keep"] and queries.run(store, second)["note"] == "the first one"
    assert _count(store, "SELECT count(*) FROM run_notes") == 1


def test_delete_keeps_the_other_runs_and_leaves_no_orphan_rows(store):
    kept = _finished(store, "kept", mask_seed=0)
    gone = _finished(store, "gone", mask_seed=1)
    shared = _finished(store, "shared", mask_seed=0)  # the same mask as `kept`: one blob for both
    store.add_divergence([DivergenceRecord(LAYER, 3, 32, 0.5, run_a=kept, run_b=gone)])
    for run_id in (kept, gone):
        annotate(store, run_id, add=["t"], note="n")
    tables = ("metrics", "layer_stats", "masks", "run_notes")
    rows_of_kept = {table: _count(store, f"SELECT count(*) FROM {table} WHERE run_id = ?", [kept]) for table in tables}
    blobs = _count(store, "SELECT count(*) FROM mask_blobs")
    assert store.delete_runs([gone, shared]) == [gone, shared]
    assert list(queries.runs(store)["run_id"]) == [kept]
    for table in tables:
        assert _count(store, f"SELECT count(*) FROM {table} WHERE run_id NOT IN (SELECT run_id FROM runs)") == 0
        assert _count(store, f"SELECT count(*) FROM {table} WHERE run_id = ?", [kept]) == rows_of_kept[table] > 0
    assert _count(store, "SELECT count(*) FROM divergence") == 0
    assert _count(store, "SELECT count(*) FROM mask_blobs") == blobs  # until gc
    assert store.collect_garbage().mask_blobs == 1  # gone's own blob; kept's stays
    assert queries.load_mask(store, kept, LAYER).shape == (4, 8)


def test_a_running_or_unknown_run_refuses_the_whole_delete(store):
    finished = _finished(store, "done")
    running = store.start_run("r" * 64, "prune", "{}", {}, {})
    with pytest.raises(StoreError, match=f"run {running} is running and cannot be deleted"):
        store.delete_runs([finished, running])
    with pytest.raises(StoreError, match="no run zzz"):
        store.delete_runs([finished, "zzz"])
    assert sorted(queries.runs(store)["run_id"]) == sorted([finished, running])
    assert _count(store, "SELECT count(*) FROM metrics") == 2


def test_an_older_store_reads_without_annotations_and_is_upgraded_by_the_first_change(tmp_path):
    path = tmp_path / "v3.duckdb"
    con = duckdb.connect(str(path), config=DUCKDB_CONFIG)
    con.execute("CREATE TABLE schema_version (version INTEGER, description VARCHAR, applied_at TIMESTAMP)")
    for version, description, statements in MIGRATIONS[:3]:
        for statement in statements:
            con.execute(statement)
        con.execute("INSERT INTO schema_version VALUES (?, ?, now())", [version, description])
    con.execute("INSERT INTO runs (run_id, key, kind, spec, status, created_at) "
                "VALUES ('old-1', 'k', 'prune', '{}', 'finished', now())")
    con.close()
    store = Store(path)
    assert queries.runs(store)["tags"].tolist() == [()] and queries.run(store, "old-1")["user_tags"] == []
    annotate(store, "old-1", add=["kept"])
    assert store.schema_version() == LATEST_VERSION
    assert queries.runs(store)["tags"].tolist() == [("kept",)]


def _cli(store: Store, *args: str, input: str | None = None):
    return CliRunner().invoke(app, [*args, "--store", str(store.path)], input=input)


def _one_line_error(result, fragment: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and fragment in lines[0] and "Fix:" in lines[0]


def test_cli_tag_adds_removes_and_notes(store):
    run_id = _finished(store, "a", tags=("baseline",))
    result = _cli(store, "tag", run_id[:8], "--add", "good", "--add", "needs review", "--note", "first try")
    assert result.exit_code == 0, result.output
    assert f"{run_id}: tags baseline, good, needs review (from its spec: baseline)" in result.stdout
    assert "note: first try" in result.stdout
    assert _cli(store, "tag", run_id, "--remove", "good").exit_code == 0
    shown = _cli(store, "tag", run_id)
    assert "tags baseline, needs review" in shown.stdout and "note: first try" in shown.stdout
    assert _cli(store, "tag", run_id, "--note", "").exit_code == 0 and queries.run(store, run_id)["note"] is None
    _one_line_error(_cli(store, "tag", "zzz", "--add", "x"), "no run matches 'zzz'")
    _one_line_error(_cli(store, "tag", run_id, "--remove", "baseline"), "comes from its spec")
    _one_line_error(_cli(store, "tag", run_id, "--add", " "), "is empty")


def test_cli_rm_asks_first_and_refuses_a_running_run(store):
    first, second = _finished(store, "a"), _finished(store, "b", mask_seed=1)
    running = store.start_run("r" * 64, "prune", "{}", {}, {})
    _one_line_error(_cli(store, "rm", first, running, "--yes"), f"run {running} is running")
    _one_line_error(_cli(store, "rm", "zzz", "--yes"), "no run matches 'zzz'")
    declined = _cli(store, "rm", first, input="n\n")
    assert declined.exit_code == 1 and first in set(queries.runs(store)["run_id"])
    confirmed = _cli(store, "rm", first[:8], input="y\n")
    assert confirmed.exit_code == 0 and f"deleted 1 run: {first}" in confirmed.stdout
    assert _cli(store, "rm", second, "--yes").exit_code == 0
    assert list(queries.runs(store)["run_id"]) == [running]
    assert "2 unreferenced mask blobs" in _cli(store, "gc").stdout
