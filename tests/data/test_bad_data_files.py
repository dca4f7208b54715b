"""Data files a text corpus cannot be read from: each `workbench run` ends in exit code 2 and one line that
names the problem (the encoding, or that the file is empty) and the fix, before anything is stored."""

from __future__ import annotations

import hashlib
import os

import pytest
import yaml
from typer.testing import CliRunner

from workbench.cli import app
from workbench.data import load_corpus
from workbench.records import JobOutput, Metric
from workbench.store import Store

HAMLET = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 40

DATA_FILES = {
    "random bytes": (lambda: os.urandom(20000), "is binary, not UTF-8 text"),
    "random bytes without NULs": (lambda: bytes(b or 1 for b in os.urandom(20000)), "is binary, not UTF-8 text"),
    "a PNG header and pixels": (lambda: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8, "is binary"),
    "Latin-1 text": (lambda: ("Caf\u00e9 cr\u00e8me, na\u00efve fa\u00e7ade.\n" * 200).encode("latin-1"),
                     "is not UTF-8 text (byte 0xe9 at offset 3; perhaps Latin-1"),
    "Windows-1252 text with curly quotes": (lambda: ("\u201cquoted\u201d text\n" * 200).encode("cp1252"), "not UTF-8"),
    "UTF-8 text with one Latin-1 byte late": (lambda: HAMLET.encode() + b"fa\xe7ade\n", "not UTF-8 text"),
    "UTF-16 text": (lambda: HAMLET.encode("utf-16"), "is UTF-16 text, not UTF-8"),
    "an empty file": (lambda: b"", "is empty"),
    "only white space": (lambda: b"\n\n   \t\n", "holds only white space"),
    "one character": (lambda: b"x", "too short to split"),
}


@pytest.fixture(scope="module")
def filled_store(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("data") / "workbench.duckdb")
    run_id = store.start_run("k", "prune", "{}", {}, {})
    store.finish_run(run_id, "k", JobOutput(metrics=[Metric("sparsity", 0.5)]), 1.0)
    return store.path


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("command", ["run", "sweep"])
@pytest.mark.parametrize("case", sorted(DATA_FILES))
def test_a_data_file_that_is_not_utf8_text_is_refused_before_anything_is_stored(case, command, tmp_path,
                                                                                 filled_store):
    make, fragment = DATA_FILES[case]
    data = tmp_path / "corpus.txt"
    data.write_bytes(make())
    spec = {"model": "tiny-llama", "data": str(data), "method": "magnitude", "sparsity": 0.5}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec if command == "run" else {"base": spec, "grid": {"sparsity": [0.3, 0.5]}}))
    before = digest(filled_store)
    load_corpus.cache_clear()
    result = CliRunner().invoke(app, [command, str(path), "--store", str(filled_store)])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and ". Fix: " in lines[0], result.stderr
    assert fragment in lines[0] and str(data) in lines[0]
    assert "reinstall" not in lines[0] and "Traceback" not in result.output + result.stderr
    assert digest(filled_store) == before


def test_utf8_with_a_byte_order_mark_is_read_without_it(tmp_path):
    data = tmp_path / "bom.txt"
    data.write_bytes(b"\xef\xbb\xbf" + HAMLET.encode())
    corpus = load_corpus(str(data))
    assert corpus.calibration_text.startswith("To be") and "\ufeff" not in corpus.calibration_text
