"""Bad specs and sweeps as users write them: each ends in exit code 2 and one line naming the problem and
the fix, with no traceback, nothing run and the store byte-for-byte as it was."""

import hashlib

import pytest
import yaml
from typer.testing import CliRunner

from workbench.cli import app
from workbench.runner import run_job

TINY = {"model": "tiny-llama", "data": "shakespeare", "method": "magnitude", "sparsity": 0.5,
        "evaluation": {"windows": 2, "seq_len": 32}}
TRAIN = {"kind": "train", "model": "tiny-llama", "data": "shakespeare", "method": "dense", "steps": 2, "seq_len": 32}

SPEC_TEXTS = {
    "duplicate key": "model: tiny-llama\nmethod: magnitude\nsparsity: 0.5\nsparsity: 0.7\n",
    "duplicate nested key": "model: tiny-llama\ncalibration: {seed: 0, seed: 1}\n",
    "kind is a list": "kind: [prune]\nmodel: tiny-llama\n",
    "kind is a mapping": "kind: {a: 1}\nmodel: tiny-llama\n",
    "seed of 2**64": f"model: tiny-llama\nmethod: random\ncalibration: {{seed: {2**64}}}\n",
    "seed of 2**70": f"model: tiny-llama\nmethod: random\ncalibration: {{seed: {2**70}}}\n",
    "epochs .inf": "kind: train\nepochs: .inf\n",
    "epochs .nan": "kind: train\nepochs: .nan\n",
    "train device foo": "kind: train\nmodel: tiny-llama\ndata: shakespeare\nsteps: 2\ndevice: foo\n",
    "train seed of 2**64": f"kind: train\nseed: {2**64}\n",
    "not YAML": "model: [tiny-llama\n",
    "method parameter .nan": "model: tiny-llama\nmethod: sparsegpt\nparams: {dampening: .nan}\n",
    "training method parameter .inf": "kind: train\nmethod: sparse-finetune\nparams: {distill_weight: .inf}\n",
}
SWEEP_TEXTS = {
    "empty grid list": yaml.safe_dump({"base": TINY, "grid": {"sparsity": []}}),
    "dotted key into a scalar": yaml.safe_dump({"base": {**TINY, "calibration": 3}, "grid": {"calibration.seed": [0, 1]}}),
    "dotted key into a list": yaml.safe_dump({"base": {**TINY, "tags": ["a"]}, "grid": {"tags.x": [0]}}),
    "unknown model in the middle": yaml.safe_dump({"base": TINY, "include": [{"sparsity": 0.3}, {"model": "no/such-model-here"},
                                                                             {"sparsity": 0.4}]}),
    "unknown data file in the base": yaml.safe_dump({"base": {**TINY, "data": "/no/such/corpus.txt"},
                                                     "grid": {"sparsity": [0.3, 0.4]}}),
    "duplicate grid key": "base: {model: tiny-llama}\ngrid: {sparsity: [0.3]}\ngrid: {sparsity: [0.4]}\n",
}


@pytest.fixture(scope="module")
def filled_store(tmp_path_factory):
    from workbench.store import Store

    path = tmp_path_factory.mktemp("bad") / "workbench.duckdb"
    run_job(TINY, Store(path))
    return path


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_refused(result, store_path, before):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Fix: " in lines[0], result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert digest(store_path) == before


@pytest.mark.parametrize("case", sorted(SPEC_TEXTS))
def test_bad_spec_is_one_line(case, tmp_path, filled_store):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_TEXTS[case])
    before = digest(filled_store)
    assert_refused(CliRunner().invoke(app, ["run", str(spec), "--store", str(filled_store)]), filled_store, before)


def test_a_nan_parameter_is_named_as_such(tmp_path, filled_store):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_TEXTS["method parameter .nan"])
    result = CliRunner().invoke(app, ["run", str(spec), "--store", str(filled_store)])
    assert "parameter 'dampening' is nan" in result.stderr and "finite" in result.stderr  # not "should be <= 10"


@pytest.mark.parametrize("case", sorted(SWEEP_TEXTS))
def test_bad_sweep_is_one_line_and_runs_nothing(case, tmp_path, filled_store):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(SWEEP_TEXTS[case])
    before = digest(filled_store)
    assert_refused(CliRunner().invoke(app, ["sweep", str(sweep), "--store", str(filled_store)]), filled_store, before)


@pytest.mark.parametrize("content", [b"model: tiny-llama\nname: caf\xe9\n", b"\xff\xfe\x00\x01binary"])
def test_spec_file_that_is_not_utf8(content, tmp_path, filled_store):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(content)
    before = digest(filled_store)
    result = CliRunner().invoke(app, ["run", str(spec), "--store", str(filled_store)])
    assert_refused(result, filled_store, before)
    assert "UTF-8" in result.stderr


def test_spec_path_that_is_a_directory(tmp_path, filled_store):
    before = digest(filled_store)
    result = CliRunner().invoke(app, ["run", str(tmp_path), "--store", str(filled_store)])
    assert_refused(result, filled_store, before)
    assert "is a directory" in result.stderr


def test_a_spec_that_sets_a_key_once_still_runs(tmp_path):
    """The duplicate-key loader refuses only duplicates: the same mapping spelled once parses as before."""
    from workbench.spec import load_spec

    spec = tmp_path / "spec.yaml"
    spec.write_text("model: tiny-llama\ncalibration: {seed: 1, samples: 4}\nsparsity: 0.7\n")
    assert load_spec(spec).sparsity == 0.7 and load_spec(spec).calibration.seed == 1
