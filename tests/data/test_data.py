import pytest
import torch

from workbench.data import SHAKESPEARE_EVAL_PLAYS, calibration_windows, data_identity, evaluation_windows, load_corpus
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


def test_data_identity_is_remembered_until_the_text_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "corpus.txt"
    path.write_text("the first text of the corpus\n" * 50)
    first = data_identity(str(path))
    assert first == load_corpus(str(path)).identity
    assert data_identity(str(path)) == first and (tmp_path / "cache" / "file-hashes.json").is_file()
    path.write_text("a different text altogether\n" * 60)
    changed = data_identity(str(path))  # while load_corpus still holds the old text
    load_corpus.cache_clear()
    assert changed == load_corpus(str(path)).identity != first
    assert data_identity("shakespeare") == load_corpus("shakespeare").identity
