import pandas as pd
from typer.testing import CliRunner

from workbench.cli import app
from workbench.training.report import sad_by_quarter


def test_sad_by_quarter_by_hand():
    sad = pd.DataFrame({"step": [25, 50, 75, 100], "value": [10.0, 5.0, 2.0, 1.0]})
    assert sad_by_quarter(sad, 100) == (10.0, 1.0)  # steps <= 25 and steps > 75


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
