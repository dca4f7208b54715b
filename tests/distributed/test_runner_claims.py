"""The runner over claims: a second worker of a running key waits for its result instead of running it
again or failing; two sweeps of the same grid at once run every key once; many writers may open a fresh
DuckLake catalog at once."""

import json
import subprocess
import sys

from tests.distributed.conftest import TINY, start_together
from workbench import queries
from workbench.runner import run_job
from workbench.store import Store, claims

SLOW_RUNNER = """
import json, sys, time
import workbench.jobs.prune as prune
from workbench.runner import run_job
from workbench.store import Store
execute = prune.execute
prune.execute = lambda *args, **kwargs: (time.sleep(float(sys.argv[3])), execute(*args, **kwargs))[1]
store = Store(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
result = run_job(json.loads(sys.argv[2]), store)
print(json.dumps(result.as_dict()), flush=True)
"""


def test_a_second_worker_of_a_running_key_waits_for_its_result(any_store):
    spec = {**TINY, "method": "random"}
    (first,) = start_together(SLOW_RUNNER, [[any_store.location, json.dumps(spec), "4"]])
    while claims.holder(any_store, run_key(spec)) is None:  # the first worker holds the key ...
        assert first.poll() is None, first.stderr.read()[-3000:]
    second = run_job(spec, any_store)  # ... so this one waits, then serves its run
    ran = json.loads(first.stdout.readline())
    assert first.wait(timeout=60) == 0
    assert ran["cached"] is False and second.cached and second.run_id == ran["run_id"]
    runs = queries.runs(any_store)
    assert list(runs["status"]) == ["finished"] and claims.claims(any_store) == []


def run_key(spec):
    from workbench.spec import job_key, parse_spec

    return job_key(parse_spec(spec))


SWEEPER = """
import json, sys
from workbench.sweeps import run_sweep
from workbench.spec import parse_sweep
from workbench.store import Store
store = Store(sys.argv[1])
specs = parse_sweep(json.loads(sys.argv[2]))
print("ready", flush=True)
sys.stdin.readline()
print(json.dumps([r.as_dict() for r in run_sweep(specs, store, progress=False)]), flush=True)
"""


def test_two_sweeps_of_one_grid_at_once_run_every_key_once(any_store):
    sweep = {"base": TINY, "grid": {"method": ["magnitude", "random"], "sparsity": [0.4, 0.6]}}
    procs = start_together(SWEEPER, [[any_store.location, json.dumps(sweep)]] * 2)
    outputs = [json.loads(proc.stdout.readline()) for proc in procs]
    assert [proc.wait(timeout=120) for proc in procs] == [0, 0], [p.stderr.read()[-2000:] for p in procs]
    executed = [r["key"] for results in outputs for r in results if not r["cached"]]
    assert sorted(executed) == sorted({r["key"] for r in outputs[0]})  # each of the 4 keys ran once, anywhere
    assert all(r["status"] == "finished" for results in outputs for r in results)
    assert [r["run_id"] for r in outputs[0]] == [r["run_id"] for r in outputs[1]]
    runs = queries.runs(any_store)
    assert len(runs) == 4 and runs["key"].is_unique and set(runs["status"]) == {"finished"}


OPENER = """
import sys
from workbench.records import JobOutput, Metric
from workbench.store import Store
store = Store(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
run_id = store.start_run("key-" + sys.argv[2], "prune", "{}", {}, {})
store.finish_run(run_id, "key-" + sys.argv[2], JobOutput(metrics=[Metric("i", 1.0)]), 0.0)
print("done", flush=True)
"""


def test_eight_writers_opening_a_fresh_lake_catalog_at_once_all_succeed(lake_url):
    """Known defect: one of 8 writers failed with "Failed to initialize DuckLake: ... CREATE TABLE
    ducklake_metadata". The first ATTACH creates the catalog; the others wait for it and attach again."""
    procs = start_together(OPENER, [[lake_url, str(i)] for i in range(8)])
    outcomes = [(proc.wait(timeout=180), proc.stdout.read().strip(), proc.stderr.read()[-500:]) for proc in procs]
    assert all(code == 0 and out == "done" for code, out, _ in outcomes), outcomes
    runs = queries.runs(Store(lake_url))
    assert len(runs) == 8 and set(runs["status"]) == {"finished"}
    assert Store(lake_url).schema_version() >= 3


def test_a_killed_run_is_taken_over_by_the_next_run_at_once(tmp_path):
    store = Store(tmp_path / "wb.duckdb")
    script = ("import sys, json\nfrom workbench.runner import run_job\nfrom workbench.store import Store\n"
              "run_job(json.loads(sys.argv[2]), Store(sys.argv[1]))")
    env = {"WORKBENCH_FAULTPOINT": "finish:rows_written", "WORKBENCH_LEASE_S": "3600"}
    import os

    proc = subprocess.run([sys.executable, "-c", script, str(store.path), json.dumps(TINY)], env={**os.environ, **env})
    assert proc.returncode == 137
    assert len(claims.claims(store)) == 1  # the killed worker's claim, with an hour of lease left
    result = run_job(TINY, store)  # not an hour: the claim's process is gone
    assert result.status == "finished" and not result.cached and claims.claims(store) == []
    assert list(queries.runs(store)["status"]) == ["finished"]
