"""The shared store: DuckLake with a PostgreSQL catalog, written by several processes at once."""

import subprocess
import sys
import time

import torch

from workbench import queries
from workbench.runner import run_job
from workbench.records import JobOutput, Metric
from workbench.store import Store

WRITER = """
import sys
from workbench.records import JobOutput, MaskRecord, Metric
from workbench.records import JobOutput, Metric
from workbench.store import Store
import torch
store = Store(sys.argv[1])
for i in range(int(sys.argv[3])):
    key = f"{sys.argv[2]}-{i}"
    run_id = store.start_run(key, "prune", "{}", {"method": sys.argv[2]}, {})
    mask = torch.arange(16).view(4, 4) % (i + 2) == 0
    store.finish_run(run_id, key, JobOutput(metrics=[Metric("i", i)], masks=[MaskRecord("layer", mask)]), 0.0)
"""


def test_two_writer_processes_and_a_reader_lose_nothing(lake_url):
    reader = Store(lake_url)
    reader.transaction(lambda con: None)  # create the schema once, as the first job would
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, lake_url, name, "15"]) for name in ("a", "b")]
    polled = 0
    while any(w.poll() is None for w in writers):
        polled = max(polled, len(queries.runs(reader)))
        time.sleep(0.1)
    assert [w.returncode for w in writers] == [0, 0]
    runs = queries.runs(Store(lake_url))
    assert len(runs) == 30 and set(runs["status"]) == {"finished"} and runs["key"].is_unique
    assert len(queries.metrics(Store(lake_url))) == 30
    mask = queries.load_mask(Store(lake_url), runs.loc[runs["key"] == "b-3", "run_id"].item(), "layer")
    assert torch.equal(mask, torch.arange(16).view(4, 4) % 5 == 0)


def test_a_job_runs_and_is_cached_on_the_shared_store(lake_url, tiny_spec):
    store = Store(lake_url)
    first = run_job(tiny_spec, store)
    second = run_job(tiny_spec, store)
    assert second.cached and second.run_id == first.run_id
    masks = queries.load_masks(store, first.run_id)
    assert len(masks) == 14 and all(abs(float((~m).float().mean()) - 0.5) < 0.01 for m in masks.values())


def test_lake_paths_with_quotes_and_question_marks_attach(tmp_path):
    """The ATTACH statement quotes the catalog and the data path; neither may break it or be rewritten."""
    folder = tmp_path / "it's a lake?"
    folder.mkdir()
    url = f"ducklake:sqlite:{folder / 'cat?alog.sqlite'}"
    store = Store(url, data_path=folder / "data 'x'?")
    run_id = store.start_run("key-1", "prune", "{}", {"method": "m"}, {})
    store.finish_run(run_id, "key-1", JobOutput(metrics=[Metric("i", 1.0)]), 0.0)
    again = Store(url, data_path=folder / "data 'x'?")
    assert again.finished_run("key-1")["run_id"] == run_id
    assert (folder / "cat?alog.sqlite").exists() and (folder / "data 'x'?").is_dir()
