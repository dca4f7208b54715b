import os
import subprocess
import sys
import time

import duckdb
import pytest

from workbench import queries
from workbench.errors import AssetError, PruningError, SpecError
from workbench.runner import run_job
from workbench.spec import parse_sweep
from workbench.sweeps import run_sweep


def _rows(store, sql):
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_run_writes_run_metrics_layers_and_masks(store, tiny_spec):
    result = run_job(tiny_spec, store)
    assert result.status == "finished" and not result.cached
    assert result.metrics["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert result.metrics["perplexity"] > 1
    layers = queries.layer_stats(store, [result.run_id])
    assert len(layers) == 14  # 2 blocks x 7 linear layers; embeddings and head stay dense
    assert (layers["achieved_sparsity"].between(0.49, 0.51)).all()
    masks = queries.load_masks(store, result.run_id)
    assert set(masks) == set(layers["layer"])
    assert all(abs(float((~m).float().mean()) - 0.5) < 0.01 for m in masks.values())


def test_cached_run_is_not_recomputed_and_does_not_load_the_model(store, tiny_spec, monkeypatch):
    first = run_job(tiny_spec, store)
    import workbench.jobs.prune as job

    def refuse(name):
        raise AssertionError("the model loader was called for a cached job")

    monkeypatch.setattr(job, "load_model", refuse)
    second = run_job(tiny_spec, store)
    assert second.cached and second.run_id == first.run_id and second.metrics == pytest.approx(first.metrics)
    monkeypatch.undo()
    forced = run_job(tiny_spec, store, force=True)
    assert not forced.cached and forced.run_id != first.run_id
    # --force replaces the old run of the key: one run per key, none half-written
    assert _rows(store, "SELECT count(*), count(DISTINCT key) FROM runs") == [(1, 1)]


def test_sweep_rerun_executes_only_what_is_missing(store, tiny_spec):
    base = {k: v for k, v in tiny_spec.items() if k not in ("method", "sparsity")}
    first = run_sweep(parse_sweep({"base": base, "grid": {"method": ["magnitude", "random"]}}), store, progress=False)
    assert [r.cached for r in first] == [False, False]
    second = run_sweep(parse_sweep({"base": base, "grid": {"method": ["magnitude", "random", "dense"]}}), store,
                       progress=False)
    assert [r.cached for r in second] == [True, True, False]


def test_nm_run_records_validity(store, tiny_spec):
    result = run_job({**tiny_spec, "pattern": "2:4", "sparsity": None}, store)
    assert result.metrics["nm_valid"] == 1.0
    assert queries.layer_stats(store, [result.run_id])["nm_valid"].all()


def test_encoder_run_reports_embedding_fidelity(store, tiny_spec):
    result = run_job({**tiny_spec, "model": "tiny-bert"}, store)
    assert 0 < result.metrics["embedding_cosine"] <= 1.0001
    assert 0 <= result.metrics["neighbour_agreement"] <= 1


def _store_rows(store):
    if not store.path.exists():
        return None
    return _rows(store, "SELECT count(*) FROM runs")


@pytest.mark.parametrize("change, error", [
    ({"model": "no-such-model"}, AssetError),
    ({"data": "no-such-corpus"}, AssetError),
    ({"pattern": "2:6", "sparsity": None}, PruningError),  # 6 does not divide the width 64
    ({"evaluation": {"windows": 1, "seq_len": 100_000}}, SpecError),
    ({"calibration": {"samples": 2, "seq_len": 10_000_000}}, SpecError),
])
def test_bad_input_fails_before_the_store_changes(store, tiny_spec, change, error):
    run_job({**tiny_spec, "method": "dense"}, store)
    before = _store_rows(store)
    with pytest.raises(error):
        run_job({**tiny_spec, **change}, store)
    assert _store_rows(store) == before


def test_nan_weights_are_refused(store, tiny_spec, monkeypatch):
    import workbench.jobs.prune as job
    from workbench.models import load_model

    def poisoned(name):
        loaded = load_model(name)
        loaded.model.model.layers[0].mlp.up_proj.weight.data[0, 0] = float("nan")
        return loaded

    monkeypatch.setattr(job, "load_model", poisoned)
    with pytest.raises(AssetError, match="NaN or Inf"):
        run_job(tiny_spec, store)
    assert not store.path.exists() or _rows(store, "SELECT count(*) FROM runs") == [(0,)]


def test_failing_method_leaves_a_failed_run_with_its_error(store, tiny_spec, monkeypatch):
    from workbench.pruning import magnitude

    def explode(self, context):
        raise RuntimeError("boom in the middle of pruning")

    monkeypatch.setattr(type(magnitude.METHOD), "prune", explode)
    with pytest.raises(RuntimeError):
        run_job(tiny_spec, store)
    assert _rows(store, "SELECT status, error FROM runs") == [("failed", "RuntimeError: boom in the middle of pruning")]
    monkeypatch.undo()
    result = run_job(tiny_spec, store)  # the next run of the key replaces the failed row
    assert result.status == "finished"
    assert _rows(store, "SELECT status FROM runs") == [("finished",)]


SPEC_SCRIPT = """
import sys
from workbench.runner import run_job
from workbench.store import Store
run_job({"model": "tiny-llama", "method": "magnitude", "evaluation": {"windows": 4, "seq_len": 64}},
        Store(sys.argv[1]))
"""


@pytest.mark.parametrize("faultpoint", ["finish:rows_written", "finish:status_flipped"])
def test_killed_job_leaves_no_finished_run_and_the_next_run_completes(store, tmp_path, faultpoint):
    env = {**os.environ, "WORKBENCH_FAULTPOINT": faultpoint}
    proc = subprocess.run([sys.executable, "-c", SPEC_SCRIPT, str(store.path)], env=env, capture_output=True)
    assert proc.returncode == 137, proc.stderr.decode()[-2000:]
    rows = _rows(store, "SELECT status FROM runs")
    assert rows == [("running",)]  # killed inside the final transaction: nothing of it committed
    assert _rows(store, "SELECT count(*) FROM metrics") == [(0,)]
    assert _rows(store, "SELECT count(*) FROM masks") == [(0,)]
    env.pop("WORKBENCH_FAULTPOINT")
    subprocess.run([sys.executable, "-c", SPEC_SCRIPT, str(store.path)], env=env, check=True)
    assert _rows(store, "SELECT status FROM runs") == [("finished",)]


WRITER_SCRIPT = """
import sys
from workbench.records import JobOutput, Metric
from workbench.store import Store
store = Store(sys.argv[1])
for i in range(int(sys.argv[3])):
    key = f"{sys.argv[2]}-{i}"
    run_id = store.start_run(key, "prune", "{}", {}, {})
    store.finish_run(run_id, key, JobOutput(metrics=[Metric("i", i)]), 0.0)
"""


def test_two_processes_writing_the_same_store_lose_nothing(store):
    store.check_writable()
    writers = [subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(store.path), name, "40"])
               for name in ("a", "b")]
    seen_while_writing = 0
    while any(w.poll() is None for w in writers):
        seen_while_writing = max(seen_while_writing, len(queries.runs(store)))  # a reader polls meanwhile
        time.sleep(0.05)
    assert [w.returncode for w in writers] == [0, 0]
    assert _rows(store, "SELECT count(*), count(DISTINCT key) FROM runs WHERE status = 'finished'") == [(80, 80)]
    assert _rows(store, "SELECT count(*) FROM metrics") == [(80,)]
