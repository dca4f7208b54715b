"""`workbench store init / copy / bench` and the lease columns of `workbench ls`."""

import json
import os
import subprocess
import sys

import pytest
import torch

from workbench import queries
from workbench.benchmarks.store_stress import run_stress
from workbench.errors import WorkbenchError
from workbench.records import JobOutput, MaskRecord, Metric
from workbench.store import Store, claims


def workbench(*args):
    return subprocess.run([sys.executable, "-m", "workbench.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ})


def _finished_run(store, key, value):
    run_id = store.start_run(key, "prune", "{}", {"method": "m", "model": "x"}, {})
    store.finish_run(run_id, key, JobOutput(metrics=[Metric("perplexity", value)],
                                            masks=[MaskRecord("layer", torch.arange(12).view(3, 4) % 3 == 0)]), 1.0)
    return run_id


def test_store_init_then_copy_both_ways_is_idempotent(lake_url, tmp_path):
    for _ in range(2):  # init twice: the second finds everything in place
        done = workbench("store", "init", lake_url)
        assert done.returncode == 0 and "ready at schema v" in done.stdout, done.stderr
    local = Store(tmp_path / "local.duckdb")
    ids = [_finished_run(local, f"key-{i}", float(i)) for i in range(3)]
    first = workbench("store", "copy", local.path, lake_url)
    assert first.returncode == 0 and "copied 3 of 3" in first.stdout, first.stderr
    again = workbench("store", "copy", local.path, lake_url)
    assert "copied 0 of 3" in again.stdout and "3 already there" in again.stdout
    shared = Store(lake_url)
    assert sorted(queries.runs(shared)["run_id"]) == sorted(ids)
    _finished_run(shared, "key-shared", 9.0)  # a run made on the shared store comes back to a new file
    back = tmp_path / "back" / "wb.duckdb"
    assert "copied 4 of 4" in workbench("store", "copy", lake_url, back).stdout
    assert "copied 0 of 4" in workbench("store", "copy", lake_url, back).stdout
    returned = Store(back)
    assert len(queries.runs(returned)) == 4
    assert torch.equal(queries.load_mask(returned, ids[1], "layer"), torch.arange(12).view(3, 4) % 3 == 0)


def test_ls_shows_a_running_jobs_host_and_lease(tmp_path):
    store = Store(tmp_path / "wb.duckdb")
    mine, _ = claims.try_claim(store, "key-live")
    store.start_run("key-live", "prune", "{}", {"method": "m"}, {})
    store.start_run("key-orphan", "prune", "{}", {"method": "m"}, {})  # running, but nobody holds its key
    rows = {r["key"]: r for r in json.loads(workbench("ls", "--json", "--store", store.path).stdout)}
    assert rows["key-live"]["lease_host"] == mine.host and rows["key-live"]["lease_expired"] is False
    assert 0 <= rows["key-live"]["lease_age_s"] < 120
    assert rows["key-orphan"]["lease_host"] is None
    table = workbench("ls", "--store", store.path).stdout
    assert "lease" in table and " ago" in table and "none" in table


def test_store_bench_with_a_kill_loses_nothing_and_runs_nothing_twice(tmp_path):
    report = run_stress(str(tmp_path / "wb.duckdb"), writers=2, jobs=3, kills=1, workdir=tmp_path / "bench",
                        progress=False)
    assert report.present_once == 3 and report.missing == 0 and report.duplicated == 0
    assert report.reruns == 0 and report.writer_errors == [] and report.reader_errors == []
    assert report.kills == 1 and report.running_left == 0 and report.claims_left == 0


def test_store_bench_through_a_ray_cluster_runs_every_job_once(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'sparsity-workbench[ray]'")
    report = run_stress(str(tmp_path / "wb.duckdb"), writers=2, jobs=3, workdir=tmp_path / "bench", progress=False,
                        executor="ray", ray_cpus=2)
    assert report.executor == "ray" and report.writers_failed == 0
    assert report.present_once == 3 and report.missing == 0 and report.duplicated == 0
    assert report.executions == 3 and report.reruns == 0 and report.cached == 3  # the second writer's three
    assert report.writer_errors == [] and report.reader_errors == []
    assert report.running_left == 0 and report.claims_left == 0


def test_store_bench_refuses_kills_on_ray(tmp_path):
    with pytest.raises(WorkbenchError, match="--kills"):
        run_stress(str(tmp_path / "wb.duckdb"), writers=1, jobs=1, kills=1, executor="ray", progress=False)
