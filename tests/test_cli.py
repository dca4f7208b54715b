"""The CLI as users call it: `workbench ...` in a subprocess, JSON out, one-line errors with exit code 2."""

import json
import os
import subprocess
import sys

import pytest
import yaml


def workbench(*args, store=None, check=False):
    env = {**os.environ}
    if store is not None:
        env["WORKBENCH_STORE"] = str(store)
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", *map(str, args)], capture_output=True, text=True,
                          env=env)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def spec_file(tmp_path, tiny_spec):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec))
    return path


def test_run_json_then_cached_then_ls_and_show(tmp_path, spec_file):
    store = tmp_path / "s" / "wb.duckdb"
    first = json.loads(workbench("run", spec_file, "--json", store=store, check=True).stdout)
    assert {"run_id", "key", "cached", "status", "metrics"} <= set(first)
    assert first["cached"] is False and first["status"] == "finished"
    assert first["metrics"]["sparsity"] == pytest.approx(0.5, abs=1e-3) and first["metrics"]["perplexity"] > 1
    second = json.loads(workbench("run", spec_file, "--json", store=store, check=True).stdout)
    assert second["cached"] is True and second["run_id"] == first["run_id"]
    listed = json.loads(workbench("ls", "--json", store=store, check=True).stdout)
    assert [r["run_id"] for r in listed] == [first["run_id"]]
    shown = json.loads(workbench("show", first["run_id"][:8], "--json", store=store, check=True).stdout)
    assert shown["spec"]["method"] == "magnitude" and len(shown["layers"]) == 14
    out = tmp_path / "masks.safetensors"
    workbench("export-masks", first["run_id"], out, store=store, check=True)
    from safetensors.torch import load_file

    masks = load_file(str(out))
    assert len(masks) == 14 and all(m.dtype.is_floating_point is False for m in masks.values())


def _assert_one_line_error(proc, fragment):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0] and "Fix:" in lines[0]


@pytest.mark.parametrize("change, fragment", [
    ({"colour": "blue"}, "unknown key 'colour'"),
    ({"method": "snip"}, "unknown method 'snip'"),
    ({"model": "nobody/no-such-model"}, "could not be fetched"),
    ({"model": "not a model"}, "unknown model"),
    ({"data": "klingon-opera"}, "unknown corpus"),
    ({"sparsity": 1.5}, "outside [0, 1)"),
    ({"pattern": "4:2"}, "0 < N < M"),
    ({"pattern": "2:6", "sparsity": None}, "does not divide"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_the_store_unchanged(tmp_path, tiny_spec, change, fragment,
                                                                     monkeypatch):
    store = tmp_path / "s" / "wb.duckdb"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**tiny_spec, **change}))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without the hub; the subprocess inherits it
    _assert_one_line_error(workbench("run", path, store=store), fragment)
    assert not store.exists()  # nothing was created, let alone a run


def test_missing_and_corrupt_model_folders(tmp_path, tiny_spec):
    store = tmp_path / "s" / "wb.duckdb"
    empty = tmp_path / "empty-model"
    empty.mkdir()
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**tiny_spec, "model": str(empty)}))
    _assert_one_line_error(workbench("run", path, store=store), "has no config.json")
    (empty / "config.json").write_text("{not json")
    _assert_one_line_error(workbench("run", path, store=store), "cannot be loaded")
    assert not store.exists()


