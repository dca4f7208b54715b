"""Shared pieces of the search tests: tiny specs on tiny-llama, one thread (the models are too small for two),
and for the depth space a tiny random Llama of eight blocks saved as a local folder (its tokenizer reads
bytes, slowly: it reads a short excerpt of Shakespeare rather than the whole corpus)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

TINY_SEARCH = {
    "kind": "search", "model": "tiny-llama", "data": "shakespeare", "sparsity": 0.5,
    "levels": {"max": 3, "step": 0.1},
    "calibration": {"samples": 4, "seq_len": 64, "seed": 0},
    "budget": {"generations": 4, "offspring": 4, "survivors": [2, 1], "tokens": [64, 192]},
    "evaluation": {"windows": 2, "seq_len": 64},
}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def search_spec() -> dict:
    return {key: (dict(value) if isinstance(value, dict) else value) for key, value in TINY_SEARCH.items()}


DEPTH_BLOCKS = 8


@pytest.fixture(scope="session")
def deep_llama(tmp_path_factory) -> str:
    """A random Llama of eight small blocks with a byte-level tokenizer, as a save_pretrained folder; weights
    drawn wider than the usual init so that every block visibly changes the output."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    config = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=DEPTH_BLOCKS,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.1, tie_word_embeddings=False, bos_token_id=None, eos_token_id=None,
                         pad_token_id=None)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).eval()
    folder = tmp_path_factory.mktemp("deep-llama")
    model.save_pretrained(folder)
    vocab = {chr(i) if chr(i).isprintable() else f"<0x{i:02X}>": i for i in range(256)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<0x00>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<0x00>").save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def excerpt(tmp_path_factory) -> str:
    from workbench.data import load_corpus

    path = tmp_path_factory.mktemp("excerpt") / "shakespeare-excerpt.txt"
    path.write_text(load_corpus("shakespeare").calibration_text[:60_000])
    return str(path)


@pytest.fixture
def depth_spec(deep_llama, excerpt, search_spec) -> dict:
    spec = {key: value for key, value in search_spec.items() if key not in ("sparsity", "levels")}
    return {**spec, "space": "depth", "model": deep_llama, "data": excerpt, "blocks": 3}
