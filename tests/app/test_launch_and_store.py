"""The Launch page starts real jobs in the background and shows their rows; the app holds no connection
between reruns, and a store locked by a writer gives a notice, not a crash."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
import streamlit as st
from workbench_app import data, launcher

from tests.app.conftest import APP
from tests.app.helpers import no_exception, notices
from workbench import queries
from workbench.store import Store

TINY = {"launch_cal_samples": 4, "launch_cal_len": 32, "launch_eval_windows": 2, "launch_eval_len": 32}


def fill(at, **values) -> None:
    """Set form widgets by key (the form commits them when it is submitted)."""
    for key, value in values.items():
        at.get_by_key(key).set_value(value)


def submit(at):
    return next(b for b in at.button if b.label == "Validate and start").click().run()


def test_the_form_estimates_a_jobs_time_from_the_store(open_page, multi):
    path, _ = multi
    at = open_page(path, "launch")
    no_exception(at)
    estimate = next(c.value for c in at.caption if c.value.startswith("Each job reads"))
    # the form's model (SmolLM2) has finished prune runs here: 64 x 512 + 64 x 512 tokens at their pace
    assert "65,536 tokens through smollm2-135m" in estimate and "Roughly 10 s per job" in estimate
    at.get_by_key("launch_mode").set_value("Sweep").run()
    at.get_by_key("launch_sparsities").set_value("0.5, 0.6, 0.7").run()
    estimate = next(c.value for c in at.caption if c.value.startswith("Each job reads"))
    assert "3 jobs about 30 s" in estimate


def test_invalid_specs_are_reported_inline_and_start_nothing(open_page, tmp_path):
    store = tmp_path / "store" / "workbench.duckdb"
    at = open_page(store, "launch")
    fill(at, launch_model="tiny-llama", launch_pattern="5:4", **TINY)
    submit(at)
    no_exception(at)
    assert "must keep fewer than it groups" in notices(at)
    at.get_by_key("launch_mode").set_value("YAML").run()
    at.text_area(key="launch_yaml_text").input("model: tiny-llama\nmethdo: magnitude")
    submit(at)
    assert "unknown key 'methdo'" in notices(at) and "allowed keys are" in notices(at)
    assert not launcher.launches_folder(str(store)).exists() and not store.exists()


def test_a_launched_job_runs_in_the_background_and_its_rows_appear(open_page, tmp_path):
    store = tmp_path / "store" / "workbench.duckdb"
    at = open_page(store, "launch")
    fill(at, launch_model="tiny-llama", launch_method="random", launch_sparsity=0.6, **TINY)
    submit(at)
    no_exception(at)
    assert "Started 1 job in the background" in at.success[0].value
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        time.sleep(1.0)
        at.run()
        no_exception(at)  # the page re-reads the store while the job writes it
        (launch,) = launcher.list_launches(str(store))
        if launch.status != "running":
            break
    assert launch.status == "finished", launch.log()[-2000:]
    assert launch.progress().fraction == 1.0 and at.get("progress")
    bars = [bar.proto.text for bar in at.get("progress")]
    assert bars[0].startswith("1 of 1 job") and "|" not in bars[0]  # words, not the raw tqdm line
    rows = at.dataframe[-1].value
    assert list(rows["method"]) == ["random"] and list(rows["status"]) == ["finished"]
    assert rows["achieved_sparsity"].iloc[0] == pytest.approx(0.6, abs=0.01)
    stored = queries.run(Store(store), rows["run_id"].iloc[0])
    assert stored["spec"]["model"] == "tiny-llama" and stored["spec"]["evaluation"]["windows"] == 2


def test_a_launch_can_be_stopped(tmp_path):
    store = tmp_path / "workbench.duckdb"
    sweep = {"base": {"model": "tiny-llama", "method": "magnitude"}}
    launch = launcher.start(sweep, ["{}"], str(store), "to stop")
    assert launch.status == "running"
    launcher.stop(launch)
    deadline = time.monotonic() + 20
    while launch.status == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert launch.status == "stopped"
    assert json.loads((launch.folder / "meta.json").read_text())["title"] == "to stop"


def test_pages_hold_no_connection_between_reruns(open_page, rich, tmp_path):
    path = tmp_path / "copy.duckdb"
    shutil.copy(rich[0], path)
    for page in ("runs", "layers", "masks"):
        at = open_page(path, page)
        no_exception(at)
        # DuckDB refuses a read-write connection in a process that still holds a read-only one to the file
        with Store(path).write() as con:
            con.execute("SELECT count(*) FROM runs").fetchone()


def test_a_store_locked_by_a_writer_shows_a_notice_then_recovers(open_page, rich, tmp_path, monkeypatch):
    path = tmp_path / "locked.duckdb"
    shutil.copy(rich[0], path)
    monkeypatch.setattr(data, "BUSY_TIMEOUT_S", 0.3)
    st.cache_data.clear()
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
                               "print('locked', flush=True); time.sleep(60)", str(path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        at = open_page(path, "runs")
        no_exception(at)
        assert "The store is busy" in notices(at)
        assert any(b.label == "Retry" for b in at.button) and not at.dataframe
    finally:
        holder.kill()
        holder.wait()
    next(b for b in at.button if b.label == "Retry").click().run()
    no_exception(at)
    assert len(at.dataframe[0].value) == 9


def test_the_server_binds_to_localhost_by_default():
    # `streamlit run app/main.py` from the repository root reads this file (the browser test relies on it too)
    lines = [line.strip() for line in (APP.parent / ".streamlit" / "config.toml").read_text().splitlines()]
    server = lines[lines.index("[server]") + 1:]
    server = server[:next((i for i, line in enumerate(server) if line.startswith("[")), len(server))]
    assert 'address = "127.0.0.1"' in server
