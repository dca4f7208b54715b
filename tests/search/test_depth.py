"""The depth space through the runner: which blocks to drop, the same budget for both methods, and a
structured prune spec that drops exactly the searched blocks."""

from __future__ import annotations

import json

import pytest

from workbench import queries
from workbench.errors import SpecError
from workbench.runner import run_job
from workbench.spec import parse_spec

from .conftest import DEPTH_BLOCKS


def _kept(store, run_id) -> list[int]:
    frame = queries.layer_stats(store, [run_id]).sort_values("block")
    return [json.loads(extra)["kept"] for extra in frame["extra"]]


def test_a_depth_search_drops_the_count_within_its_budget_and_a_seed_reproduces_it(store, tmp_path, depth_spec):
    result = run_job(depth_spec, store)
    spec = parse_spec(depth_spec)
    metrics = result.metrics
    kept = _kept(store, result.run_id)
    assert len(kept) == DEPTH_BLOCKS and DEPTH_BLOCKS - sum(kept) == metrics["blocks_dropped"] == 3
    assert metrics["sparsity"] == pytest.approx(3 / DEPTH_BLOCKS)  # blocks of one size
    # the start round (4 random candidates through both stages), then 4 generations of the same cost
    assert metrics["evaluations"] == spec.evaluations() == (4 + 2) + 4 * (4 + 2)
    assert metrics["best_fitness"] <= metrics["start_fitness"]
    assert metrics["best_fitness"] == min(metrics["start_fitness"], metrics["final_stage_min"])
    assert "levels_cached" not in metrics and "uniform_fitness" not in metrics
    assert queries.runs(store)[["kind", "method", "pattern", "allocation"]].values.tolist() == [
        ["search", None, "structured:blocks", "evopress"]]

    other = run_job({**depth_spec, "method": "random"}, store)
    assert other.metrics["evaluations"] == metrics["evaluations"]
    assert other.metrics["start_fitness"] == metrics["start_fitness"]  # both begin with the same round
    assert sum(_kept(store, other.run_id)) == DEPTH_BLOCKS - 3

    from workbench.store import Store

    again = Store(tmp_path / "again" / "wb.duckdb")
    repeated = run_job(depth_spec, again)
    assert _kept(again, repeated.run_id) == kept and repeated.metrics["best_fitness"] == metrics["best_fitness"]


def test_a_structured_prune_spec_naming_the_depth_search_drops_the_same_blocks(store, depth_spec):
    search = run_job({**depth_spec, "blocks": None, "sparsity": 0.375}, store)  # 3 of 8 blocks
    assert search.metrics["blocks_dropped"] == 3
    same = {key: depth_spec[key] for key in ("model", "data", "calibration", "evaluation")}
    prune = {**same, "structure": "blocks", "method": "block-influence", "sparsity": 0.375,
             "allocation": "search", "allocation_params": {"run": search.run_id}}
    pruned = run_job(prune, store)
    assert _kept(store, pruned.run_id) == _kept(store, search.run_id)
    mask = queries.load_masks(store, pruned.run_id)["model.layers"].reshape(-1).tolist()
    assert [int(k) for k in mask] == _kept(store, search.run_id)
    assert pruned.metrics["blocks_kept"] == DEPTH_BLOCKS - 3
    # the same model: dropping blocks from the block list is what shrinking does
    assert pruned.metrics["perplexity"] == pytest.approx(search.metrics["candidate_perplexity"], rel=1e-6)

    chosen = run_job({**prune, "allocation": "uniform", "allocation_params": {}}, store)  # ShortGPT's own choice
    assert chosen.metrics["blocks_kept"] == DEPTH_BLOCKS - 3

    with pytest.raises(SpecError, match="dropped 3 of 8 blocks; sparsity 0.5 drops 4. Fix: set sparsity: 0.375"):
        run_job({**prune, "sparsity": 0.5}, store)
    unstructured = {**same, "method": "wanda", "sparsity": 0.375, "allocation": "search",
                    "allocation_params": {"run": search.run_id}}
    with pytest.raises(SpecError, match="searched space depth.*structure: blocks"):
        run_job(unstructured, store)
    assert len(queries.runs(store)) == 3  # the refused specs left nothing behind


def test_a_structured_prune_spec_cannot_name_an_unstructured_search(store, search_spec):
    search = run_job(search_spec, store)
    prune = {"model": "tiny-llama", "structure": "blocks", "method": "block-influence", "sparsity": 0.5,
             "allocation": "search", "allocation_params": {"run": search.run_id},
             "calibration": search_spec["calibration"], "evaluation": search_spec["evaluation"]}
    with pytest.raises(SpecError, match="searched space unstructured"):
        run_job(prune, store)
    with pytest.raises(SpecError, match="searched space unstructured"):
        run_job({**prune, "structure": "channels", "method": "wanda-sp", "sparsity": 0.3}, store)
    with pytest.raises(SpecError, match="spreads the removals itself"):
        parse_spec({**prune, "allocation": "owl", "allocation_params": {}})


@pytest.mark.parametrize("change, message", [
    ({"blocks": None}, "blocks or sparsity, one of them. Fix"),
    ({"sparsity": 0.3}, r"one of them \(both are given\)"),
    ({"prune_method": "wanda"}, "space depth has no level database, so prune_method does not apply"),
    ({"levels": {"max": 2}}, "so levels does not apply"),
    ({"space": "unstructured"}, "blocks applies to space: depth"),
    ({"evaluation": {"windows": 2, "seq_len": 64, "tasks": ["shakespeare-nextline"]}},
     "a search does not score evaluation.tasks .*name them in the prune spec"),
])
def test_the_depth_spec_refuses_what_does_not_apply(depth_spec, change, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({**depth_spec, **change})


def test_a_depth_spec_keys_neither_levels_nor_a_pruning_method(depth_spec, search_spec):
    canonical = parse_spec(depth_spec).canonical()
    assert canonical["blocks"] == 3 and canonical["space"] == "depth"
    assert not {"prune_method", "prune_params", "levels"} & set(canonical)
    assert "method" not in parse_spec(depth_spec).identity_parts()
    unstructured = parse_spec(search_spec).canonical()  # keys of earlier searches stay as they were
    assert "blocks" not in unstructured and unstructured["sparsity"] == 0.5


def test_more_blocks_than_the_model_has_fail_before_the_run_is_stored(store, depth_spec):
    with pytest.raises(SpecError, match=f"drop 8 of {DEPTH_BLOCKS} blocks"):
        run_job({**depth_spec, "blocks": DEPTH_BLOCKS}, store)
    assert queries.runs(store).empty
