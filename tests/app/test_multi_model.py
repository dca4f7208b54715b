"""The pages on a store of several models (tiny-llama, SmolLM2-135M with 210 layers, seeds and structured
runs, fashion-cnn training runs, a CPU kernel benchmark): one model at a time, readable axes, seeds
averaged, runs without a measured speed accounted for."""

from __future__ import annotations

import pytest

from tests.app.helpers import figures, no_exception, notices, table, trace_names
from workbench.figures import LOG_TICKFORMAT, axis_titles

SMOL = "smollm2-135m · shakespeare"
TINY = "tiny-llama · shakespeare"


def log_axes(figure: dict) -> dict[str, dict]:
    return {name: axis for name, axis in figure["layout"].items()
            if name.startswith(("xaxis", "yaxis")) and isinstance(axis, dict) and axis.get("type") == "log"}


def assert_readable(figure: dict) -> None:
    """Every axis that carries data has a title, and log axes label their ticks with whole numbers."""
    titles = axis_titles(figure)
    assert titles.get("xaxis") and titles.get("yaxis"), titles
    for name, axis in log_axes(figure).items():
        assert axis.get("tickformat") == LOG_TICKFORMAT, (name, axis)


def points(figure: dict) -> list[dict]:
    return [t for t in figure["data"] if not t["name"].startswith("Pareto") and t["name"] != "dense baseline"]


def test_compare_defaults_to_the_model_with_the_most_runs(open_page, multi):
    path, ids = multi
    at = open_page(path, "compare")
    no_exception(at)
    assert at.multiselect(key="compare_models").value == [SMOL]
    quality = figures(at)["compare_quality"]
    labels = [label for t in points(quality) for label in t["text"]]
    assert labels and all("smollm2-135m" in label for label in labels)
    assert_readable(quality)
    assert "lower is better" in axis_titles(quality)["yaxis"] and "sparsity" in axis_titles(quality)["xaxis"]
    assert log_axes(quality)  # perplexity on a log axis by default, labelled 20, 30, 50 rather than 2, 3, 5
    (baseline,) = [t for t in quality["data"] if t["name"] == "dense baseline"]
    assert baseline["y"] == [20.0, 20.0]  # SmolLM2's dense perplexity, not tiny-llama's


def test_compare_draws_one_panel_per_model_with_its_own_front_and_baseline(open_page, multi):
    path, _ = multi
    at = open_page(path, "compare")
    at.multiselect(key="compare_models").set_value([SMOL, TINY]).run()
    no_exception(at)
    quality = figures(at)["compare_quality"]
    panels = {t.get("xaxis", "x") for t in quality["data"]}
    assert panels == {"x", "x2"}
    for panel in panels:
        names = [t["name"] for t in quality["data"] if t.get("xaxis", "x") == panel]
        assert "Pareto front" in names and "dense baseline" in names
        labels = {label.split(" · ")[1] for t in quality["data"] if t.get("xaxis", "x") == panel
                  and t["name"] not in ("dense baseline",) for label in t.get("text", [])}
        assert len(labels) == 1  # one model per panel
    assert axis_titles(quality)["xaxis2"]  # every panel's x axis says what it is
    at.toggle(key="compare_relative").set_value(True).run()
    relative = figures(at)["compare_quality"]
    assert "perplexity / dense" in axis_titles(relative)["yaxis"]
    baselines = [t for t in relative["data"] if t["name"] == "dense baseline"]
    assert len(baselines) == 2 and all(t["y"] == [1.0, 1.0] for t in baselines)
    dense = [y for t in points(relative) if t["name"].startswith("dense") for y in t["y"]]
    assert dense == pytest.approx([1.0, 1.0])