def test_unwritable_store_is_a_clear_error(tmp_path, spec_file):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _assert_one_line_error(workbench("run", spec_file, store=blocker / "wb.duckdb"), "cannot be created")


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [oops\n")
    _assert_one_line_error(workbench("run", bad, store=tmp_path / "wb.duckdb"), "not valid YAML")
    _assert_one_line_error(workbench("run", tmp_path / "nope.yaml", store=tmp_path / "wb.duckdb"), "does not exist")


def test_show_unknown_run(tmp_path, spec_file):
    store = tmp_path / "s" / "wb.duckdb"
    workbench("run", spec_file, store=store, check=True)
    _assert_one_line_error(workbench("show", "zzzz", store=store), "no run matches")


def test_sweep_dry_run_and_methods(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("base: {model: tiny-llama}\ngrid: {method: [magnitude, random], sparsity: [0.5, 0.6]}\n")
    lines = workbench("sweep", sweep, "--dry-run", check=True).stdout.strip().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["model"] == "tiny-llama" for line in lines)
    assert "method magnitude" in workbench("methods", check=True).stdout


def test_demo_baseline_runs_four_rows_then_serves_them_from_the_store(tmp_path):
    store = tmp_path / "workbench.duckdb"
    first = workbench("demo", "--model", "tiny-llama", "--baseline", store=store, check=True)
    assert "default suite (tiny-llama)" in first.stdout
    runs = json.loads(workbench("ls", "--json", store=store, check=True).stdout)
    assert sorted(r["method"] for r in runs) == ["dense", "magnitude", "magnitude", "random"]
    assert all(r["status"] == "finished" for r in runs)
    second = workbench("demo", "--model", "tiny-llama", "--baseline", store=store, check=True)
    assert second.stdout.count("│ yes") == 4  # every row cached
    assert len(json.loads(workbench("ls", "--json", store=store, check=True).stdout)) == 4


def _commands(group, prefix=()):
    """(name path, callback) of every command the CLI registers, sub-groups included."""
    for info in group.registered_commands:
        yield (*prefix, info.name or info.callback.__name__), info.callback
    for sub in group.registered_groups:
        yield from _commands(sub.typer_instance, (*prefix, *([sub.name] if sub.name else [])))


def test_every_command_turns_user_errors_into_one_line():
    from workbench.cli import app

    commands = dict(_commands(app))
    assert {("run",), ("show",), ("bench", "train"), ("bench", "prune")} <= set(commands) and len(commands) >= 19
    assert [name for name, callback in commands.items() if not getattr(callback, "handles_errors", False)] == []


@pytest.mark.parametrize("args, fragment", [
    (["run", "nope.yaml"], "does not exist"),
    (["sweep", "nope.yaml"], "does not exist"),
    (["show", "zzzz"], "no run matches"),
    (["export-masks", "zzzz", "masks.safetensors"], "no run matches"),
    (["export", "out.duckdb", "--run", "zzzz"], "no run matches"),
    (["import", "nope"], "does not exist"),
    (["gc", "--store", "{blocked}"], "cannot be created"),
    (["bench", "report", "zzzz"], "no run matches"),
    (["bench", "app", "--app", "nope.py"], "nope.py"),
    (["bench", "suite", "--device", "cpu", "--part", "nope"], "has no part"),
], ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_bad_input_to_any_command_is_one_error_line_and_exit_2(tmp_path, monkeypatch, args, fragment):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.chdir(tmp_path)
    proc = workbench(*[arg.format(blocked=blocker / "wb.duckdb") for arg in args], store=tmp_path / "s" / "wb.duckdb")
    assert "Traceback" not in proc.stderr
    _assert_one_line_error(proc, fragment)


def test_starting_the_cli_imports_neither_torch_nor_transformers():
    """`workbench --help` stays fast: modules that import torch load inside the commands that use them."""
    code = "import sys, workbench.cli; print(sorted({'torch', 'transformers', 'pandas'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_run_and_sweep_warn_when_the_achieved_sparsity_misses_the_target(tmp_path, tiny_spec):
    """Wanda prunes int(0.7 * 64) = 44 of every 64-input row of tiny-llama: 0.6892 of a 70% target."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**tiny_spec, "method": "wanda", "sparsity": 0.7}))
    store = tmp_path / "s" / "wb.duckdb"
    ran = workbench("run", spec, store=store, check=True)
    run_id = ran.stdout.split()[0]
    warning = (f"warning: run {run_id}: achieved sparsity 0.6892 is 1.08 percentage points below the target 0.7")
    assert warning in ran.stderr.splitlines()
    assert "sparsity_shortfall=0.01076" in ran.stdout  # stored with the run
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": {**tiny_spec, "method": "wanda", "sparsity": 0.7}}))
    swept = workbench("sweep", sweep, store=store, check=True)  # served from the store, and said again
    assert warning in swept.stderr.splitlines()
