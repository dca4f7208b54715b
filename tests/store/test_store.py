import duckdb
import pytest
import torch

from workbench import queries
from workbench.api import compare
from workbench.errors import StoreError
from workbench.metrics.divergence import iou, sad
from workbench.records import JobOutput, LayerStat, MaskRecord, Metric
from workbench.store import Store
from workbench.store.schema import LATEST_VERSION


def _write_run(store, key, masks, metrics=()):
    run_id = store.start_run(key, "prune", "{}", {"model": "m", "method": "x"}, {})
    layers = [LayerStat(n, 0, tuple(m.shape), 0.5, float((~m).float().mean()), "unstructured") for n, m in masks.items()]
    store.finish_run(run_id, key, JobOutput(metrics=[Metric(k, v) for k, v in metrics],
                                            layers=layers, masks=[MaskRecord(n, m) for n, m in masks.items()]), 1.0)
    return run_id


def test_schema_is_versioned_and_migrations_run_once(store):
    assert store.schema_version() == 0  # no file yet: readers see an empty store
    assert queries.runs(store).empty and list(queries.runs(store).columns)[:3] == ["run_id", "key", "kind"]
    _write_run(store, "k1", {"a": torch.ones(2, 2, dtype=torch.bool)})
    assert store.schema_version() == LATEST_VERSION
    _write_run(Store(store.path), "k2", {"a": torch.ones(2, 2, dtype=torch.bool)})
    con = duckdb.connect(str(store.path), read_only=True)
    assert con.execute("SELECT count(*) FROM schema_version").fetchone()[0] == LATEST_VERSION
    con.close()


def test_newer_schema_is_refused(store):
    _write_run(store, "k1", {"a": torch.ones(2, 2, dtype=torch.bool)})
    con = duckdb.connect(str(store.path))
    con.execute("INSERT INTO schema_version VALUES (999, 'future', now())")
    con.close()
    with pytest.raises(StoreError, match="newer than this workbench"):
        _write_run(Store(store.path), "k2", {"a": torch.ones(2, 2, dtype=torch.bool)})


def test_masks_round_trip_through_the_store_and_are_stored_once(store):
    torch.manual_seed(0)
    mask = torch.rand(33, 17) > 0.3
    run_a = _write_run(store, "ka", {"layer": mask, "other": torch.rand(4, 8) > 0.5})
    run_b = _write_run(store, "kb", {"layer": mask.clone()})
    assert torch.equal(queries.load_mask(store, run_a, "layer"), mask)
    assert torch.equal(queries.load_masks(store, run_b)["layer"], mask)
    con = duckdb.connect(str(store.path), read_only=True)
    assert con.execute("SELECT count(*) FROM mask_blobs").fetchone()[0] == 2  # the shared mask once
    con.close()


def test_run_prefix_lookup_and_metrics(store):
    run_id = _write_run(store, "kx", {"a": torch.ones(1, 4, dtype=torch.bool)}, [("perplexity", 12.5)])
    record = queries.run(store, run_id[:6])
    assert record["run_id"] == run_id and record["metrics"]["perplexity"] == 12.5
    assert queries.runs(store).loc[0, "perplexity"] == 12.5
    with pytest.raises(StoreError, match="no run matches"):
        queries.run(store, "nope")


def test_sad_is_the_popcount_of_xor_on_hand_built_masks():
    a = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]], dtype=torch.bool)
    b = torch.tensor([[1, 0, 1, 0], [1, 0, 1, 0]], dtype=torch.bool)
    assert sad(a, b) == 2 and sad(a, a) == 0
    assert iou(a, b) == pytest.approx(3 / 5)


def test_compare_runs_computes_and_caches_divergence(store):
    a = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)
    b = torch.tensor([[0, 1, 1, 0]], dtype=torch.bool)
    run_a = _write_run(store, "ka", {"l": a})
    run_b = _write_run(store, "kb", {"l": b})
    frame = compare(run_a, run_b, store=store)
    assert frame.loc[0, "sad"] == 2 and frame.loc[0, "sad_fraction"] == 0.5 and frame.loc[0, "iou"] == pytest.approx(1 / 3)
    again = compare(run_a, run_b, store=store)  # served from the divergence table
    assert len(queries.divergence(store)) == 1 and again.loc[0, "sad"] == 2
