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


@pytest.mark.parametrize("model, changes", [
    ("tiny-llama", {"method": "magnitude", "sparsity": 0.5}),
    ("tiny-llama", {"method": "sparsegpt", "pattern": "2:4"}),  # updates kept weights: masks on dense would differ
    ("gemma", {"method": "wanda", "sparsity": 0.5}),  # a Gemma-3 folder: tied embeddings, q/k norms, BOS windows
])
def test_export_loads_with_plain_from_pretrained_and_gives_the_runs_logits(store, tmp_path, model, changes):
    if model == "gemma":
        from tests.models.tiny_gemma import save_gemma_folder

        model = str(save_gemma_folder(tmp_path / "gemma"))
    spec = {"model": model, "data": "shakespeare", "calibration": CALIBRATION, "evaluation": EVALUATION, **changes}
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


@pytest.mark.parametrize(("method", "structure", "plain"), [
    ("magnitude-sp", "channels", True),  # the same number of channels in every block: a stock config
    ("flap", "heads+channels", False),  # one global ranking: per-block widths, read back by load_shrunk
    ("block-influence", "blocks", True),
])
def test_shrunk_model_exports_smaller_and_reloads_with_its_logits(store, tmp_path, method, structure, plain):
    from workbench.structured import load_shrunk, plain_loadable

    spec = {"model": "tiny-llama", "data": "shakespeare", "method": method, "structure": structure, "sparsity": 0.3,
            "calibration": CALIBRATION, "evaluation": EVALUATION}
    result = run_job(spec, store)
    exported = export_model(store, result.run_id, tmp_path / "out")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out") if plain else load_shrunk(tmp_path / "out")
    assert plain_loadable(model.config) is plain
    assert sum(p.numel() for p in model.parameters()) == exported.parameters == result.metrics["parameters"]
    tokens = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens).logits, _rebuilt_logits(spec, tokens))
    report = json.loads((tmp_path / "out" / "sparsity.json").read_text())
    # whole structures only: tiny-llama's 2 blocks make dropping one block 50% of the decoder
    assert report["structure"] == structure and report["achieved_sparsity"] == result.metrics["sparsity"]
    assert report["achieved_sparsity"] == pytest.approx(0.5 if structure == "blocks" else 0.3, abs=0.05)


def test_export_model_command(store, tmp_path):
    from typer.testing import CliRunner

    from workbench.cli import app

    result = run_job({"model": "tiny-llama", "method": "magnitude", "evaluation": EVALUATION}, store)
    out = tmp_path / "cli-out"
    done = CliRunner().invoke(app, ["export-model", result.run_id[:10], str(out), "--store", str(store.path)])
    assert done.exit_code == 0, done.output
    assert (out / "model.safetensors").exists() and "parameters" in done.stdout
    again = CliRunner().invoke(app, ["export-model", result.run_id, str(out), "--store", str(store.path)])
    assert again.exit_code == 2 and again.stderr.startswith("error: folder") and "Fix:" in again.stderr
