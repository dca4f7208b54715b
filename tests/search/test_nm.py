"""The N:M space: per-layer N:M levels, exact totals through classes of layers of one size, and a prune
spec with the same pattern that applies the searched N per layer."""

from __future__ import annotations

import json
import random

import pytest
import torch

from workbench import queries
from workbench.errors import PruningError, SpecError
from workbench.jobs.search import database_key
from workbench.models import load_model
from workbench.models.layers import prunable_layers
from workbench.pruning.masks import nm_valid
from workbench.runner import run_job
from workbench.search.evolution import mutate, random_candidate
from workbench.search.levels import LevelSwapper, load_geometry, nm_geometry
from workbench.spec import parse_spec
from workbench.values import Pattern

from .test_levels import SMOLLM2_SHAPES

NAMES = ["q", "k", "v", "o", "gate", "up", "down"]


def test_nm_levels_keep_one_weight_more_or_less_of_every_m_and_trade_within_a_size():
    geometry = nm_geometry(NAMES * 2, SMOLLM2_SHAPES * 2, Pattern.parse("4:8"), 2)
    assert geometry.sparsity == 0.5 and set(geometry.low) == {-2} and set(geometry.high) == {2}  # 6:8 .. 2:8
    assert [str(geometry.pattern(level)) for level in range(-2, 3)] == ["6:8", "5:8", "4:8", "3:8", "2:8"]
    for index, (rows, cols) in enumerate(SMOLLM2_SHAPES * 2):
        for level in range(-2, 3):
            assert geometry.count(index, level) == rows * cols * (4 + level) // 8
            assert geometry.target(index, level) == 1 - (4 - level) / 8
    space = geometry.space()
    sizes = [rows * cols for rows, cols in SMOLLM2_SHAPES * 2]
    assert all((space.classes[i] == space.classes[j]) == (sizes[i] == sizes[j])
               for i in range(len(sizes)) for j in range(len(sizes)))  # q/o, k/v and gate/up/down
    uniform = geometry.pruned((0,) * geometry.size)
    rng = random.Random(0)
    for _ in range(300):
        for candidate in (random_candidate(space, rng), mutate(random_candidate(space, rng), space, rng)):
            geometry.check(candidate)
            assert geometry.pruned(candidate) == uniform  # exactly the uniform 4:8's weights


def test_nm_levels_stop_at_one_and_at_m_minus_one_kept():
    geometry = nm_geometry(NAMES * 2, SMOLLM2_SHAPES * 2, Pattern.parse("2:4"), 4)
    assert set(geometry.low) == {-1} and set(geometry.high) == {1}  # 3:4, 2:4, 1:4
    with pytest.raises(PruningError, match="no layer a level to trade"):
        nm_geometry(NAMES, SMOLLM2_SHAPES, Pattern.parse("1:2"), 4)
    with pytest.raises(PruningError, match="does not divide"):
        nm_geometry(["odd"], [(8, 12)], Pattern.parse("4:8"), 2)


@pytest.fixture
def nm_spec(search_spec) -> dict:
    spec = {key: value for key, value in search_spec.items() if key not in ("sparsity", "levels")}
    return {**spec, "space": "nm", "pattern": "2:4", "seed": 1}


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_a_prune_spec_with_the_pattern_applies_the_searched_n_of_every_layer(store, nm_spec, method):
    search = run_job({**nm_spec, "prune_method": method}, store)
    spec = parse_spec({**nm_spec, "prune_method": method})
    assert search.metrics["evaluations"] == spec.evaluations() and search.metrics["sparsity"] == 0.5
    searched = queries.layer_stats(store, [search.run_id]).set_index("layer")
    assert set(searched["pattern"]) <= {"1:4", "2:4", "3:4"} and (searched["pattern"] != "2:4").any()
    assert (searched["achieved_sparsity"] * searched["numel"]).sum() == 0.5 * searched["numel"].sum()

    prune = {"model": "tiny-llama", "method": method, "pattern": "2:4", "allocation": "search",
             "allocation_params": {"run": search.run_id}, "calibration": nm_spec["calibration"],
             "evaluation": nm_spec["evaluation"]}
    pruned = run_job(prune, store)
    rows = queries.layer_stats(store, [pruned.run_id]).set_index("layer").loc[searched.index]
    assert rows["pattern"].tolist() == searched["pattern"].tolist() and rows["nm_valid"].all()
    assert pruned.metrics["sparsity"] == 0.5 and pruned.metrics["nm_valid"] == 1.0

    # block 0 reads dense inputs in the prune run as in the database: the same masks, level by level
    masks = queries.load_masks(store, pruned.run_id)
    model = load_model("tiny-llama").model
    layers = prunable_layers(model)
    folder = store.artifacts_dir / "search-levels" / database_key(spec)
    geometry = load_geometry(folder)
    LevelSwapper(layers, geometry, folder).apply(
        tuple(json.loads(searched.loc[name, "extra"])["level"] for name in geometry.names))
    for name in geometry.names:
        if name.startswith("model.layers.0."):
            assert torch.equal(layers[name].weight != 0, masks[name]), name
            keep = int(searched.loc[name, "pattern"].split(":")[0])
            assert nm_valid(masks[name], keep, 4)


def test_a_prune_spec_must_match_the_searched_pattern_and_use_a_method_that_keeps_it(store, nm_spec):
    search = run_job(nm_spec, store)
    prune = {"model": "tiny-llama", "method": "wanda", "pattern": "2:4", "allocation": "search",
             "allocation_params": {"run": search.run_id}, "calibration": nm_spec["calibration"],
             "evaluation": nm_spec["evaluation"]}
    with pytest.raises(SpecError, match="searched around pattern 2:4, not 4:8. Fix: set pattern: 2:4"):
        run_job({**prune, "pattern": "4:8"}, store)
    with pytest.raises(SpecError, match="method 'magnitude' prunes every layer to the spec's own N:M"):
        run_job({**prune, "method": "magnitude"}, store)
    with pytest.raises(SpecError, match="searched space nm.*pattern: 2:4"):
        run_job({**prune, "pattern": "unstructured", "sparsity": 0.5}, store)
    with pytest.raises(SpecError, match="N:M fixes every layer's sparsity"):
        parse_spec({**prune, "allocation": "owl", "allocation_params": {}})
    assert len(queries.runs(store)) == 1


@pytest.mark.parametrize("change, message", [
    ({"pattern": None}, "space nm needs the N:M pattern"),
    ({"pattern": "unstructured"}, "space nm needs the N:M pattern"),
    ({"sparsity": 0.6}, "implies sparsity 0.5 but sparsity is 0.6"),
    ({"levels": {"max": 2, "step": 0.1}}, "levels.step does not apply"),
    ({"space": "unstructured"}, "pattern applies to space: nm"),
])
def test_the_nm_spec_refuses_what_does_not_apply(nm_spec, change, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({**nm_spec, **change})


def test_an_nm_spec_states_its_pattern_and_its_implied_sparsity(nm_spec):
    spec = parse_spec({**nm_spec, "levels": {"max": 2}})
    assert spec.sparsity == 0.5 and spec.summary()["pattern"] == "2:4"
    assert spec.canonical()["pattern"] == {"name": "nm", "keep": 2, "group": 4}
