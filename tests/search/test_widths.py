"""The structured space: per-block numbers of heads and channels, the same parameters per step in every
block, and a structured prune spec that removes exactly the searched units."""

from __future__ import annotations

import json
import random

import pytest

from workbench import queries
from workbench.errors import SpecError
from workbench.models import load_model
from workbench.runner import run_job
from workbench.search.evolution import mutate, random_candidate
from workbench.search.widths import width_geometry
from workbench.spec import parse_spec
from workbench.structured.layout import model_layout

from .conftest import DEPTH_BLOCKS


def test_every_candidate_removes_the_uniform_allocations_units_of_each_kind(deep_llama):
    layout = model_layout(load_model(deep_llama).model)
    geometry = width_geometry(layout, ("heads", "channels"), "query", 0.3, 4, 0.1)
    heads = [i for i, kind in enumerate(geometry.kinds) if kind == "heads"]
    channels = [i for i, kind in enumerate(geometry.kinds) if kind == "channels"]
    assert len(heads) == len(channels) == DEPTH_BLOCKS
    assert {geometry.steps[i] for i in heads} == {1} and {geometry.steps[i] for i in channels} == {6}  # 10% of 64
    assert len(set(geometry.base[i] for i in channels)) == 1  # uniform: the same count in every block
    uniform = geometry.sparsity_of((0,) * geometry.size)
    space, rng = geometry.space(), random.Random(0)
    for _ in range(300):
        for candidate in (random_candidate(space, rng), mutate(random_candidate(space, rng), space, rng)):
            assert space.admits(candidate)
            for members in (heads, channels):
                assert sum(geometry.removed(i, candidate[i]) for i in members) == sum(geometry.base[i] for i in members)
                assert all(0 <= geometry.removed(i, candidate[i]) < geometry.units[i] for i in members)
            assert geometry.sparsity_of(candidate) == uniform


@pytest.fixture
def widths_spec(depth_spec) -> dict:
    spec = {key: value for key, value in depth_spec.items() if key != "blocks"}
    return {**spec, "space": "structured", "structure": "channels", "prune_method": "wanda-sp", "sparsity": 0.2}


@pytest.mark.parametrize("change", [{}, {"structure": "heads+channels", "head_unit": "query", "prune_method": "flap"}])
def test_a_structured_prune_spec_naming_the_search_removes_the_searched_units(store, widths_spec, change):
    spec = {**widths_spec, **change}
    search = run_job(spec, store)
    assert search.metrics["evaluations"] == parse_spec(spec).evaluations()
    assert search.metrics["best_fitness"] < search.metrics["uniform_fitness"]  # the uniform widths were beaten
    searched = queries.layer_stats(store, [search.run_id]).set_index("layer")
    removed = {layer: json.loads(extra)["removed"] for layer, extra in searched["extra"].items()}
    assert len(set(removed.values())) > 1  # blocks lose different numbers

    same = {key: spec[key] for key in ("model", "data", "calibration", "evaluation", "structure", "sparsity")}
    prune = {**same, "method": spec["prune_method"], "head_unit": spec.get("head_unit", "group"),
             "allocation": "search", "allocation_params": {"run": search.run_id}}
    pruned = run_job(prune, store)
    masks = queries.load_masks(store, pruned.run_id)
    for layer, count in removed.items():
        if layer.endswith(".heads"):  # query heads: the same number from every group of the block
            assert int((~masks[layer].bool()).sum()) == count * 2  # two kv groups
        else:
            assert int((~masks[layer].bool()).sum()) == count
    # masking the removed units' columns computes what removing them computes (FLAP: with its compensation)
    assert pruned.metrics["perplexity"] == pytest.approx(search.metrics["candidate_perplexity"], rel=1e-5)
    if spec["prune_method"] != "flap":  # FLAP's compensation adds biases, which count in the prune run's total
        assert pruned.metrics["sparsity"] == pytest.approx(search.metrics["sparsity"], abs=1e-12)


def test_a_structured_prune_spec_must_match_what_was_searched(store, widths_spec):
    search = run_job(widths_spec, store)
    same = {key: widths_spec[key] for key in ("model", "data", "calibration", "evaluation", "structure", "sparsity")}
    prune = {**same, "method": "wanda-sp", "allocation": "search", "allocation_params": {"run": search.run_id}}
    with pytest.raises(SpecError, match="searched with method wanda-sp, not flap. Fix: set method: wanda-sp"):
        run_job({**prune, "method": "flap"}, store)
    with pytest.raises(SpecError, match="searched with structure channels, not heads[+]channels"):
        run_job({**prune, "structure": "heads+channels"}, store)
    with pytest.raises(SpecError, match="searched sparsity 0.2, not 0.3"):
        run_job({**prune, "sparsity": 0.3}, store)
    with pytest.raises(SpecError, match="channel_multiple would round them"):
        run_job({**prune, "channel_multiple": 8}, store)
    with pytest.raises(SpecError, match="searched space structured"):
        run_job({**prune, "structure": "blocks", "method": "block-influence"}, store)
    assert len(queries.runs(store)) == 1  # the refused specs left nothing behind


@pytest.mark.parametrize("change, message", [
    ({"structure": None}, "space structured needs the units"),
    ({"prune_method": "wanda"}, "prune_method 'wanda' is none that scores them. Fix: give prune_method: "),
    ({"prune_method": "block-influence"}, "is none that scores them"),
    ({"space": "unstructured", "prune_method": "wanda"}, "structure and head_unit apply to space: structured"),
    ({"space": "unstructured", "structure": None, "prune_method": "wanda-sp"}, "prune_method 'wanda-sp' builds no level"),
])
def test_the_structured_spec_refuses_what_does_not_apply(widths_spec, change, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({**widths_spec, **change})


def test_a_structured_spec_states_its_structure_and_criterion(widths_spec):
    spec = parse_spec({key: value for key, value in widths_spec.items() if key != "sparsity"})
    assert spec.sparsity == 0.2 and spec.summary()["pattern"] == "structured:channels"
    assert spec.identity_parts()["method"].startswith("wanda-sp@")
