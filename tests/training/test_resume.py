import os
import subprocess
import sys

import pytest

from workbench import queries
from workbench.runner import run_job

SCRIPT = """
import json, sys
from workbench.runner import run_job
from workbench.store import Store
run_job(json.loads(sys.argv[2]), Store(sys.argv[1]))
"""


def test_killed_training_job_resumes_from_its_last_checkpoint(store, tmp_path, image_spec):
    import json

    from workbench.spec import job_key, parse_spec
    from workbench.store import Store

    spec = {**image_spec, "method": "set", "sparsity": 0.8, "steps": 14, "checkpoint_every": 5,
            "params": {"every": 3}}
    reference = run_job(spec, Store(tmp_path / "reference" / "wb.duckdb"))
    assert reference.metrics["resumed_from_step"] == 0

    env = {**os.environ, "WORKBENCH_FAULTPOINT": "train:step=10"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(store.path), json.dumps(spec)], env=env,
                          capture_output=True)
    assert proc.returncode == 137, proc.stderr.decode()[-2000:]
    folder = store.path.parent / "checkpoints" / job_key(parse_spec(spec))
    assert sorted(p.name for p in folder.iterdir()) == ["step-00000010"]  # the older one (5) was replaced
    assert queries.runs(store)["status"].tolist() == ["running"]

    resumed = run_job(spec, store)
    assert resumed.metrics["resumed_from_step"] == 10
    assert not folder.exists()  # checkpoints go once the store holds the result
    # it continued: the history from before the kill is there, and the end matches the uninterrupted run
    losses = queries.metrics(store, [resumed.run_id], ["loss"])
    assert losses["step"].tolist() == [3, 6, 9, 12, 14]
    reference_losses = queries.metrics(Store(tmp_path / "reference" / "wb.duckdb"), [reference.run_id], ["loss"])
    assert losses["value"].tolist() == pytest.approx(reference_losses["value"].tolist(), rel=1e-5)
    assert resumed.metrics["accuracy"] == reference.metrics["accuracy"]
    assert resumed.metrics["total_sad"] == reference.metrics["total_sad"]
    final = queries.load_masks(store, resumed.run_id)
    expected = queries.load_masks(Store(tmp_path / "reference" / "wb.duckdb"), reference.run_id)
    assert all((final[name] == expected[name]).all() for name in expected)
    assert queries.runs(store)["status"].tolist() == ["finished"]
