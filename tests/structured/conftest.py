"""Tiny random models for the structured tests: a Llama with grouped-query attention (6 query heads in 2
key/value groups of 3, head_dim 8, so that hidden_size / heads != head_dim after shrinking), a Gemma-3 (4 query
heads on 1 key/value head, sliding-window and global layers; see tests/models/tiny_gemma.py) and the built-in
tiny BERT. Weights are drawn with a large init range so that every structure visibly matters."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tests.models.tiny_gemma import make_gemma
from workbench.models import load_model


def make_llama(tie: bool = False, layers: int = 3, seed: int = 0) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=259, hidden_size=48, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=6, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
                         tie_word_embeddings=tie, initializer_range=0.2, bos_token_id=None, eos_token_id=None,
                         pad_token_id=None)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()


def make_bert():
    model = load_model("tiny-bert").model
    with torch.no_grad(), torch.random.fork_rng():  # larger weights than the 0.02 init, so heads matter
        torch.manual_seed(1)
        for name, param in model.named_parameters():
            if name.endswith("weight") and param.dim() == 2:
                param.normal_(0, 0.2)
    return model.eval()


@pytest.fixture
def llama() -> LlamaForCausalLM:
    return make_llama()


@pytest.fixture
def tied_llama() -> LlamaForCausalLM:
    return make_llama(tie=True)


@pytest.fixture
def gemma():
    return make_gemma()


@pytest.fixture
def bert():
    return make_bert()


@pytest.fixture
def ids() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (2, 12), generator=generator)


@pytest.fixture
def calibration() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (6, 24), generator=generator)


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state
