"""Windows start with BOS where the model's tokenizer starts every text with it (Gemma's does), and only there."""

import torch
from transformers import GemmaTokenizer

from tests.models.tiny_gemma import SPECIALS, byte_gemma_tokenizer
from workbench.data import calibration_windows, evaluation_windows, text_prefix, token_ids
from workbench.models import ByteTokenizer


def test_windows_start_with_bos_where_the_tokenizer_starts_every_text_with_it():
    tokenizer = byte_gemma_tokenizer()
    bos = tokenizer.bos_token_id
    assert text_prefix(tokenizer) == [bos]
    windows = evaluation_windows("shakespeare", tokenizer, 3, 16)
    assert windows.shape == (3, 16) and (windows[:, 0] == bos).all()
    assert torch.equal(windows[:, 1:].reshape(-1), token_ids("shakespeare", "evaluation", tokenizer)[:45])
    calibration = calibration_windows("shakespeare", tokenizer, 4, 16, seed=0)
    assert calibration.shape == (4, 16) and (calibration[:, 0] == bos).all() and (calibration[:, 1:] != bos).all()


def test_tokenizers_that_add_no_bos_keep_their_windows():
    plain = GemmaTokenizer(vocab={piece: i for i, piece in enumerate(SPECIALS)}, merges=[], add_bos_token=False)
    assert text_prefix(plain) == [] and text_prefix(ByteTokenizer()) == []  # the byte tokenizer's CLS is no BOS
    windows = evaluation_windows("shakespeare", ByteTokenizer(), 2, 8)
    assert torch.equal(windows.reshape(-1), token_ids("shakespeare", "evaluation", ByteTokenizer())[:16])
