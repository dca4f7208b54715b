import ast
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
from typer.testing import CliRunner

import workbench.training
from workbench.cli import app
from workbench.training.report import sad_by_quarter, training_table


def test_sad_by_quarter_by_hand():
    sad = pd.DataFrame({"step": [25, 50, 75, 100], "value": [10.0, 5.0, 2.0, 1.0]})
    assert sad_by_quarter(sad, 100) == (10.0, 1.0)  # steps <= 25 and steps > 75


def test_training_table_from_records_and_sad_rows():
    spec = {"method": "sr_ste", "params": {"decay": 2e-4}, "density": "uniform", "sparsity": 0.5, "steps": 100}
    results = [SimpleNamespace(run_id="a", status="finished", wall_s=3.5, cached=True),
               SimpleNamespace(run_id="b", status="failed", wall_s=None, cached=False)]
    records = {"a": {"spec": spec, "pattern": "2:4", "metrics": {"accuracy": 0.8, "sparsity": 0.5, "total_sad": 9.0}}}
    sad = pd.DataFrame({"run_id": ["a", "a", "a", "other"], "name": "sad", "value": [4.0, 2.0, 3.0, 100.0],
                        "step": [20, 50, 90, 90]})
    [row] = training_table(results, records, sad).to_dict(orient="records")
    assert row["method"] == "sr_ste decay=0.0002" and row["pattern"] == "2:4" and row["accuracy"] == 0.8
    assert (row["early_sad"], row["late_sad"]) == (4.0, 3.0)  # another run's snapshots do not count
    assert row["wall_s"] == 3.5 and row["cached"] is True and pd.isna(row["perplexity"])


def test_training_never_imports_the_runner_or_the_store():
    """The training package is a library: commands (workbench/cli/) run sweeps and read the store."""
    found = []
    for path in Path(workbench.training.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] + [f"{node.module}.{alias.name}" for alias in node.names]
                     if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}: {name}" for name in names
                      if name.split(".")[:2] in (["workbench", "runner"], ["workbench", "store"])]
    assert not found


def test_bench_train_prints_the_sweep_table(store, image_spec, monkeypatch):
    import workbench.suite as suite
    from workbench.spec import parse_spec

    tiny = [parse_spec({**image_spec, "method": "dense"}),
            parse_spec({**image_spec, "method": "set", "sparsity": 0.9, "params": {"every": 3}})]
    monkeypatch.setattr(suite, "default_suite", lambda kinds=None: tiny)
    result = CliRunner().invoke(app, ["bench", "train", "--store", str(store.path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if "total_sad" in line)
    assert all(word in header.split() for word in ("method", "accuracy", "sparsity", "late_sad", "wall_s"))
    assert any(line.strip().startswith("dense") for line in lines)
    assert any(line.strip().startswith("set") and "0.9" in line for line in lines)
    assert "sweep wall time" in result.output
    again = CliRunner().invoke(app, ["bench", "train", "--store", str(store.path), "--json"])
    assert again.exit_code == 0 and '"cached": true' in again.output
