"""Structured pruning as a prune job: the spec's contract, the stored rows, and refusals that store nothing."""

import pytest

from workbench import queries
from workbench.errors import SpecError
from workbench.runner import run_job
from workbench.spec import job_key, parse_spec

BASE = {"model": "tiny-llama", "data": "shakespeare", "sparsity": 0.3,
        "calibration": {"samples": 4, "seq_len": 32, "seed": 0}, "evaluation": {"windows": 2, "seq_len": 32}}


def test_a_structured_run_stores_structure_masks_and_a_smaller_model(store):
    result = run_job({**BASE, "method": "wanda-sp", "structure": "heads+channels", "head_unit": "query"}, store)
    run = queries.run(store, result.run_id)
    assert run["pattern"] == "structured:heads+channels" and run["status"] == "finished"
    dense = run_job({**BASE, "method": "dense", "sparsity": None}, store)
    assert result.metrics["parameters"] < queries.run(store, dense.run_id)["metrics"].get("parameters", float("inf")) \
        or result.metrics["decoder_parameters_removed"] > 0
    assert result.metrics["sparsity"] == pytest.approx(0.3, abs=0.05)
    masks = queries.load_masks(store, result.run_id)
    heads = [name for name in masks if name.endswith(".heads")]
    channels = [name for name in masks if name.endswith(".channels")]
    assert heads and channels and all(masks[name].shape[0] == 1 for name in masks)
    layers = queries.layer_stats(store, [result.run_id])
    assert set(layers["layer"]) == set(heads) | set(channels)


def test_structure_stays_out_of_keys_of_unstructured_specs():
    plain = parse_spec({**BASE, "method": "magnitude"})
    assert "structure" not in plain.canonical() and "head_unit" not in plain.canonical()
    shrunk = parse_spec({**BASE, "method": "magnitude-sp", "structure": "channels"})
    other = parse_spec({**BASE, "method": "magnitude-sp", "structure": "heads"})
    assert len({job_key(plain), job_key(shrunk), job_key(other)}) == 3


@pytest.mark.parametrize(("changes", "message"), [
    ({"method": "magnitude", "structure": "heads"}, "not a structured criterion"),
    ({"method": "cfsp", "structure": "heads"}, "does not score heads"),
    ({"method": "flap", "structure": "channels", "pattern": "2:4"}, "removes whole structures"),
    ({"method": "flap", "structure": "channels", "allocation": "owl"}, "spreads the removals itself"),
    ({"method": "magnitude", "head_unit": "query"}, "apply to structured pruning"),
    ({"method": "magnitude", "channel_multiple": 64}, "apply to structured pruning"),
])
def test_bad_structured_specs_are_refused(changes, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({**BASE, **changes})


def test_a_target_no_whole_structure_can_reach_stores_nothing(store):
    with pytest.raises(SpecError, match="can remove at most"):
        run_job({**BASE, "method": "magnitude-sp", "structure": "heads", "sparsity": 0.9}, store)
    assert queries.runs(store).empty
