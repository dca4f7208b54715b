"""Exporting a run's model: a folder plain `from_pretrained` loads, with the run's logits and masks."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from workbench import queries
from workbench.errors import WorkbenchError
from workbench.jobs import prune as prune_job
from workbench.model_export import export_model
from workbench.runner import run_job
from workbench.spec import parse_spec

CALIBRATION = {"samples": 4, "seq_len": 32, "seed": 0}
EVALUATION = {"windows": 2, "seq_len": 32}


def _rebuilt_logits(spec, tokens):
    prepared = prune_job.prepare(parse_spec(spec))
    prune_job.prune_model(prepared)
    with torch.no_grad():
        return prepared.loaded.model(tokens).logits


@pytest.mark.parametrize("changes", [
    {"method": "magnitude", "sparsity": 0.5},
    {"method": "sparsegpt", "pattern": "2:4"},  # updates kept weights: masks on dense weights would differ
])
def test_export_loads_with_plain_from_pretrained_and_gives_the_runs_logits(store, tmp_path, changes):
    spec = {"model": "tiny-llama", "data": "shakespeare", "calibration": CALIBRATION, "evaluation": EVALUATION,
            **changes}
    result = run_job(spec, store)
    exported = export_model(store, result.run_id, tmp_path / "out")
    assert {"config.json", "model.safetensors", "sparsity.json", "README.md"} <= set(exported.files)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    tokens = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(tokens).logits
    torch.testing.assert_close(logits, _rebuilt_logits(spec, tokens))
    masks = queries.load_masks(store, result.run_id)
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        assert torch.equal(modules[name].weight != 0, mask), name  # zeros exactly where the stored mask prunes
    report = json.loads((tmp_path / "out" / "sparsity.json").read_text())
    assert report["key"] == result.key and report["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert set(report["layers"]) == set(masks)


def test_export_refuses_unfinished_runs_and_used_folders(store, tmp_path):
    spec = {"model": "tiny-llama", "method": "magnitude", "evaluation": EVALUATION}
    result = run_job(spec, store)
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("x")
    with pytest.raises(WorkbenchError, match="not empty"):
        export_model(store, result.run_id, used)
    running = store.start_run("k" * 64, "prune", json.dumps(parse_spec(spec).canonical()), {}, {})
    with pytest.raises(WorkbenchError, match="not finished"):
        export_model(store, running, tmp_path / "new")
    assert not (tmp_path / "new").exists()
