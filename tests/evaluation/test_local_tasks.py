"""The local tasks: harness YAML plus JSON lines, rebuilt identically from the held-out text only."""

import json

import pytest
import yaml

from workbench.data import load_corpus
from workbench.evaluation.local import LOCAL_TASKS, build_documents, describe_tasks, task_folder, write_tasks

SIZES = {"shakespeare-lastword": 500, "shakespeare-nextline": 500, "pydoc-nextline": 300}


@pytest.fixture(scope="module")
def documents():
    return {name: build_documents(name) for name in LOCAL_TASKS}


def test_sizes_and_determinism(documents):
    assert {name: len(docs) for name, docs in documents.items()} == SIZES
    assert build_documents("pydoc-nextline") == documents["pydoc-nextline"]


def test_last_word_documents_come_from_held_out_lines(documents):
    lines = load_corpus("shakespeare").evaluation_text.split("\n")
    for doc in documents["shakespeare-lastword"]:
        line = lines[doc["line"]].rstrip()
        head = doc["context"].split("\n")[-1]
        assert line.startswith(head) and line[len(head):].lstrip().startswith(doc["target"])
        assert len(doc["target"]) >= 4 and doc["target"].replace("'", "").isalpha()
        assert doc["context"].count("\n") <= 8


@pytest.mark.parametrize("name", ["shakespeare-nextline", "pydoc-nextline"])
def test_next_line_documents_hold_the_true_line_among_four(documents, name):
    corpus = load_corpus(LOCAL_TASKS[name].corpus)
    lines = corpus.evaluation_text.split("\n")
    labels = set()
    for doc in documents[name]:
        assert len(doc["choices"]) == 4 and len(set(doc["choices"])) == 4
        assert doc["choices"][doc["label"]] == lines[doc["line"]].rstrip()
        assert doc["context"].endswith(lines[doc["line"] - 1].rstrip("\n"))
        assert all(choice in corpus.evaluation_text for choice in doc["choices"])  # distractors: held-out text too
        labels.add(doc["label"])
    assert labels == {0, 1, 2, 3}


@pytest.mark.parametrize("name", list(SIZES))
def test_held_out_text_only(documents, name):
    """Every passage is cut from the evaluation part of its corpus, never from what calibration reads."""
    corpus = load_corpus(LOCAL_TASKS[name].corpus)
    for doc in documents[name][:100]:
        passage = doc["context"] + ("\n" + doc["choices"][doc["label"]] if "choices" in doc else " " + doc["target"])
        assert passage in corpus.evaluation_text
        assert passage not in corpus.calibration_text


def test_written_folder_is_the_harness_format_and_reproducible(tmp_path):
    cached = task_folder()
    written = write_tasks(tmp_path / "tasks")
    for name in LOCAL_TASKS:
        assert (written / f"{name}.jsonl").read_bytes() == (cached / f"{name}.jsonl").read_bytes()
        config = yaml.safe_load((cached / f"{name}.yaml").read_text())
        assert config["task"] == name and config["dataset_path"] == "json"
        data = config["dataset_kwargs"]["data_files"]["test"]
        assert data == str(cached / f"{name}.jsonl")
        first = json.loads((cached / f"{name}.jsonl").read_text().splitlines()[0])
        assert "context" in first
    rows = {row["task"]: row for row in describe_tasks()}
    assert {name: row["documents"] for name, row in rows.items()} == SIZES
    assert rows["shakespeare-nextline"]["metrics"] == ["acc", "acc_norm"]
