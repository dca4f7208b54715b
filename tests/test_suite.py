from workbench.suite import default_suite
from workbench.sweeps import run_sweep


def test_default_suite_runs_on_a_tiny_model_and_is_cached_the_second_time(store):
    specs = default_suite(kinds=["prune"], model="tiny-llama", calibration={"samples": 4, "seq_len": 64, "seed": 0},
                          evaluation={"windows": 2, "seq_len": 64})
    assert {s.method for s in specs} >= {"dense", "random", "magnitude"}
    first = run_sweep(specs, store, progress=False)
    assert all(r.status == "finished" and not r.cached for r in first), [r.error for r in first]
    second = run_sweep(specs, store, progress=False)
    assert all(r.cached for r in second)
    by_method = {(s.method, str(s.pattern), s.sparsity): r.metrics for s, r in zip(specs, first)}
    assert by_method[("dense", "unstructured", 0.0)]["sparsity"] < 0.01


def test_the_suite_on_smollm2_is_the_documented_one():
    specs = default_suite(kinds=["prune"])
    assert all(s.model == "smollm2-135m" and s.data == "shakespeare" for s in specs)
    assert all((s.calibration.samples, s.calibration.seq_len, s.evaluation.windows) == (64, 512, 64) for s in specs)
    rows = {(s.method, str(s.pattern), s.sparsity) for s in specs}
    assert {("dense", "unstructured", 0.0), ("random", "unstructured", 0.5), ("magnitude", "unstructured", 0.5),
            ("magnitude", "2:4", 0.5)} <= rows


def test_the_baseline_suite_keeps_only_the_calibration_free_rows():
    specs = default_suite(baseline=True)
    assert {(s.kind, s.method, str(s.pattern), s.sparsity) for s in specs} == {
        ("prune", "dense", "unstructured", 0.0), ("prune", "random", "unstructured", 0.5),
        ("prune", "magnitude", "unstructured", 0.5), ("prune", "magnitude", "2:4", 0.5)}
    full = default_suite(kinds=["prune"])
    assert {s.method for s in full} - {s.method for s in specs} >= {"wanda", "sparsegpt", "dsnot"}