def test_compare_averages_seeds_with_error_bars_and_lists_the_settings(open_page, multi):
    path, ids = multi
    at = open_page(path, "compare")
    quality = figures(at)["compare_quality"]
    (wanda,) = [t for t in points(quality) if t["name"].startswith("wanda,")]
    # three seeds at 50% (24, 25, 26) and two at 70% (40, 44): one point each, mean and standard deviation
    assert sorted(wanda["y"]) == pytest.approx([25.0, 42.0])
    spread = dict(zip(wanda["y"], wanda["error_y"]["array"]))
    assert spread[25.0] == pytest.approx(1.0) and spread[42.0] == pytest.approx(2 ** 0.5 * 2)
    assert any("mean of 3 seeds" in label for label in wanda["text"])
    sweep = table(at, "seeds")
    assert {"method", "target_sparsity", "perplexity mean", "perplexity std"} <= set(sweep.columns)
    assert "calibration.seed" not in sweep.columns and "model" not in sweep.columns  # constant or averaged over
    row = sweep[(sweep["method"] == "wanda") & (sweep["target_sparsity"] == 0.5)].iloc[0]
    assert row["seeds"] == 3 and row["perplexity mean"] == pytest.approx(25.0)
    at.toggle(key="compare_by_seed").set_value(False).run()
    each = [t for t in points(figures(at)["compare_quality"]) if t["name"].startswith("wanda,")][0]
    assert len(each["y"]) == 5


def test_compare_on_another_model_offers_its_own_metric(open_page, multi):
    path, _ = multi
    at = open_page(path, "compare")
    at.multiselect(key="compare_models").set_value(["fashion-cnn · fashion-mnist"]).run()
    no_exception(at)
    assert at.selectbox(key="compare_metric").value == "accuracy"
    quality = figures(at)["compare_quality"]
    assert "higher is better" in axis_titles(quality)["yaxis"]
    (srste,) = [t for t in points(quality) if t["name"].startswith("sr-ste")]
    assert srste["y"] == pytest.approx([0.87])  # the two training seeds (the spec's own `seed`) averaged


def test_compare_against_parameter_count_for_structured_runs(open_page, multi):
    path, ids = multi
    at = open_page(path, "compare")
    at.selectbox(key="compare_x").set_value("parameters").run()
    no_exception(at)
    quality = figures(at)["compare_quality"]
    xs = sorted(x for t in points(quality) for x in t["x"])
    assert xs == [0.9e8, 1.1e8]
    assert "parameters" in axis_titles(quality)["xaxis"] and quality["layout"]["xaxis"]["type"] == "log"
    front = [t for t in quality["data"] if t["name"] == "Pareto front"][0]
    assert len(front["x"]) == 2  # fewer parameters or lower perplexity: neither run beats the other


def test_against_speed_says_which_runs_are_missing_and_how_to_measure_them(open_page, multi):
    path, ids = multi
    at = open_page(path, "compare")
    at.get_by_key("compare_view").set_value("Against measured speed").run()
    no_exception(at)
    assert at.selectbox(key="compare_timing").value == "wall"  # a CPU benchmark: no graph timing
    text = notices(at)
    assert "7 of 9 runs are not drawn" in text and "no latency benchmark of the model they pruned" in text
    commands = at.code[0].value.splitlines()
    assert commands and all(c.startswith("workbench bench latency --model smollm2-135m --masks-run ") for c in commands)
    assert all("--store " in c for c in commands)
    # structured runs shrink the model instead of sparsifying it: no latency command, the parameter axis instead
    assert not any(ids["smol"][name] in c for c in commands for name in ("structured30", "structured50"))
    assert "2 of them are structured runs" in "\n".join(c.value for c in at.caption)
    speed = figures(at)["compare_speed"]
    assert_readable(speed)
    measured = {t["name"]: len(t["x"]) for t in points(speed)}
    assert measured == {"dense, unstructured": 1, "wanda, unstructured": 1}
    assert "parameter count" in "\n".join(c.value for c in at.caption)


def test_scatter_matrix_shows_only_fields_that_vary_among_the_plotted_runs(open_page, multi):
    path, _ = multi
    at = open_page(path, "compare")
    at.get_by_key("compare_view").set_value("Scatter matrix of the spec's numeric fields").run()
    no_exception(at)
    matrix = figures(at)["compare_matrix"]
    labels = [d["label"] for d in matrix["data"][0]["dimensions"]]
    # SmolLM2's runs vary in sparsity and calibration seed; training fields (steps, seed) are absent for all
    assert set(labels) == {"target_sparsity", "calibration.seed", "achieved_sparsity", "perplexity"}


def test_parallel_coordinates_of_a_sweeps_settings(open_page, multi):
    path, _ = multi
    at = open_page(path, "compare")
    at.get_by_key("compare_view").set_value("Sweep settings (parallel coordinates)").run()
    no_exception(at)
    (lines,) = figures(at)["compare_parallel"]["data"]
    assert lines["type"] == "parcoords"
    labels = [d["label"] for d in lines["dimensions"]]
    assert labels[0] == "method" and labels[-1] == "perplexity (lower is better)"
    method = lines["dimensions"][0]
    assert "wanda" in method["ticktext"] and len(method["values"]) == 6  # six settings, seeds averaged


