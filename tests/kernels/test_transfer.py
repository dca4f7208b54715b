import pandas as pd
import pytest
import torch

from workbench import queries
from workbench.records import JobOutput, MaskRecord, Metric
from workbench.store import Store
from workbench.store.transfer import TransferError, export_store, import_store

TABLES = ["runs", "metrics", "layer_stats", "masks", "mask_blobs", "kernel_results"]


def _run(store: Store, key: str, mask_seed: int = 0, finish: bool = True) -> str:
    run_id = store.start_run(key, "bench", '{"kind": "bench"}', {"method": "bench-kernels"}, {"device": "test"})
    if finish:
        generator = torch.Generator().manual_seed(mask_seed)
        output = JobOutput(
            metrics=[Metric("speedup", 1.5)],
            masks=[MaskRecord("layer.0", torch.rand(8, 16, generator=generator) > 0.5)],
            kernel_results=[{"case_id": "8x16-t1", "backend": "semi24-tuned", "dtype": "bf16", "tokens": 1,
                             "median_us": 12.5, "speedup": 1.5, "status": "ok", "phase": "kernel", "best": True,
                             "versions": {"torch": "x"}, "extra": {"copies": 4}, "unknown_field": 7}])
        store.finish_run(run_id, key, output, 1.0)
    return run_id


def _table(store: Store, table: str) -> pd.DataFrame:
    with store.read() as con:
        frame = con.execute(f"SELECT * FROM {table}").df()
    return frame.sort_values(list(frame.columns[:2])).reset_index(drop=True)


@pytest.mark.parametrize("name", ["export.duckdb", "export-parquet"])
def test_runs_round_trip_through_export_and_import(tmp_path, name):
    source = Store(tmp_path / "a.duckdb")
    first, second = _run(source, "k1", 0), _run(source, "k2", 1)
    _run(source, "k3", finish=False)  # a run that never finished does not travel
    summary = export_store(source, tmp_path / name)
    assert summary.runs == 2 and summary.rows["kernel_results"] == 2

    target = Store(tmp_path / "b.duckdb")
    merged = import_store(target, tmp_path / name)
    assert sorted(merged.imported) == sorted([first, second])
    for table in TABLES:
        expected = _table(source, table)
        if table == "runs":
            expected = expected[expected["status"] == "finished"].reset_index(drop=True)
        pd.testing.assert_frame_equal(_table(target, table), expected, check_dtype=False)
    assert torch.equal(queries.load_mask(target, first, "layer.0"), queries.load_mask(source, first, "layer.0"))

    again = import_store(target, tmp_path / name)  # nothing is duplicated by a second import
    assert again.imported == [] and sorted(again.skipped_present) == sorted([first, second])
    assert {t: len(_table(target, t)) for t in TABLES} == {t: len(_table(source, t)) - (t == "runs") for t in TABLES}


def test_import_keeps_one_run_per_key(tmp_path):
    source = Store(tmp_path / "a.duckdb")
    incoming = _run(source, "shared", 0)
    fresh = _run(source, "fresh", 0)  # the same mask content as `incoming`: one blob
    export_store(source, tmp_path / "x.duckdb", kind="bench")

    target = Store(tmp_path / "b.duckdb")
    local = _run(target, "shared", 0)  # finished here already: the incoming run is skipped
    stale = _run(target, "fresh", finish=False)  # never finished here: the incoming run replaces it
    merged = import_store(target, tmp_path / "x.duckdb")
    assert merged.skipped_key == [incoming] and merged.imported == [fresh] and merged.replaced == [stale]
    assert merged.rows["mask_blobs"] == 0  # the store held that content already
    runs = queries.runs(target)
    assert sorted(runs["run_id"]) == sorted([local, fresh]) and runs["key"].is_unique

    replaced = import_store(target, tmp_path / "x.duckdb", replace=True)
    assert replaced.imported == [incoming] and replaced.replaced == [local]
    assert sorted(queries.runs(target)["run_id"]) == sorted([incoming, fresh])


def test_bad_sources_and_targets_are_user_errors(tmp_path):
    store = Store(tmp_path / "a.duckdb")
    _run(store, "k")
    export_store(store, tmp_path / "x.duckdb")
    with pytest.raises(TransferError, match="already exists"):
        export_store(store, tmp_path / "x.duckdb")
    with pytest.raises(TransferError, match="does not exist"):
        import_store(store, tmp_path / "missing.duckdb")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TransferError, match="manifest"):
        import_store(store, tmp_path / "empty")


def test_export_and_import_commands(tmp_path):
    from typer.testing import CliRunner

    from workbench.cli import app

    source = Store(tmp_path / "a.duckdb")
    run_id = _run(source, "k1")
    runner = CliRunner()
    out = runner.invoke(app, ["export", str(tmp_path / "x.duckdb"), "--kind", "bench", "--store", str(source.path)])
    assert out.exit_code == 0 and "exported 1 runs" in out.output
    target = tmp_path / "b.duckdb"
    out = runner.invoke(app, ["import", str(tmp_path / "x.duckdb"), "--store", str(target)])
    assert out.exit_code == 0 and "imported 1 runs" in out.output
    assert list(queries.runs(Store(target))["run_id"]) == [run_id]
    out = runner.invoke(app, ["import", str(tmp_path / "missing"), "--store", str(target)])
    assert out.exit_code == 2 and out.output.startswith("error: ") and "Fix:" in out.output
