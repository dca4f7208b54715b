import json

import pytest

from workbench.errors import SpecError
from workbench.spec import PruneSpec, job_key, load_spec, load_sweep, parse_spec


def test_defaults_are_filled_in_canonical_json():
    spec = parse_spec({"model": "tiny-llama", "method": "magnitude"})
    canonical = json.loads(spec.canonical_json())
    assert canonical["calibration"] == {"samples": 64, "seq_len": 512, "seed": 0}
    assert canonical["evaluation"] == {"windows": 64, "seq_len": 512}
    assert canonical["params"] == {"scope": "layer"}
    assert canonical["sparsity"] == 0.5 and canonical["pattern"]["name"] == "unstructured"


def test_equal_specs_have_equal_keys_whatever_the_spelling():
    a = parse_spec({"model": "tiny-llama", "method": "magnitude", "sparsity": 0.5})
    b = parse_spec({"method": "magnitude", "model": "tiny-llama", "params": {"scope": "layer"},
                    "calibration": {"seed": 0}, "name": "a label", "tags": ["x"]})
    assert a.canonical_json() == b.canonical_json()
    assert job_key(a) == job_key(b)


@pytest.mark.parametrize("change", [
    {"sparsity": 0.6}, {"method": "random"}, {"pattern": "2:4"}, {"data": "pydoc"}, {"model": "tiny-bert"},
    {"params": {"scope": "global"}}, {"calibration": {"seed": 1}}, {"calibration": {"samples": 8}},
    {"evaluation": {"windows": 8}}, {"evaluation": {"seq_len": 128}}, {"prune_head": True},
])
def test_every_result_changing_field_changes_the_key(change):
    base = {"model": "tiny-llama", "method": "magnitude", "sparsity": 0.5}
    assert job_key(parse_spec(base)) != job_key(parse_spec({**base, **change}))


def test_method_version_enters_the_key(monkeypatch):
    from workbench.pruning import magnitude

    spec = parse_spec({"model": "tiny-llama", "method": "magnitude"})
    before = job_key(spec)
    monkeypatch.setattr(type(magnitude.METHOD), "version", "999")
    assert job_key(spec) != before


def test_nm_pattern_parses_kept_of_group_and_implies_sparsity():
    spec = parse_spec({"model": "tiny-llama", "pattern": "2:4"})
    assert (spec.pattern.keep, spec.pattern.group, spec.sparsity) == (2, 4, 0.5)
    assert str(spec.pattern) == "2:4"
    assert parse_spec({"model": "tiny-llama", "pattern": "1:4"}).sparsity == 0.75


@pytest.mark.parametrize("data, fragment", [
    ({"model": "tiny-llama", "sparsityy": 0.5}, "unknown key 'sparsityy'"),
    ({"model": "tiny-llama", "method": "snip-snap"}, "unknown method 'snip-snap'"),
    ({"model": "tiny-llama", "sparsity": 1.0}, "outside [0, 1)"),
    ({"model": "tiny-llama", "sparsity": -0.1}, "outside [0, 1)"),
    ({"model": "tiny-llama", "pattern": "4:4"}, "0 < N < M"),
    ({"model": "tiny-llama", "pattern": "5:4"}, "0 < N < M"),
    ({"model": "tiny-llama", "pattern": "2:4", "sparsity": 0.7}, "implies sparsity 0.5"),
    ({"model": "tiny-llama", "pattern": "diagonal"}, "unknown pattern"),
    ({"kind": "teleport"}, "unknown job kind"),
    ({"model": "tiny-llama", "params": {"scope": "galaxy"}}, "bad parameter 'scope'"),
    ({"model": "tiny-llama", "allocation": "fair-share"}, "unknown allocation"),
])
def test_bad_specs_name_the_problem_and_the_fix(data, fragment):
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    message = str(err.value)
    assert fragment in message and "Fix:" in message and "\n" not in message


def test_yaml_spec_and_sweep_files(tmp_path):
    (tmp_path / "spec.yaml").write_text(
        "kind: prune\nmodel: tiny-llama\ndata: shakespeare\nmethod: magnitude\nsparsity: 0.5\n"
        "pattern: unstructured\nallocation: uniform\ncalibration: {samples: 64, seq_len: 512, seed: 0}\n"
        "evaluation: {windows: 64, seq_len: 512}\n")
    assert isinstance(load_spec(tmp_path / "spec.yaml"), PruneSpec)
    (tmp_path / "sweep.yaml").write_text(
        "base: {model: tiny-llama}\ngrid: {method: [magnitude, random], sparsity: [0.5, 0.7]}\n"
        "include: [{method: dense}, {method: magnitude, sparsity: 0.5}]\n")
    specs = load_sweep(tmp_path / "sweep.yaml")
    assert len(specs) == 5  # 2 x 2 grid + dense; the duplicate magnitude 0.5 is dropped
    assert {(s.method, s.sparsity) for s in specs} == {("magnitude", 0.5), ("magnitude", 0.7), ("random", 0.5),
                                                       ("random", 0.7), ("dense", 0.0)}


def test_broken_yaml_is_a_spec_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("model: [tiny-llama\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(tmp_path / "bad.yaml")
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")
