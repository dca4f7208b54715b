"""Killed jobs: the `running` rows and checkpoint folders they leave are recognised (`workbench ls`) and
removed by `workbench gc`, which never touches a run whose process still runs or another host's rows."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime

import yaml
from typer.testing import CliRunner

from workbench import queries
from workbench.cli import app
from workbench.records import JobOutput, Metric
from workbench.runner import run_job
from workbench.spec import job_key, parse_spec
from workbench.store import Store

TRAIN = {"kind": "train", "model": "tiny-llama", "data": "shakespeare", "method": "dense", "steps": 4, "seq_len": 32,
         "checkpoint_every": 2, "eval_every": 4, "eval_subset": 2}


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _set(store: Store, run_id: str, **columns) -> None:
    with store.write() as con:
        for column, value in columns.items():
            con.execute(f"UPDATE runs SET {column} = ? WHERE run_id = ?", [value, run_id])


def _killed_cli(store: Store, spec_file, fault: str, *args: str) -> None:
    env = {**os.environ, "WORKBENCH_FAULTPOINT": fault, "WORKBENCH_STORE": str(store.path)}
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "run", str(spec_file), "--quiet", *args], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 137, proc.stderr[-2000:]


def test_a_killed_forced_rerun_of_a_finished_key_is_shown_stale_and_collected(tmp_path, tiny_spec):
    store = Store(tmp_path / "wb.duckdb")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec))
    first = run_job(tiny_spec, store)
    _killed_cli(store, spec_file, "finish:rows_written", "--force")  # killed inside its final transaction
    assert run_job(tiny_spec, store).cached  # the cache still serves the finished run: nothing replaces the row
    frame = queries.runs(store)
    left = frame[frame["status"] == "running"]
    assert len(left) == 1 and bool(left["stale"].iloc[0]) and left["host"].iloc[0] == platform.node()

    listing = CliRunner().invoke(app, ["ls", "--store", str(store.path)])
    assert listing.exit_code == 0 and "running (stale)" in listing.stdout and str(left["pid"].iloc[0]) in listing.stdout
    as_json = json.loads(CliRunner().invoke(app, ["ls", "--json", "--store", str(store.path)]).stdout)
    assert sorted((r["status"], r["stale"]) for r in as_json) == [("finished", False), ("running", True)]

    result = CliRunner().invoke(app, ["gc", "--store", str(store.path)])
    assert result.exit_code == 0 and result.stdout.startswith("removed 1 stale running runs of this host")
    assert queries.runs(store)["run_id"].tolist() == [first.run_id]
    assert CliRunner().invoke(app, ["gc", "--store", str(store.path)]).stdout.startswith("removed 0 stale")


def test_a_killed_forced_train_run_leaves_a_checkpoint_that_gc_removes(tmp_path):
    store = Store(tmp_path / "wb.duckdb")
    spec_file = tmp_path / "train.yaml"
    spec_file.write_text(yaml.safe_dump(TRAIN))
    run_job(TRAIN, store)
    _killed_cli(store, spec_file, "train:step=2", "--force")  # after the checkpoint of step 2
    folder = tmp_path / "checkpoints" / job_key(parse_spec(TRAIN))
    assert folder.is_dir() and store.stale_runs()
    removed = store.collect_garbage()
    assert len(removed.stale_runs) == 1 and removed.checkpoints == [folder.name] and not folder.exists()
    assert queries.runs(store)["status"].tolist() == ["finished"]


def test_gc_removes_only_stale_rows_of_this_host_with_their_rows(store):
    ids = {name: store.start_run(f"key-{name}", "prune", "{}", {}, {})
           for name in ("dead", "reused pid", "alive", "other host", "no pid")}
    _set(store, ids["dead"], pid=_dead_pid())
    _set(store, ids["reused pid"], created_at=datetime(2000, 1, 1))  # this process started long after the row
    _set(store, ids["other host"], pid=_dead_pid(), host="some-other-machine")
    _set(store, ids["no pid"], pid=None)
    with store.write() as con:
        for run_id in ids.values():
            con.execute("INSERT INTO metrics VALUES (?, 'partial', 1.0, 1)", [run_id])
            con.execute("INSERT INTO kernel_results (run_id, case_id) VALUES (?, 'c')", [run_id])
    stale = {ids["dead"], ids["reused pid"]}
    assert set(store.stale_runs()) == stale
    assert dict(zip(queries.runs(store)["run_id"], queries.runs(store)["stale"])) == {i: i in stale for i in ids.values()}

    removed = store.collect_garbage()
    assert set(removed.stale_runs) == stale
    kept = set(ids.values()) - stale
    assert set(queries.runs(store)["run_id"]) == kept
    assert set(queries.metrics(store)["run_id"]) == kept and set(queries.kernel_results(store)["run_id"]) == kept
    assert store.collect_garbage().stale_runs == []


def test_gc_removes_checkpoint_folders_of_finished_keys_only(store):
    def finished(key: str) -> str:
        run_id = store.start_run(key, "train", "{}", {}, {})
        store.finish_run(run_id, key, JobOutput(metrics=[Metric("loss", 1.0)]), 1.0)
        return run_id

    finished("a" * 64)
    finished("b" * 64)
    store.start_run("b" * 64, "train", "{}", {}, {})  # a live --force rerun of b: its checkpoints are in use
    store.start_run("c" * 64, "train", "{}", {}, {})  # never finished: its checkpoints resume the next run
    folder = store.artifacts_dir / "checkpoints"
    for name in ("a" * 64, "b" * 64, "c" * 64, "not-a-key"):
        (folder / name / "step-00000002").mkdir(parents=True)
    assert store.collect_garbage().checkpoints == ["a" * 64]
    assert sorted(p.name for p in folder.iterdir()) == ["b" * 64, "c" * 64, "not-a-key"]


def test_gc_of_a_missing_store_creates_nothing(tmp_path):
    result = CliRunner().invoke(app, ["gc", "--store", str(tmp_path / "none" / "wb.duckdb")])
    assert result.exit_code == 0 and "removed 0" in result.stdout
    assert not (tmp_path / "none" / "wb.duckdb").exists()
