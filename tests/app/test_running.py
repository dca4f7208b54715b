"""Jobs running now: the Running page (rows, progress files, stale rows), the Launch page's bars of a running
job, and a run page's warning when the achieved sparsity missed the target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pandas as pd

from tests.app.helpers import no_exception, notices, table
from workbench.progress import BarState, JobProgress
from workbench.records import JobOutput, Metric
from workbench.store import Store

SPEC = {"kind": "prune", "model": "tiny-llama", "data": "shakespeare", "method": "wanda", "sparsity": 0.7}
SUMMARY = {"model": "tiny-llama", "data": "shakespeare", "method": "wanda", "pattern": "unstructured",
           "allocation": "uniform", "target_sparsity": 0.7}


def _running_row(store: Store, key: str, spec: dict = SPEC) -> str:
    return store.start_run(key, "prune", json.dumps(spec, sort_keys=True), SUMMARY, {"model": "synthetic"}, None)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _progress_file(store: Store, run_id: str, key: str) -> None:
    now = time.time()
    job = JobProgress(run_id, key, "prune", "this-host", os.getpid(), now - 900, now - 600, phase="pruning",
                      bars=[BarState("wanda", 12, 30, "block")], metrics={"loss": 2.5},
                      log=["pruning", "wanda: block 9/30 (30%), 00:20 elapsed, about 00:47 left"])
    folder = store.artifacts_dir / "running"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{run_id}.json").write_text(job.to_json())


def test_running_page_lists_live_and_stale_rows_with_their_progress(open_page, tmp_path):
    store = Store(tmp_path / "workbench.duckdb")
    live = _running_row(store, "a" * 64)
    _progress_file(store, live, "a" * 64)
    stale = _running_row(store, "b" * 64, {**SPEC, "sparsity": 0.5})
    store.transaction(lambda con: con.execute("UPDATE runs SET pid = ? WHERE run_id = ?", [_dead_pid(), stale]))
    at = open_page(store.path, "running")
    no_exception(at)
    rows = table(at, "lease").set_index("run_id")
    assert rows.loc[live, "status"] == "running" and rows.loc[stale, "status"] == "running (stale)"
    assert rows.loc[live, "phase"] == "pruning" and rows.loc[live, "progress"] == "wanda: block 12/30 (40%)"
    assert rows.loc[live, "pid"] == os.getpid() and rows.loc[live, "lease"] == "none"  # no claim: written directly
    assert rows.loc[live, "updated"] == "10m ago" and rows.loc[live, "age"].endswith("s")  # its file, its row
    assert pd.isna(rows.loc[stale, "phase"])  # it has no progress file
    assert [bar.proto.text for bar in at.get("progress")] == ["wanda: block 12/30 (40%)"]
    assert "1 stale" in at.caption[0].value
    assert "wanda: block 9/30" in "\n".join(code.value for code in at.code)


def test_running_page_says_when_nothing_runs(open_page, suite_path):
    at = open_page(suite_path, "running")
    no_exception(at)
    assert "Nothing runs now" in notices(at)


def test_launch_page_shows_the_running_jobs_bars_from_its_progress_file(open_page, tmp_path):
    store = Store(tmp_path / "workbench.duckdb")
    spec_text = json.dumps(SPEC, sort_keys=True)
    run_id = _running_row(store, "c" * 64)
    _progress_file(store, run_id, "c" * 64)
    folder = store.artifacts_dir / "launches" / "20250101-000000-abcd"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"title": "wanda on tiny-llama", "started_at": time.time() - 30,
                                                  "pid": os.getpid(), "store": str(store.path), "specs": [spec_text]}))
    (folder / "log.txt").write_text("sweep: job 0/1 (0%)\n")
    at = open_page(store.path, "launch")
    no_exception(at)
    bars = [bar.proto.text for bar in at.get("progress")]
    assert bars == ["0 of 1 job", "wanda: block 12/30 (40%)"]  # the sweep's words, then the job's own bar
    assert not any("|" in text for text in bars)


def test_a_run_that_missed_its_target_sparsity_says_so_on_its_page(open_page, tmp_path):
    store = Store(tmp_path / "workbench.duckdb")
    run_id = _running_row(store, "d" * 64)
    metrics = [Metric("sparsity", 0.6892), Metric("sparsity_shortfall", 0.0108), Metric("perplexity", 257.0)]
    store.finish_run(run_id, "d" * 64, JobOutput(metrics=metrics), 2.0)
    at = open_page(store.path, "runs")
    at.multiselect(key="runs_pick").set_value([run_id]).run()
    no_exception(at)
    assert ("This run's achieved sparsity 0.6892 is 1.08 percentage points below the target 0.7."
            in [box.value for box in at.warning])
