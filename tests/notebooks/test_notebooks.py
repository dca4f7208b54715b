"""Every notebook runs end to end with small parameters on a fresh store; the tests check what it found."""

from __future__ import annotations

import nbformat
import pytest

from tests.notebooks.conftest import NOTEBOOKS, TINY
from workbench import api
from workbench.spec import JOB_KINDS, _load_kinds

NAMES = ["01_quickstart", "02_compare_methods", "03_allocation", "04_training", "05_kernels"]


def registered(kind: str) -> bool:
    _load_kinds()
    return kind in JOB_KINDS


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_are_committed_without_outputs_and_with_a_parameters_cell(name):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    assert any("summary" in cell.metadata.get("tags", []) for cell in code)
    assert "store_path" in code[0].source


def test_quickstart_runs_the_suite_and_shows_it(execute, tmp_path):
    _, summary = execute("01_quickstart", kinds=["prune"], baseline=True, **TINY)
    assert summary["jobs"] == 4 and summary["failed"] == 0
    store = api.open_store(tmp_path / "store" / "workbench.duckdb")
    runs = api.runs(store=store).set_index("run_id")
    assert sorted(runs.index) == summary["runs"]
    assert set(runs["method"]) == {"dense", "magnitude", "random"} and set(runs["model"]) == {"tiny-llama"}
    for run_id, value in summary["quality"].items():
        assert value == pytest.approx(runs.loc[run_id, "perplexity"])
        assert summary["sparsity"][run_id] == pytest.approx(runs.loc[run_id, "target_sparsity"], abs=1e-3)
    assert runs[runs["pattern"] == "2:4"]["nm_valid"].tolist() == [1.0]
    # two masks at 50% chosen independently overlap by chance: IoU near (1 - s) / (1 + s) = 1/3
    assert summary["magnitude_vs_random"]["iou"] == pytest.approx(1 / 3, abs=0.05)
    assert summary["magnitude_vs_random"]["sad"] > 0
    front = api.pareto_front(runs.reset_index())
    assert summary["pareto"] == list(front["run_id"])
    assert {"dense", "magnitude", "random", "Pareto front"} <= set(summary["compare_traces"])
    assert summary["mask_layer"].startswith("model.layers.")


def test_compare_methods_table_front_and_agreement(execute):
    methods, sparsities = ["magnitude", "random", "wanda"], [0.5, 0.7]
    _, summary = execute("02_compare_methods", methods=methods, sparsities=sparsities, patterns=["2:4"], **TINY)
    assert summary["failed"] == 0, summary["errors"]
    assert summary["jobs"] == len(methods) * len(sparsities) + len(methods) + 1
    assert set(summary["table"]) == {*methods, "dense"}
    for method in methods:
        assert set(summary["table"][method]) == {"50%", "70%", "2:4"}
        for setting, target in (("50%", 0.5), ("70%", 0.7), ("2:4", 0.5)):
            # Wanda prunes int(s * cols) per row: on 64-wide rows 70% becomes 44/64 = 0.6875
            assert summary["achieved"][f"{method} {setting}"] == pytest.approx(target, abs=1 / 64)
        assert summary["nm_valid"][f"{method} 2:4"] == 1.0
    assert 0 < summary["iou"]["magnitude|random"] == summary["iou"]["random|magnitude"] < 1
    # Wanda scores |W| times activation norms: closer to magnitude's choice than random is
    assert summary["iou"]["magnitude|wanda"] > summary["iou"]["random|wanda"]
    # the front: no listed run is beaten on both sparsity and perplexity by another run of the table
    points = {f"{m} {s}": (summary["achieved"][f"{m} {s}"], q)
              for m, row in summary["table"].items() for s, q in row.items() if m != "dense"}
    for name in summary["pareto"]:
        if name in points:
            x, y = points[name]
            assert not any(ox >= x and oy < y for other, (ox, oy) in points.items() if other != name)
    assert summary["selected_in_figure"] == summary["jobs"]


def test_allocation_uniform_is_flat_owl_bends_and_both_keep_the_target(execute):
    allocations = ["uniform", "owl"]
    # magnitude prunes each layer to its exact count (Wanda rounds per row), so targets show unblurred
    _, summary = execute("03_allocation", method="magnitude", sparsity=0.7, allocations=allocations,
                         allocation_params={"owl": {"lam": 0.1}}, **TINY)
    assert summary["failed"] == 0, summary["errors"]
    assert set(summary["allocations"]) == set(allocations)
    for row in summary["allocations"].values():
        assert row["sparsity"] == pytest.approx(0.7, abs=1e-3)  # OWL keeps the model-wide mean
        assert len(row["blocks"]) == 2  # tiny-llama has two blocks
    uniform = summary["allocations"]["uniform"]
    assert max(uniform["blocks"]) - min(uniform["blocks"]) < 1e-3
    assert summary["iou_vs_uniform"]["uniform"] == 1.0
    assert summary["figure_traces"] == len(allocations)
    owl = summary["allocations"]["owl"]
    assert max(owl["blocks"]) - min(owl["blocks"]) > 1e-3  # OWL moves sparsity between blocks...
    # ...within +- lambda (up to one weight of rounding per layer)
    assert all(abs(block - 0.7) <= 0.1 + 1e-3 for block in owl["blocks"])
    assert summary["iou_vs_uniform"]["owl"] < 1.0