def test_layers_default_to_runs_of_one_model(open_page, multi):
    path, ids = multi
    at = open_page(path, "layers")
    no_exception(at)
    picked = at.multiselect(key="layers_runs").value
    # the newest runs are fashion-cnn's three training runs, not a mix with the SmolLM2 runs before them
    assert sorted(picked) == sorted(ids["fashion"].values())


def test_layers_of_a_large_model_group_by_block_and_zoom_into_one(open_page, multi):
    path, ids = multi
    smol = [*ids["smol"]["wanda50"], *ids["smol"]["wanda70"]]
    at = open_page(path, "layers", selection=smol)
    no_exception(at)
    assert at.selectbox(key="layers_grouping_many").value == "per block"
    bars = figures(at)["layers_bars"]
    runs = [t for t in bars["data"] if t["type"] == "bar"]
    assert len(runs) == 5 and all(len(t["x"]) == 30 for t in runs)  # 30 blocks, not 210 layers
    assert axis_titles(bars) == {"xaxis": "block", "yaxis": "sparsity (bars: achieved, dashes: target)"}
    assert len(figures(at)["layers_heatmap"]["data"][0]["y"]) == 30
    at.selectbox(key="layers_grouping_many").set_value("per layer type").run()
    types = [t for t in figures(at)["layers_bars"]["data"] if t["type"] == "bar"][0]["x"]
    assert types == ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    at.selectbox(key="layers_grouping_many").set_value("each layer").run()
    at.selectbox(key="layers_block").set_value(12).run()
    no_exception(at)
    zoomed = [t for t in figures(at)["layers_bars"]["data"] if t["type"] == "bar"][0]["x"]
    assert len(zoomed) == 7 and all(name.startswith("12.") for name in zoomed)
    at.get_by_key("layers_view").set_value("Reconstruction error and OWL outlier ratios").run()
    recon = figures(at)["layers_recon"]
    assert_readable(recon)
    assert recon["layout"]["yaxis"]["type"] == "log" and "reconstruction error" in axis_titles(recon)["yaxis"]


def test_layers_show_heads_and_channels_kept_by_structured_runs(open_page, multi):
    path, ids = multi
    at = open_page(path, "layers", selection=[ids["smol"]["structured30"], ids["smol"]["structured50"]])
    no_exception(at)
    structure = figures(at)["layers_structure"]
    titles = axis_titles(structure)
    assert {titles["yaxis"], titles["yaxis2"]} == {"heads kept", "channels kept"}
    heads_axis = "x2" if titles["yaxis2"] == "heads kept" else "x"
    heads = {t["name"]: t["y"] for t in structure["data"] if t.get("xaxis", "x") == heads_axis}
    assert len(heads) == 2 and all(len(y) == 30 for y in heads.values())
    fewer = [y for name, y in heads.items() if "50%" in name][0]
    assert fewer[:4] == [7, 6, 5, 4]  # 9 heads, minus the block's share, minus 2 at 50%
    assert any("of 9 per block" in a["text"] for a in structure["layout"]["annotations"])


def test_kernels_default_to_the_timing_a_cpu_benchmark_measured(open_page, multi):
    path, _ = multi
    at = open_page(path, "kernels")
    no_exception(at)
    timing = at.selectbox(key="kernels_timing")
    assert timing.value == "wall" and "once" in timing.options
    assert "once" in timing.help
    speedup = figures(at)["kernels_speedup"]
    assert speedup["data"] and sum(len(t["x"]) for t in speedup["data"]) == 4
    assert_readable(speedup)
    assert speedup["layout"]["xaxis"]["type"] == "log"  # tokens 1 ... 4096
    trace_names(speedup)


def test_runs_table_shows_the_name_beside_the_run_id(open_page, multi):
    path, ids = multi
    at = open_page(path, "runs")
    no_exception(at)
    shown = at.dataframe[0].value
    assert list(shown.columns[:3]) == ["run_id", "name", "status"]
    assert shown.set_index("run_id").loc[ids["smol"]["dense"], "name"] == "smol baseline"
    assert "parameters" in shown.columns  # structured runs' size
