"""The read-only commands answer without importing torch or transformers: each runs in a fresh process on a
store holding one finished tiny job (workbench/benchmarks/startup.py), and its output is checked too."""

import json
import subprocess
import sys

import pytest

from workbench.benchmarks.startup import HEAVY, build_store, read_only_commands, run_checked
from workbench.pruning.allocation import ALLOCATIONS
from workbench.pruning.registry import METHODS
from workbench.structured.criteria import CRITERIA


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """(run id of the finished job, the commands by label)."""
    folder = tmp_path_factory.mktemp("startup")
    store, run_id = build_store(folder)
    return run_id, {command.label: command for command in read_only_commands(store, run_id, folder)}


def _lists_the_run(checked, run_id):
    assert run_id in checked.stdout and "finished" in checked.stdout


def _lists_the_run_as_json(checked, run_id):
    [row] = json.loads(checked.stdout)
    assert row["run_id"] == run_id and row["status"] == "finished" and row["perplexity"] > 1


def _shows_the_run(checked, run_id):
    assert f"run_id: {run_id}" in checked.stdout and "status: finished" in checked.stdout
    assert "perplexity = " in checked.stdout and '"method": "magnitude"' in checked.stdout


def _lists_every_method(checked, run_id):
    lines = checked.stdout.splitlines()
    for kind, names in (("method", METHODS), ("allocation", ALLOCATIONS), ("criterion", CRITERIA)):
        for name in names:
            assert any(line.startswith(f"{kind} {name} v") for line in lines), (kind, name)


def _one_line_error(checked, run_id):
    [line] = checked.stderr.strip().splitlines()
    assert line.startswith("error: ") and "'scope'" in line and "Fix:" in line and checked.stdout == ""


def _expands_the_grid(checked, run_id):
    specs = [json.loads(line) for line in checked.stdout.splitlines()]
    assert sorted((s["method"], s["sparsity"]) for s in specs) == [
        ("magnitude", 0.5), ("magnitude", 0.7), ("wanda", 0.5), ("wanda", 0.7)]


def _serves_the_cached_run(checked, run_id):
    assert checked.stdout.startswith(f"{run_id} cached: ") and "perplexity=" in checked.stdout


OUTPUT = {
    "ls": _lists_the_run,
    "ls --json": _lists_the_run_as_json,
    "show RUN": _shows_the_run,
    "methods": _lists_every_method,
    "run BAD_SPEC (error)": _one_line_error,
    "sweep --dry-run": _expands_the_grid,
    "run SPEC (cached)": _serves_the_cached_run,
}


def test_every_read_only_command_is_checked(stored):
    assert set(stored[1]) == set(OUTPUT)


@pytest.mark.parametrize("label", list(OUTPUT))
def test_read_only_command_answers_without_torch(stored, label):
    run_id, commands = stored
    checked = run_checked(commands[label].args)
    assert checked.exit_code == commands[label].exit_code, checked.stderr
    assert checked.heavy == [], f"`workbench {label}` imported {checked.heavy}"
    OUTPUT[label](checked, run_id)


def test_every_registered_method_allocation_and_criterion_loads_without_torch():
    """A spec names them, so validating it imports their modules: torch stays inside their functions."""
    code = f"""
import sys
from workbench.pruning.allocation import ALLOCATIONS, resolve_allocation
from workbench.pruning.registry import METHODS, resolve_method
from workbench.structured.criteria import CRITERIA, resolve_criterion
loaded = [resolve_method(n) for n in METHODS] + [resolve_allocation(n) for n in ALLOCATIONS]
loaded += [resolve_criterion(n) for n in CRITERIA]
print(len(loaded), sorted(name for name in {HEAVY!r} if name in sys.modules))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split(maxsplit=1) == [str(len(METHODS) + len(ALLOCATIONS) + len(CRITERIA)), "[]\n"]