# training: two sparse methods, ten steps of 16 images, a snapshot every five steps
TINY_TRAINING = {"epochs": None, "steps": 10, "train_subset": 256, "eval_subset": 128, "batch_size": 16,
                 "eval_every": 5, "snapshot_every": 5, "log_every": 5}


@pytest.mark.skipif(not registered("train"), reason="the 'train' job kind is not registered (workbench.training)")
def test_training_curves_and_divergence(execute, tmp_path):
    jobs = [{"method": "sr-ste", "pattern": "2:4"}, {"method": "gmp", "sparsity": 0.75}]
    _, summary = execute("04_training", jobs=jobs, overrides=TINY_TRAINING)
    assert summary["failed"] == 0, summary["errors"]
    runs = summary["runs"]
    assert set(runs) == {"sr-ste 50% 2:4", "gmp 75%"}
    assert runs["sr-ste 50% 2:4"]["nm_valid"] == 1.0 and runs["sr-ste 50% 2:4"]["sparsity"] == pytest.approx(0.5)
    assert runs["gmp 75%"]["sparsity"] == pytest.approx(0.75, abs=0.01)
    store = api.open_store(tmp_path / "store" / "workbench.duckdb")
    for run in runs.values():
        assert run["snapshots"] == [0, 5, 10] and run["drift_steps"] == [5, 10]
        assert 0 <= run["accuracy"] <= 1
        # the SAD the notebook computes from stored masks is the SAD the training loop logged
        logged = api.metrics([run["run_id"]], names=["sad"], store=store).set_index("step")["value"]
        assert run["drift_sad"] == [int(logged[step]) for step in run["drift_steps"]]
    assert runs["gmp 75%"]["drift_sad"][0] > 0  # the schedule prunes between the first snapshots
    assert 0 < summary["final_iou"]["gmp 75%|sr-ste 50% 2:4"] < 1
    assert summary["curve_traces"] >= 2 and summary["viewer_steps"] == [0, 5, 10]


# kernels on two CPU cores: one small shape, the CSR backend, a few milliseconds per case
TINY_BENCH = {"kernels": {"backends": ["csr"], "shapes": ["64x128"], "tokens": [16]},
              "latency": {"variants": ["csr"], "prefill_tokens": [16], "decode_batches": [1], "decode_context": 16},
              "timing": {"budget_ms": 5, "min_samples": 3, "rotate_mb": 0, "copy_mb": 8, "matmul_size": 64}}


@pytest.mark.skipif(not registered("bench"), reason="the 'bench' job kind is not registered (workbench.kernels)")
def test_kernels_and_the_accuracy_latency_tradeoff(execute, tmp_path):
    _, summary = execute("05_kernels", sparsities=[0.5], patterns=["2:4"], **TINY, **TINY_BENCH)
    assert summary["prune_failed"] == 0 and summary["kernel_failed"] == 0
    assert summary["kernel_backends"] == ["csr", "dense"] and summary["kernel_cases"] == 2
    assert summary["dense_speedups"] == [1.0]
    store = api.open_store(tmp_path / "store" / "workbench.duckdb")
    runs = api.runs(store=store, kind="prune").set_index("method")
    latency = api.kernel_results(summary["latency_runs"]["0.5"], store=store)
    tradeoff = {(row["job"], row["backend"], row["phase"]): row for row in summary["tradeoff"]}
    assert set(tradeoff) == {("dense", "dense", "prefill"), ("dense", "dense", "decode"),
                             ("magnitude 50%", "csr", "prefill"), ("magnitude 50%", "csr", "decode")}
    assert tradeoff[("dense", "dense", "prefill")]["perplexity"] == pytest.approx(runs.loc["dense", "perplexity"])
    for phase in ("prefill", "decode"):
        row = tradeoff[("magnitude 50%", "csr", phase)]
        measured = latency[(latency["backend"] == "csr") & (latency["phase"] == phase)]["speedup"]
        assert row["speedup"] == pytest.approx(float(measured.iloc[0])) and row["speedup"] > 0
        unstructured = runs[runs["pattern"] == "unstructured"].loc["magnitude"]
        assert row["perplexity"] == pytest.approx(unstructured["perplexity"])
    assert summary["figure_traces"] == 2  # csr and dense, one shape
