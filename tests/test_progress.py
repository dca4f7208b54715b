"""Progress: a running job's file beside the store (there while it runs, gone when it ends), plain lines
wherever stderr is no terminal, and the bars' place in the file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from workbench import progress
from workbench.progress import Bar, JobProgress, publish, read_running


def _wait_for(condition, timeout_s: float = 60.0, every_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError("timed out")


def test_a_jobs_progress_file_is_there_while_it_runs_and_gone_when_it_ends(tmp_path, tiny_spec):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec))
    store = tmp_path / "store" / "workbench.duckdb"
    env = {**os.environ, "WORKBENCH_SLOWPOINT": "run:started", "WORKBENCH_SLOW_S": "3"}
    job = subprocess.Popen([sys.executable, "-m", "workbench.cli", "run", str(spec), "--store", str(store)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        # held 3 s right after its run row is written: the file must be there by then
        running = _wait_for(lambda: read_running(store.parent) or job.poll() is not None)
        assert running is not True, "the job ended before its progress file was seen"
        (found,) = running.values()
        assert found.pid == job.pid and found.kind == "prune" and found.phase == "started"
        assert (store.parent / "running" / f"{found.run_id}.json").is_file()
        out, err = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode == 0, err
    assert out.startswith(found.run_id)  # the file named the run the job stored
    assert list((store.parent / "running").iterdir()) == []
    # stderr is a pipe here, no terminal: plain lines, no carriage returns or escape codes
    assert "\r" not in err and "\x1b[" not in err
    assert "perplexity: batch 1/1 (100%)" in err.splitlines()


SNIPPET = textwrap.dedent("""
    from workbench import progress
    progress.LINE_GAP_S = 0
    outer = progress.Bar(total=3, desc="prune", unit="layer")
    for layer in range(3):
        for step in progress.Bar(range(20), desc="statistics", unit="batch", leave=False):
            pass
        outer.update(1)
    outer.close()
""")


def test_bars_print_plain_lines_when_stderr_is_no_terminal():
    proc = subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "\x1b[" not in proc.stderr
    lines = [line.split(",")[0] for line in proc.stderr.splitlines()]  # a stalled machine may add ", 00:01 elapsed"
    assert [line for line in lines if line.startswith("prune:")] == [
        "prune: layer 1/3 (33%)", "prune: layer 2/3 (66%)", "prune: layer 3/3 (100%)"]
    # one line per 10% of the inner bar: 10 of its 20 steps, for each of the 3 layers
    assert lines.count("statistics: batch 20/20 (100%)") == 3
    assert len([line for line in lines if line.startswith("statistics:")]) == 30


def test_a_quick_bar_prints_one_line_where_it_ends(capsys):
    for _ in Bar(range(200), desc="perplexity", unit="batch"):
        pass
    assert capsys.readouterr().err == "perplexity: batch 200/200 (100%)\n"


def test_a_disabled_bar_prints_nothing(capsys):
    bar = Bar(total=5, desc="quiet", enabled=False)
    bar.update(5)
    bar.close()
    assert capsys.readouterr().err == ""


def test_a_published_job_shows_its_phase_bars_metrics_and_log(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress, "WRITE_EVERY_S", 0.05)
    publisher = publish(tmp_path, "run-1", "k" * 64, "train")
    path = tmp_path / "running" / "run-1.json"
    try:
        assert JobProgress.from_json(path.read_text()).phase == "started"  # written at once
        progress.phase("training")
        bar = Bar(total=10, desc="train sr-ste", unit="step", enabled=False)  # still reported to the file
        bar.update(4)
        bar.set_postfix({"accuracy": "0.8123"})
        progress.metric("loss", 0.5)
        job = _wait_for(lambda: (j := read_running(tmp_path).get("run-1")) and j.metrics.get("loss") and j)
        assert job.phase == "training" and job.pid == os.getpid()
        assert [(b.what, b.done, b.total, b.unit) for b in job.bars] == [("train sr-ste", 4, 10, "step")]
        assert job.metrics == {"accuracy": 0.8123, "loss": 0.5}
        assert job.log[0] == "training"
        assert job.summary() == "training · train sr-ste: step 4/10 (40%) · accuracy=0.8123, loss=0.5"
        bar.close()
        _wait_for(lambda: read_running(tmp_path)["run-1"].bars == [])
    finally:
        publisher.close()
    assert not path.exists() and progress.current() is None
    assert capsys.readouterr().err == ""


def test_a_killed_jobs_file_goes_when_the_next_job_publishes(tmp_path):
    folder = tmp_path / "running"
    folder.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    left = JobProgress("run-dead", "k" * 64, "prune", platform.node(), gone.pid, 0.0, 0.0)
    (folder / "run-dead.json").write_text(left.to_json())
    other_host = JobProgress("run-elsewhere", "k" * 64, "prune", "another-host", gone.pid, 0.0, 0.0)
    (folder / "run-elsewhere.json").write_text(other_host.to_json())
    publisher = publish(tmp_path, "run-2", "k" * 64, "prune")
    try:
        assert sorted(read_running(tmp_path)) == ["run-2", "run-elsewhere"]  # another host's job is its own business
    finally:
        publisher.close()


def test_progress_files_are_json_a_reader_can_parse(tmp_path):
    publisher = publish(tmp_path, "run-3", "k" * 64, "prune")
    try:
        data = json.loads((tmp_path / "running" / "run-3.json").read_text())
    finally:
        publisher.close()
    assert {"run_id", "key", "kind", "host", "pid", "started_at", "updated_at", "phase", "bars", "metrics",
            "log"} <= set(data)


@pytest.mark.parametrize("seconds, text", [(5, "00:05"), (65, "01:05"), (3725, "1:02:05")])
def test_durations_read_as_tqdm_writes_them(seconds, text):
    assert progress.clock(seconds) == text


def test_a_process_that_only_imported_ipykernel_is_not_a_notebook(capsys):
    import ipykernel  # noqa: F401 - as the notebook tests leave it imported in the test process

    test_a_quick_bar_prints_one_line_where_it_ends(capsys)
