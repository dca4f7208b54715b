"""A tiny random Gemma-3 and a save_pretrained folder of it with a Gemma tokenizer, for the tests of every room
that must handle Gemma's block: 4 query heads sharing 1 key/value head, head_dim 16 (twice hidden / heads),
q/k norms, four norms per block, sliding-window layers (window 8) around a global one with its own rotary
base, tied embeddings. Norm weights are random too, so that a head's q/k norm matters."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, GemmaTokenizer

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]


def make_gemma(layers: int = 3, seed: int = 0, vocab_size: int = 262) -> Gemma3ForCausalLM:
    types = ["full_attention" if i % 3 == 1 else "sliding_attention" for i in range(layers)]
    config = Gemma3TextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                              max_position_embeddings=128, sliding_window=8, layer_types=types, initializer_range=0.2,
                              tie_word_embeddings=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Gemma3ForCausalLM(config)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "norm" in name:
                    param.normal_(0, 0.5)
    return model.eval()


def byte_gemma_tokenizer() -> GemmaTokenizer:
    """Gemma's tokenizer class over the special pieces, the space marker and the 256 byte pieces: every other
    character falls back to its UTF-8 bytes, and every text starts with <bos>."""
    pieces = SPECIALS + ["▁"] + [f"<0x{i:02X}>" for i in range(256)]
    return GemmaTokenizer(vocab={piece: index for index, piece in enumerate(pieces)}, merges=[], add_bos_token=True)


def save_gemma_folder(folder: Path) -> Path:
    tokenizer = byte_gemma_tokenizer()
    make_gemma(vocab_size=len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
