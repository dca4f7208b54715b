import pytest
import torch

from workbench.data import SHAKESPEARE_EVAL_PLAYS, calibration_windows, evaluation_windows, load_corpus
from workbench.errors import AssetError
from workbench.models import ByteTokenizer


def test_shakespeare_splits_by_play_without_sharing_text():
    corpus = load_corpus("shakespeare")
    assert len(corpus.calibration_text) > 3_000_000 and len(corpus.evaluation_text) > 300_000
    assert "Who's there?" in corpus.evaluation_text  # Hamlet's first line is held out
    assert "Who's there?\n\nFRANCISCO:" not in corpus.calibration_text
    assert "**" not in corpus.evaluation_text  # markdown stripped
    assert len(SHAKESPEARE_EVAL_PLAYS) == 3


def test_pydoc_corpus_is_split():
    corpus = load_corpus("pydoc")
    assert corpus.calibration_text and corpus.evaluation_text
    assert corpus.evaluation_text not in corpus.calibration_text


def test_calibration_windows_are_seeded_and_evaluation_windows_fixed():
    tokenizer = ByteTokenizer()
    a = calibration_windows("shakespeare", tokenizer, 8, 32, seed=0)
    assert a.shape == (8, 32) and torch.equal(a, calibration_windows("shakespeare", tokenizer, 8, 32, seed=0))
    assert not torch.equal(a, calibration_windows("shakespeare", tokenizer, 8, 32, seed=1))
    windows = evaluation_windows("shakespeare", tokenizer, 3, 16)
    ids = torch.tensor(tokenizer(load_corpus("shakespeare").evaluation_text, add_special_tokens=False)["input_ids"])
    assert torch.equal(windows.reshape(-1), ids[:48])  # the first non-overlapping windows


def test_text_shorter_than_one_window_is_a_clear_error(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be.\n" * 3)
    with pytest.raises(AssetError, match="fewer than one window"):
        calibration_windows(str(short), ByteTokenizer(), 2, 4096, seed=0)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(AssetError, match="is empty"):
        load_corpus(str(empty))
    with pytest.raises(AssetError, match="unknown corpus"):
        load_corpus("klingon-opera")
