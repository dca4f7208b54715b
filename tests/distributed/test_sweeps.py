"""Sweeps on every executor: Ctrl-C leaves nothing claimed and the same command resumes; a local Ray
cluster runs a tiny sweep through the same runner and cache."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.distributed.conftest import TINY
from workbench import queries
from workbench.store import Store, claims

GRID = {"base": TINY, "grid": {"method": ["magnitude", "random"], "sparsity": [0.3, 0.5, 0.7]}}


def _sweep(path, store, *options):
    return [sys.executable, "-m", "workbench.cli", "sweep", str(path), "--store", str(store), *options]


def _finished(store):
    runs = queries.runs(store)
    return runs[runs["status"] == "finished"]


@pytest.mark.parametrize("options, interrupts", [
    (["--workers", "2"], 1),  # Ctrl-C: the running jobs finish, nothing more starts
    (["--workers", "2"], 2),  # Ctrl-C twice: the running jobs are stopped and release their keys
    ([], 1),  # in process: the running job is interrupted and releases its key
], ids=["pool-finish", "pool-stop", "in-process"])
def test_an_interrupted_sweep_leaves_nothing_claimed_and_the_same_command_resumes_it(tmp_path, options, interrupts):
    sweep, store = tmp_path / "sweep.yaml", Store(tmp_path / "store" / "wb.duckdb")
    sweep.write_text(yaml.safe_dump(GRID))
    # every job waits 3 s once started, so the interrupt surely finds jobs running, however fast the machine
    slow = {**os.environ, "WORKBENCH_SLOWPOINT": "run:started", "WORKBENCH_SLOW_S": "3"}
    proc = subprocess.Popen(_sweep(sweep, store.path, *options), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env=slow)
    deadline = time.monotonic() + 300
    while _finished(store).empty:  # interrupt once the first job has landed
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.2)
    for _ in range(interrupts):
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole process group
        time.sleep(0.3)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-3000:]
    assert "run the same command again to resume" in err
    assert claims.claims(store) == []  # nothing left claimed
    runs = queries.runs(store)  # a worker stopped mid-job leaves a row that is marked stale (its process is gone)
    assert runs.loc[runs["status"] == "running", "stale"].all()
    landed = len(_finished(store))
    assert 1 <= landed < 6

    again = subprocess.run(_sweep(sweep, store.path, "--json", *options), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    results = json.loads(again.stdout)
    assert len(results) == 6 and {r["status"] for r in results} == {"finished"}
    assert sum(r["cached"] for r in results) == landed  # what had finished is not run again
    runs = queries.runs(store)
    assert len(runs) == 6 and runs["key"].is_unique and claims.claims(store) == []


def test_a_tiny_sweep_runs_on_a_local_ray_cluster(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'sparsity-workbench[ray]'")
    sweep, store = tmp_path / "sweep.yaml", Store(tmp_path / "store" / "wb.duckdb")
    sweep.write_text(yaml.safe_dump({"base": TINY, "grid": {"method": ["magnitude", "random", "dense"]}}))
    proc = subprocess.Popen(_sweep(sweep, store.path, "--executor", "ray", "--workers", "2", "--json"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    results = json.loads(out)
    assert [r["status"] for r in results] == ["finished"] * 3 and not any(r["cached"] for r in results)
    runs = queries.runs(store)
    with store.read() as con:
        pids = {r[0] for r in con.execute("SELECT pid FROM runs").fetchall()}
    assert len(runs) == 3 and proc.pid not in pids  # the jobs ran in Ray's worker processes
    assert claims.claims(store) == []
    again = subprocess.run(_sweep(sweep, store.path, "--json"), capture_output=True, text=True)  # same cache
    assert again.returncode == 0 and all(r["cached"] for r in json.loads(again.stdout))
