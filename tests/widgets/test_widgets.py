"""Widgets: change their values from Python and check that the figures' data follow."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.widgets.synthetic import LAYERS, write_run
from workbench import api, queries
from workbench.errors import SpecError
from workbench.figures import KEPT_COLOR, LOG_TICKFORMAT, PRUNED_COLOR
from workbench.widgets import (
    AllocationView,
    CompareView,
    Dashboard,
    KernelSpeedupView,
    MaskViewer,
    RunPicker,
    SweepLauncher,
    TrainingCurveView,
)
from workbench.widgets.mask_viewer import mask_tile


def traces(figure) -> dict[str, object]:
    return {trace.name: trace for trace in figure.data}


def test_picker_filters_narrow_the_runs_and_bump_the_version(board):
    store, ids = board
    picker = RunPicker(store)
    assert set(picker.runs["run_id"]) == set(ids.values())
    assert "magnitude" in picker.filters["method"].options and "owl" in picker.filters["allocation"].options
    version = picker.version
    picker.filters["method"].value = "random"
    assert set(picker.runs["run_id"]) == {ids["rand50"], ids["rand70"]}
    assert [value for _, value in picker.run_list.options] == list(picker.runs["run_id"])
    assert picker.version > version
    picker.filters["method"].value = "(any)"
    picker.filters["kind"].value = "train"
    assert list(picker.runs["run_id"]) == [ids["train"]]
    assert picker.count.value == f"1 of {len(ids)} runs"


def test_picker_refuses_an_unknown_filter(board):
    store, _ = board
    with pytest.raises(SpecError, match="unknown run filter 'colour'"):
        RunPicker(store, colour="red")


def test_picker_selection_survives_filters_that_keep_the_run_and_drops_the_rest(board):
    store, ids = board
    picker = RunPicker(store, kind="prune")
    picker.select([ids["mag50"], ids["rand50"]])
    assert picker.selected == [ids["mag50"], ids["rand50"]]
    assert set(picker.chosen["run_id"]) == {ids["mag50"], ids["rand50"]}
    picker.filters["method"].value = "magnitude"
    assert picker.selected == [ids["mag50"]]
    picker.run_list.value = ()
    assert len(picker.chosen) == len(picker.runs) == 3  # nothing selected: every filtered run


def test_compare_view_draws_methods_the_pareto_front_and_the_selection(board):
    store, ids = board
    picker = RunPicker(store, kind="prune", allocation="uniform")
    view = CompareView(picker)
    drawn = traces(view.figure)
    assert set(drawn) == {"dense", "magnitude", "random", "Pareto front", "selected"}
    assert sorted(drawn["magnitude"].y) == [20.0, 60.0]
    assert list(drawn["Pareto front"].customdata) == [ids["dense"], ids["mag50"], ids["mag70"]]
    assert list(drawn["Pareto front"].y) == [10.0, 20.0, 60.0]
    assert len(drawn["selected"].x) == 0

    picker.select([ids["rand70"]])
    drawn = traces(view.figure)
    assert list(drawn["selected"].customdata) == [ids["rand70"]]
    assert list(drawn["selected"].y) == [200.0] and list(drawn["selected"].x) == [0.7]

    picker.filters["method"].value = "random"  # the front is recomputed over what the filter keeps
    drawn = traces(view.figure)
    assert set(drawn) == {"random", "Pareto front", "selected"}
    assert list(drawn["Pareto front"].customdata) == [ids["rand50"], ids["rand70"]]

    view.log_y.value = False
    assert view.figure.layout.yaxis.type == "linear"


def test_compare_view_follows_the_quality_metric(board):
    store, ids = board
    picker = RunPicker(store, kind="train")
    view = CompareView(picker)
    assert view.metric.value == "accuracy"  # the only quality metric the train run has
    drawn = traces(view.figure)
    assert list(drawn["sr-ste"].y) == [0.8]
    assert view.figure.layout.title.text.startswith("accuracy (higher is better)")
    picker.filters["kind"].value = "prune"
    assert view.metric.value == "perplexity"
    assert sorted(traces(view.figure)["random"].y) == [40.0, 200.0]


def test_compare_view_offers_task_scores_and_flips_the_front_for_accuracy(tmp_path):
    store = api.open_store(tmp_path / "w.duckdb")
    task = "shakespeare-lastword/acc"
    runs = {"dense": (0.0, 20.0, 0.5), "sparsegpt": (0.5, 24.0, 0.4), "wanda": (0.5, 25.0, 0.42),
            "magnitude": (0.7, 90.0, 0.25)}
    ids = {method: write_run(store, method=method, sparsity=sparsity, seed=i,
                             metrics={"sparsity": sparsity, "perplexity": perplexity, task: accuracy,
                                      f"{task}_stderr": 0.05, "shakespeare-lastword/documents": 40.0})
           for i, (method, (sparsity, perplexity, accuracy)) in enumerate(runs.items())}
    view = CompareView(RunPicker(store))
    assert list(view.metric.options) == ["perplexity", task]  # no standard error, no document count
    assert list(traces(view.figure)["Pareto front"].customdata) == [ids["dense"], ids["sparsegpt"], ids["magnitude"]]
    view.metric.value = task
    assert list(traces(view.figure)["Pareto front"].customdata) == [ids["dense"], ids["wanda"], ids["magnitude"]]
    assert list(view.front["run_id"]) == [ids["dense"], ids["wanda"], ids["magnitude"]]
    assert view.figure.layout.yaxis.title.text == f"{task} (higher is better)"


def test_compare_view_adds_a_run_once_the_picker_rereads_the_store(tmp_path):
    store = api.open_store(tmp_path / "w.duckdb")
    write_run(store, method="magnitude", sparsity=0.5, metrics={"sparsity": 0.5, "perplexity": 30.0})
    picker = RunPicker(store)
    view = CompareView(picker)
    assert list(traces(view.figure)["magnitude"].y) == [30.0]
    write_run(store, method="magnitude", sparsity=0.6, metrics={"sparsity": 0.6, "perplexity": 35.0}, seed=1)
    picker.refresh_button.click()
    assert sorted(traces(view.figure)["magnitude"].y) == [30.0, 35.0]


def test_allocation_view_per_layer_and_per_block(board):
    store, ids = board
    picker = RunPicker(store)
    picker.select([ids["mag50"], ids["owl"]])
    view = AllocationView(picker)
    assert len(view.figure.data) == 2
    owl = next(t for t in view.figure.data if t.name.endswith(ids["owl"][:8]))
    assert list(owl.x) == ["0.mlp.up_proj", "0.self_attn.q_proj", "1.mlp.up_proj", "1.self_attn.q_proj"]
    assert list(owl.y) == pytest.approx([0.375, 0.375, 0.625, 0.625])

    view.grouping.value = "per block"
    owl = next(t for t in view.figure.data if t.name.endswith(ids["owl"][:8]))
    assert list(owl.x) == [0, 1] and list(owl.y) == pytest.approx([0.375, 0.625])
    uniform = next(t for t in view.figure.data if t.name.endswith(ids["mag50"][:8]))
    assert list(uniform.y) == pytest.approx([0.5, 0.5])

    picker.select([ids["owl"]])
    assert len(view.figure.data) == 1


def test_mask_tile_averages_zoomed_tiles():
    mask = torch.tensor([[1, 1, 0, 0, 1],
                         [1, 0, 0, 0, 1],
                         [0, 0, 1, 1, 1]], dtype=torch.bool)
    assert np.array_equal(mask_tile(mask, 1), mask.float().numpy())
    tiles = mask_tile(mask, 2)
    # the edge tiles average only the weights they cover
    assert tiles.tolist() == [[0.75, 0.0, 1.0], [0.0, 1.0, 1.0]]
    assert mask_tile(mask, 1, row0=1, col0=3, cells=2).tolist() == [[0.0, 1.0], [1.0, 1.0]]


def test_mask_viewer_follows_run_layer_step_and_zoom(board):
    store, ids = board
    picker = RunPicker(store)
    picker.select([ids["owl"], ids["train"]])
    viewer = MaskViewer(picker, run_id=ids["owl"])
    assert viewer.run.value == ids["owl"] and viewer.layer.value == LAYERS[0]
    stored = queries.load_mask(store, ids["owl"], LAYERS[0])
    assert np.array_equal(viewer.figure.data[0].z, stored.float().numpy())
    assert "sparsity 0.375" in viewer.summary.value

    viewer.layer.value = LAYERS[2]
    stored = queries.load_mask(store, ids["owl"], LAYERS[2])
    assert np.array_equal(viewer.figure.data[0].z, stored.float().numpy())
    assert "sparsity 0.625" in viewer.summary.value

    viewer.zoom.value = 4
    z = np.asarray(viewer.figure.data[0].z)
    assert z.shape == (2, 4)
    assert z[0, 0] == pytest.approx(float(stored[:4, :4].float().mean()))

    kept_colour = viewer.figure.data[0].colorscale[-1][1]  # z = 1 (kept) draws dark, as the app's pictures do
    assert kept_colour == KEPT_COLOR and viewer.figure.data[0].colorscale[0][1] == PRUNED_COLOR
    assert not viewer.figure.data[0].reversescale

    viewer.run.value = ids["train"]  # a run with snapshots: the final step first, then any step
    assert list(viewer.step.options) == [0, 10, 20] and viewer.step.value == 20
    viewer.step.value = 0
    first = queries.load_mask(store, ids["train"], viewer.layer.value, step=0)
    assert np.asarray(viewer.figure.data[0].z)[0, 0] == pytest.approx(float(first[:4, :4].float().mean()))
    assert "(step 0)" in viewer.figure.layout.title.text


def test_training_view_draws_the_metric_and_sad_between_snapshots(board):
    store, ids = board
    picker = RunPicker(store, kind="train")
    view = TrainingCurveView(picker, metric="loss")
    curve, drift = view.figure.data
    assert list(curve.x) == [0, 1, 2] and list(curve.y) == [2.0, 1.5, 1.0]
    expected = api.mask_drift(ids["train"], store=store)
    assert list(drift.x) == [10, 20] and drift.yaxis == "y2"
    assert list(drift.y) == pytest.approx(list(expected["sad_fraction"]))
    # SAD between the stored masks themselves, summed over layers
    masks = {step: queries.load_masks(store, ids["train"], step=step) for step in (0, 10)}
    first_sad = sum(int((masks[0][layer] ^ masks[10][layer]).sum()) for layer in LAYERS)
    assert drift.y[0] == pytest.approx(first_sad / (len(LAYERS) * 128))

    view.metric.value = "accuracy"
    assert list(view.figure.data[0].y) == [0.3, 0.6, 0.8]
    view.drift.value = "iou"
    assert list(view.figure.data[1].y) == pytest.approx(list(expected["iou"]))


def test_kernel_view_filters_cases_and_counts_failures(board):
    store, ids = board
    picker = RunPicker(store, kind="bench")
    view = KernelSpeedupView(picker)
    assert view.filters["phase"].value == "kernel"  # matmul cases first; the setup row is no phase to pick
    assert set(view.filters["phase"].options) == {"(all)", "kernel", "decode"}
    assert "12 measured cases; 1 failed" in view.failed.value
    assert set(view.filters["dtype"].options) == {"(all)", "fp16", "bf16"}
    view.filters["dtype"].value = "fp16"
    drawn = traces(view.figure)
    assert set(drawn) == {"dense dense 4096x4096", "semi24 2:4 4096x4096"}
    assert list(drawn["semi24 2:4 4096x4096"].x) == [16, 256, 4096]
    assert list(drawn["semi24 2:4 4096x4096"].y) == pytest.approx([1.2, 1.4, 1.6])
    # the app's speedup figure: titled axes, tokens on a log axis labelled 16, 256, 4096 (not 2, 5, 1000)
    layout = view.figure.layout
    assert layout.xaxis.title.text == "tokens (rows of the input)" and layout.yaxis.title.text == "speedup over dense"
    assert layout.xaxis.type == "log" and layout.xaxis.tickformat == LOG_TICKFORMAT
    view.filters["dtype"].value = "bf16"
    assert list(traces(view.figure)["semi24 2:4 4096x4096"].y) == pytest.approx([1.08, 1.26, 1.44])
    view.filters["shape"].value = "4096x4096"  # one shape: traces lose the shape from their names
    assert set(traces(view.figure)) == {"dense dense", "semi24 2:4"}

    view.filters["shape"].value = "(all)"
    view.filters["phase"].value = "decode"  # model latency: speedup against the batch size
    view.x_axis.value = "batch"
    drawn = traces(view.figure)
    assert set(drawn) == {"semi24 2:4 model"}
    assert list(drawn["semi24 2:4 model"].x) == [1, 8] and list(drawn["semi24 2:4 model"].y) == [1.3, 1.25]


def test_sweep_launcher_runs_jobs_advances_the_bar_and_refreshes_pickers(store, tiny_spec):
    picker = RunPicker(store)
    assert picker.runs.empty
    base = {k: v for k, v in tiny_spec.items() if k not in ("method", "sparsity")}
    launcher = SweepLauncher(store, {"base": base, "grid": {"method": ["magnitude", "random"]}}, pickers=[picker])
    compare = CompareView(picker)
    results = launcher.launch()
    assert list(results["status"]) == ["finished", "finished"] and not results["cached"].any()
    assert launcher.progress.value == launcher.progress.max == 2
    assert set(picker.runs["run_id"]) == set(results["run_id"])
    assert set(traces(compare.figure)) >= {"magnitude", "random"}
    again = launcher.launch()  # finished keys come from the cache
    assert again["cached"].all() and "2 from the cache" in launcher.status.value


def test_sweep_launcher_reports_a_bad_sweep_without_raising(store):
    launcher = SweepLauncher(store)
    launcher.text.value = "base: {method: no-such-method}\n"
    launcher.launch()
    assert "unknown method 'no-such-method'" in launcher.status.value
    launcher.text.value = "base: [unclosed\n"
    launcher.launch()
    assert "cannot run" in launcher.status.value and not launcher.button.disabled
    launcher.text.value = "base: {method: magnitude}\ngrid: {sparsity: [0.5]}\ngrid: {sparsity: [0.7]}\n"
    launcher.launch()
    assert "key 'grid' is given twice" in launcher.status.value  # not silently the second grid


def test_dashboard_links_every_view_to_one_picker(board):
    store, ids = board
    board_widget = Dashboard(store)
    assert board_widget.launcher.pickers == [board_widget.picker]
    board_widget.picker.filters["kind"].value = "bench"
    assert board_widget.kernels.cases["run_id"].unique().tolist() == [ids["bench"]]
    assert all(len(trace.x) == 0 for trace in board_widget.compare.figure.data)  # a bench run has no quality
