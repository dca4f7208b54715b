"""Tasks in prune runs: local tasks end to end into the store, offline; bad task names fail before storing."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from workbench import queries
from workbench.errors import SpecError
from workbench.evaluation import harness
from workbench.results import quality_metrics
from workbench.runner import run_job

LOCAL = ["pydoc-nextline", "shakespeare-lastword", "shakespeare-nextline"]


def _with_tasks(spec, tasks, **more):
    return {**spec, "evaluation": {**spec["evaluation"], "tasks": tasks, **more}}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub: the probe says so, and nothing is in the (empty) data set caches."""
    import datasets.config
    from huggingface_hub import constants

    monkeypatch.setattr(harness, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-hub"))


def _no_runs(store):
    assert queries.runs(store).empty


def test_local_tasks_run_end_to_end_offline_into_the_store(store, tiny_spec, monkeypatch):
    def no_probe(timeout=3.0):
        raise AssertionError("local tasks never ask for the hub")

    monkeypatch.setattr(harness, "hub_reachable", no_probe)
    result = run_job(_with_tasks(tiny_spec, LOCAL, limit=4), store)
    assert result.status == "finished"
    metrics = result.metrics
    for task in LOCAL:
        assert 0.0 <= metrics[f"{task}/acc"] <= 1.0
        assert f"{task}/acc_stderr" in metrics
        assert metrics[f"{task}/documents"] == 4
    for task in ("pydoc-nextline", "shakespeare-nextline"):
        assert 0.0 <= metrics[f"{task}/acc_norm"] <= 1.0 and f"{task}/acc_norm_stderr" in metrics
    assert metrics["shakespeare-lastword/perplexity"] > 1
    stored = queries.metrics(store, [result.run_id])
    stored = dict(zip(stored["name"], stored["value"]))
    assert {name: stored[name] for name in metrics} == pytest.approx(metrics)
    # readers get each score as a quality column of the run (its standard error and document count stay in metrics)
    row = queries.runs(store).set_index("run_id").loc[result.run_id]
    scores = sorted(n for n in metrics if n.endswith(("/acc", "/acc_norm")) or n == "shakespeare-lastword/perplexity")
    assert len(scores) == 6 and quality_metrics(row.dropna().index) == ["perplexity", *scores]
    assert row["shakespeare-lastword/acc"] == pytest.approx(metrics["shakespeare-lastword/acc"])
    # the tasks score the pruned weights and leave them as they are: perplexity equals the run without tasks
    plain = run_job(tiny_spec, store)
    assert plain.key != result.key and plain.metrics["perplexity"] == pytest.approx(metrics["perplexity"])
    again = run_job(_with_tasks(tiny_spec, list(reversed(LOCAL)), limit=4), store)
    assert again.cached and again.run_id == result.run_id


def test_unknown_task_fails_before_the_run_is_stored(store, tiny_spec):
    unknown = r"unknown task 'no-such-task': neither a local task nor one lm-eval [0-9.]+ knows\. Fix: use a local task"
    with pytest.raises(SpecError, match=unknown):
        run_job(_with_tasks(tiny_spec, ["shakespeare-nextline", "no-such-task"]), store)
    _no_runs(store)


def test_hub_task_without_network_fails_before_the_run_is_stored(store, tiny_spec, offline):
    with pytest.raises(SpecError) as caught:
        run_job(_with_tasks(tiny_spec, ["hellaswag", "shakespeare-nextline"], limit=4), store)
    assert str(caught.value) == ("task hellaswag needs its data set from the Hugging Face hub, which is not reachable. "
                                 "Fix: use a local task (shakespeare-lastword, shakespeare-nextline, pydoc-nextline; "
                                 "see `workbench tasks`) or run with network.")
    _no_runs(store)


def test_tasks_need_a_causal_lm(store, tiny_spec):
    spec = {**_with_tasks(tiny_spec, ["shakespeare-nextline"]), "model": "tiny-bert"}
    with pytest.raises(SpecError, match="scores a causal LM"):
        run_job(spec, store)
    _no_runs(store)


def _workbench(*args, env):
    return subprocess.run([sys.executable, "-m", "workbench.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **env})


def test_cli_lists_tasks_and_ends_a_hub_task_offline_in_one_line(tmp_path, tiny_spec):
    listed = _workbench("tasks", "--json", env={})
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)["local"]
    assert [row["task"] for row in rows] == ["shakespeare-lastword", "shakespeare-nextline", "pydoc-nextline"]
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(_with_tasks(tiny_spec, ["hellaswag"])))
    store = tmp_path / "store" / "wb.duckdb"
    env = {"WORKBENCH_STORE": str(store), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = _workbench("run", spec, "--json", env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: task hellaswag needs its data set from the Hugging Face hub, which is not reachable. Fix: use a local "
        "task (shakespeare-lastword, shakespeare-nextline, pydoc-nextline; see `workbench tasks`) or run with network."]
    assert queries.runs(store).empty
