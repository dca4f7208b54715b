"""Model loading the usual Hugging Face way: built-ins, save_pretrained folders, hub ids (offline cache)."""

import pytest
import torch

from workbench.errors import AssetError, PruningError
from workbench.models import ByteTokenizer, load_model, model_identity
from workbench.models.layers import block_index, prunable_layers, transformer_blocks


def test_tiny_models_are_deterministic():
    a, b = load_model("tiny-llama"), load_model("tiny-llama")
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    assert a.family == "causal-lm" and load_model("tiny-bert").family == "encoder"


def test_prunable_layers_leave_embeddings_and_head_dense_by_default():
    model = load_model("tiny-llama").model
    layers = prunable_layers(model)
    assert len(layers) == 14 and all(name.startswith("model.layers.") for name in layers)
    with_extras = prunable_layers(model, prune_embeddings=True, prune_head=True)
    assert {"model.embed_tokens", "lm_head"} <= set(with_extras)
    assert block_index("model.layers.12.mlp.up_proj") == 12 and block_index("lm_head") is None


def test_unsupported_architecture_names_the_fix():
    with pytest.raises(PruningError, match="unsupported architecture: add a block locator for Sequential"):
        transformer_blocks(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def _save_tiny_folder(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    loaded = load_model("tiny-llama")
    folder = tmp_path / "tiny-folder"
    loaded.model.save_pretrained(folder)
    vocab = {chr(i) if chr(i).isprintable() else f"<0x{i:02X}>": i for i in range(256)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<0x00>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<0x00>").save_pretrained(folder)
    return loaded, folder


def test_local_folder_loads_through_from_pretrained(tmp_path):
    loaded, folder = _save_tiny_folder(tmp_path)
    again = load_model(str(folder))
    assert again.family == "causal-lm"
    assert all(torch.equal(p, q) for p, q in zip(loaded.model.parameters(), again.model.parameters()))
    assert model_identity(str(folder)).startswith("folder:")
    assert (folder / "model.safetensors").is_file()  # safetensors, never pickles


def test_hub_id_loads_from_the_local_hub_cache_offline(tmp_path, monkeypatch):
    """A hub id resolves through huggingface_hub's cache exactly as after a download."""
    _, folder = _save_tiny_folder(tmp_path)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--workbench-test--tiny-llama"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    loaded = load_model("workbench-test/tiny-llama")
    assert loaded.identity == f"hub:workbench-test/tiny-llama@{commit}"
    assert model_identity("workbench-test/tiny-llama") == loaded.identity
    with pytest.raises(AssetError, match="could not be fetched from the Hugging Face hub"):
        load_model("workbench-test/not-cached")


def test_byte_tokenizer_pads_batches():
    encoded = ByteTokenizer()(["ab", "abcd"], padding=True, return_tensors="pt")
    assert encoded["input_ids"].shape == (2, 6) and encoded["attention_mask"].sum().item() == 10


@pytest.mark.slow
def test_smollm2_is_the_real_pretrained_model():
    loaded = load_model("smollm2-135m")
    assert loaded.family == "causal-lm"
    assert sum(p.numel() for p in loaded.model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert len(prunable_layers(loaded.model)) == 30 * 7
    assert model_identity("smollm2-135m").startswith("smollm2-135m:")


@pytest.mark.slow
def test_minilm_is_the_real_pretrained_encoder():
    loaded = load_model("minilm-l6")
    assert loaded.family == "encoder" and len(prunable_layers(loaded.model)) == 6 * 6
