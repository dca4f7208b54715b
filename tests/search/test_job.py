"""The search job through the runner: records, the shared level database, resuming, the prune side."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from workbench import queries
from workbench.errors import SpecError, WorkbenchError
from workbench.runner import run_job
from workbench.spec import job_key, parse_spec
from workbench.store import Store

SCRIPT = """
import json, sys
from workbench.runner import run_job
from workbench.store import Store
run_job(json.loads(sys.argv[2]), Store(sys.argv[1]))
"""


def _levels(store, run_id):
    frame = queries.layer_stats(store, [run_id])
    return {layer: json.loads(extra)["level"] for layer, extra in zip(frame["layer"], frame["extra"])}


def _fitness(store, run_id):
    frame = queries.metrics(store, [run_id], ["fitness"])
    return frame["step"].tolist(), frame["value"].tolist()


def test_a_search_run_stores_its_allocation_and_its_trace(store, search_spec):
    result = run_job(search_spec, store)
    spec = parse_spec(search_spec)
    metrics = result.metrics
    assert metrics["evaluations"] == spec.budget.evaluations() == 1 + 4 * (4 + 2)
    steps, values = _fitness(store, result.run_id)
    assert steps == list(range(5))
    assert all(b <= a for a, b in zip(values, values[1:]))
    assert values[0] == metrics["uniform_fitness"] > 0
    assert metrics["best_fitness"] == values[-1] == min(values[0], metrics["final_stage_min"])
    assert metrics["levels_cached"] == 0 and metrics["resumed_from_generation"] == 0

    layers = queries.layer_stats(store, [result.run_id])
    extras = [json.loads(extra) for extra in layers["extra"]]
    assert sum(extra["level"] for extra in extras) == 0
    pruned = sum(extra["pruned"] for extra in extras)
    uniform = sum(extra["pruned"] - extra["level"] * metrics["level_step"] for extra in extras)
    assert pruned == uniform and metrics["sparsity"] == pruned / layers["numel"].sum()
    assert layers["achieved_sparsity"].tolist() == [e["pruned"] / n for e, n in zip(extras, layers["numel"])]
    assert queries.runs(store)[["kind", "method", "allocation"]].values.tolist() == [["search", "wanda", "evopress"]]

    # random search over the same levels: the database is found built, and the budget is the same
    other = run_job({**search_spec, "method": "random"}, store)
    assert other.metrics["levels_cached"] == 1
    assert other.metrics["evaluations"] == metrics["evaluations"]
    assert other.metrics["best_fitness"] <= other.metrics["uniform_fitness"] == metrics["uniform_fitness"]
    assert other.metrics["final_stage_count"] == metrics["final_stage_count"] == 4 * 2


def test_a_killed_search_continues_from_its_state_and_ends_where_an_uninterrupted_one_does(store, tmp_path,
                                                                                          search_spec):
    reference_store = Store(tmp_path / "reference" / "wb.duckdb")
    reference = run_job(search_spec, reference_store)
    again = run_job(search_spec, Store(tmp_path / "again" / "wb.duckdb"))  # a seed reproduces the search
    assert _levels(reference_store, reference.run_id) == _levels(Store(tmp_path / "again" / "wb.duckdb"), again.run_id)
    assert again.metrics["best_fitness"] == reference.metrics["best_fitness"]

    env = {**os.environ, "WORKBENCH_FAULTPOINT": "search:generation=2", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(store.path), json.dumps(search_spec)], env=env,
                          capture_output=True)
    assert proc.returncode == 137, proc.stderr.decode()[-2000:]
    state = store.path.parent / "checkpoints" / job_key(parse_spec(search_spec)) / "search-state.json"
    assert json.loads(state.read_text())["state"]["generation"] == 2
    assert queries.runs(store)["status"].tolist() == ["running"]

    resumed = run_job(search_spec, store)
    assert resumed.metrics["resumed_from_generation"] == 2
    assert resumed.metrics["levels_cached"] == 1  # built before the kill
    assert not state.exists()
    assert _levels(store, resumed.run_id) == _levels(reference_store, reference.run_id)
    assert _fitness(store, resumed.run_id) == _fitness(reference_store, reference.run_id)
    assert resumed.metrics["evaluations"] == reference.metrics["evaluations"]
    assert queries.runs(store)["status"].tolist() == ["finished"]


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_a_prune_spec_naming_the_search_reproduces_its_per_layer_sparsity(store, search_spec, method):
    search = run_job({**search_spec, "prune_method": method}, store)
    searched = queries.layer_stats(store, [search.run_id]).set_index("layer")
    assert (searched["achieved_sparsity"] != 0.5).any()  # the winner is not the uniform allocation

    prune = {"model": "tiny-llama", "method": method, "sparsity": 0.5, "allocation": "search",
             "allocation_params": {"run": search.run_id}, "calibration": search_spec["calibration"],
             "evaluation": search_spec["evaluation"]}
    for reference in (search.run_id, search.key, search.run_id[:12]):
        pruned = run_job({**prune, "allocation_params": {"run": reference}}, store)
        rows = queries.layer_stats(store, [pruned.run_id]).set_index("layer").loc[searched.index]
        assert rows["target_sparsity"].tolist() == searched["target_sparsity"].tolist()
        assert rows["achieved_sparsity"].tolist() == searched["achieved_sparsity"].tolist()
        assert pruned.metrics["sparsity"] == pytest.approx(search.metrics["sparsity"], abs=1e-12)


def test_a_prune_spec_must_name_a_finished_search_of_its_model_and_sparsity(store, search_spec, tiny_spec):
    search = run_job(search_spec, store)
    prune = {**tiny_spec, "method": "wanda", "allocation": "search", "allocation_params": {"run": search.run_id}}
    with pytest.raises(SpecError, match="searched sparsity 0.5"):
        run_job({**prune, "sparsity": 0.6}, store)
    plain = run_job(tiny_spec, store)
    with pytest.raises(SpecError, match="not a finished search"):
        run_job({**prune, "allocation_params": {"run": plain.run_id}}, store)
    with pytest.raises(WorkbenchError, match="no run matches"):
        run_job({**prune, "allocation_params": {"run": "nonexistent"}}, store)
    with pytest.raises(SpecError, match="allocation_params.run"):
        parse_spec({**prune, "allocation_params": {}})
    assert len(queries.runs(store)) == 2  # the refused specs left nothing behind


@pytest.mark.parametrize("change, message", [
    ({"space": "widths"}, "search space 'widths' is not supported. Fix: use space: unstructured | nm | structured"),
    ({"evaluation": {"tasks": "shakespeare-nextline"}}, "a search does not score evaluation.tasks"),
    ({"blocks": 3}, "blocks applies to space: depth"),
    ({"budget": {"survivors": [2, 2], "tokens": [64, 128]}}, "last stage keeps one"),
    ({"budget": {"survivors": [4], "tokens": [64, 128]}}, "same number of selection stages"),
    ({"budget": {"offspring": 2, "survivors": [4, 1], "tokens": [64, 128]}}, "cannot keep 4 of 2"),
    ({"budget": {"survivors": [2, 1], "tokens": [64, 100]}}, "not a whole number of calibration windows"),
    ({"budget": {"survivors": [2, 1], "tokens": [128, 64]}}, "never shrink"),
    ({"prune_method": "magnitude"}, "prune_method"),
    ({"sparsity": 1.0}, "sparsity"),
])
def test_the_spec_refuses_what_it_cannot_search(search_spec, change, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({**search_spec, **change})
