"""Every page under AppTest on stores made here: missing, the default suite (run for real on tiny-llama),
and one with failed, training, OWL and kernel rows. No exceptions; the expected elements and figure
data; filters and selections change what is shown."""

from __future__ import annotations

import pytest

from tests.app.conftest import PAGES
from tests.app.helpers import figures, no_exception, notices, table, trace_names
from workbench.figures import axis_titles


@pytest.mark.parametrize("page", PAGES)
def test_missing_store_shows_how_to_fill_it(open_page, tmp_path, page):
    at = open_page(tmp_path / "nowhere" / "workbench.duckdb", page)
    no_exception(at)
    if page == "launch":
        assert at.button and not figures(at)  # the form works without a store: it creates one
        assert "Nothing launched yet" in at.caption[-1].value
    else:
        assert "No store at" in notices(at) and "workbench demo" in notices(at)
        assert not figures(at)


def test_runs_page_on_the_default_suite(open_page, suite_path):
    at = open_page(suite_path, "runs")
    no_exception(at)
    runs = at.dataframe[0].value
    assert sorted(runs["method"]) == ["dense", "magnitude", "magnitude", "random"]
    assert set(runs["status"]) == {"finished"} and runs["perplexity"].notna().all()
    assert "4 runs in" in at.caption[0].value


def test_runs_filters_query_box_and_sorting(open_page, rich):
    path, ids = rich
    at = open_page(path, "runs")
    assert len(at.dataframe[0].value) == 9
    at.multiselect(key="runs_filter_status").set_value(["failed"]).run()
    failed = at.dataframe[0].value
    assert list(failed["run_id"]) == [ids["failed"][0]] and "no weights" in failed["error"].iloc[0]
    at.multiselect(key="runs_filter_status").set_value([]).run()
    at.text_input(key="runs_query").input("method=magnitude target>=0.8").run()
    assert set(at.dataframe[0].value["status"]) == {"failed", "running"}
    at.text_input(key="runs_query").input("kind=prune").run()
    at.selectbox(key="runs_sort").set_value("perplexity").run()
    at.toggle(key="runs_descending").set_value(False).run()
    ordered = at.dataframe[0].value["perplexity"].dropna().tolist()
    assert ordered == sorted(ordered) and len(ordered) == 5
    at.text_input(key="runs_query").input("colour=red").run()
    no_exception(at)
    assert "unknown field 'colour'" in notices(at)


def test_selecting_runs_shows_only_the_spec_fields_that_differ(open_page, rich):
    path, ids = rich
    at = open_page(path, "runs")
    suite = ids["suite"]
    at.multiselect(key="runs_pick").set_value([suite["magnitude"], suite["random"]]).run()
    no_exception(at)
    diff = table(at, "field")
    # same model, data, sparsity, pattern, calibration: only the method and magnitude's own parameter
    assert list(diff.index) == ["method", "params.scope"]
    assert sorted(diff.loc["method"]) == ["magnitude", "random"]
    assert sorted(diff.loc["params.scope"]) == ["layer", "—"]
    at.multiselect(key="runs_pick").set_value([suite["magnitude"], suite["2:4"]]).run()
    assert set(table(at, "field").index) == {"pattern.group", "pattern.keep", "pattern.name"}
    # both tables list the runs in the order they were picked
    at.multiselect(key="runs_pick").set_value([suite["random"], suite["magnitude"]]).run()
    assert list(table(at, "field").columns) == list(at.dataframe[-1].value.columns)
    assert list(table(at, "field").columns)[0].startswith("random")
    at.multiselect(key="runs_pick").set_value([ids["failed"][0]]).run()
    assert "This run failed" in notices(at)
    assert '"sparsity": 0.9' in at.code[0].value


def test_compare_draws_quality_against_sparsity_with_the_pareto_front(open_page, suite_path):
    at = open_page(suite_path, "compare")
    no_exception(at)
    charts = figures(at)
    quality = charts["compare_quality"]
    points = [t for t in quality["data"] if not t["name"].startswith("Pareto") and t["name"] != "dense baseline"]
    assert sum(len(t["x"]) for t in points) == 4
    (dense,) = [t for t in points if t["name"].startswith("dense")]
    (baseline,) = [t for t in quality["data"] if t["name"] == "dense baseline"]
    assert baseline["y"] == [dense["y"][0]] * 2  # the dense run's perplexity as a reference line
    assert all("tiny-llama" in label for t in points for label in t["text"])  # hover names the run
    front = [t for t in quality["data"] if t["name"] == "Pareto front"]
    assert front and len(front[0]["x"]) >= 1
    assert quality["layout"]["xaxis"]["title"]["text"] and "lower is better" in quality["layout"]["yaxis"]["title"]["text"]
    at.get_by_key("compare_view").set_value("Against measured speed").run()
    assert "No latency measured" in notices(at) and not figures(at)
    at.get_by_key("compare_view").set_value("Scatter matrix of the spec's numeric fields").run()
    no_exception(at)
    assert list(figures(at)) == ["compare_matrix"]  # sparsity and pattern fields vary across the suite


def test_compare_colour_grouping_and_speed(open_page, rich):
    path, ids = rich
    at = open_page(path, "compare")
    no_exception(at)
    names = trace_names(figures(at)["compare_quality"])
    assert "wanda, unstructured" in names
    at.selectbox(key="compare_color").set_value("pattern").run()
    at.selectbox(key="compare_symbol").set_value("(none)").run()
    at.selectbox(key="compare_fronts").set_value("each colour group").run()
    names = trace_names(figures(at)["compare_quality"])
    assert {"2:4", "unstructured", "Pareto front: 2:4", "Pareto front: unstructured"} <= set(names)
    at.get_by_key("compare_view").set_value("Against measured speed").run()
    speed = figures(at)["compare_speed"]  # the latency rows timed with the 2:4 run's masks
    xs = {label: x for t in speed["data"] if not t["name"].startswith("Pareto") and "text" in t
          for label, x in zip(t["text"], t["x"])}
    assert any(ids["nm"][:8] in label and x > 1 for label, x in xs.items())
    assert any(label.startswith("dense") and x == 1.0 for label, x in xs.items())


def test_layers_side_by_side_heatmap_and_owl(open_page, rich):
    path, ids = rich
    at = open_page(path, "layers", selection=[ids["owl"], ids["nm"]])
    no_exception(at)
    charts = figures(at)
    assert len([t for t in charts["layers_bars"]["data"] if t["type"] == "bar"]) == 2
    heat = charts["layers_heatmap"]["data"][0]
    assert len(heat["x"]) == 2 and len(heat["y"]) == 14  # runs x the 2:4 run's 14 layers
    at.selectbox(key="layers_heatmap_value").set_value("achieved − target").run()
    assert figures(at)["layers_heatmap"]["layout"]["coloraxis"]["cmid"] == 0
    at.get_by_key("layers_view").set_value("Reconstruction error and OWL outlier ratios").run()
    charts = figures(at)
    assert set(charts) == {"layers_recon", "layers_owl_ratio", "layers_owl_target"}
    owl = charts["layers_owl_target"]["data"][0]
    assert sorted(owl["y"]) == pytest.approx([0.65, 0.75])


def test_layers_without_recon_or_owl_say_so(open_page, suite_path):
    at = open_page(suite_path, "layers")
    no_exception(at)
    assert set(figures(at)) == {"layers_bars", "layers_heatmap"}
    at.get_by_key("layers_view").set_value("Reconstruction error and OWL outlier ratios").run()
    assert "No outlier ratios recorded" in notices(at) and "reconstruction error" in notices(at)


def test_masks_picture_zoom_and_overlap(open_page, suite_path):
    at = open_page(suite_path, "masks")
    no_exception(at)
    assert set(figures(at)) == {"masks_image", "masks_detail", "masks_rows", "masks_cols"}
    at.get_by_key("masks_view").set_value("Overlap between runs").run()
    overlap = figures(at)["masks_overlap"]["data"][0]
    assert len(overlap["z"]) == 4 and [overlap["z"][i][i] for i in range(4)] == [1.0] * 4
    dense = [i for i, name in enumerate(overlap["y"]) if name.startswith("dense")][0]
    assert min(overlap["z"][dense]) == pytest.approx(0.5, abs=0.01)  # 50% masks inside the all-kept one
    nm_run = [r for r, label in zip(at.selectbox(key="masks_run").options, at.selectbox(key="masks_run").options)
              if "2:4" in label][0]
    at.selectbox(key="masks_run").select(nm_run).run()
    at.get_by_key("masks_view").set_value("This run's mask").run()
    detail = figures(at)["masks_detail"]
    assert len(detail["layout"]["shapes"]) == 48 // 4 - 1  # a line between every two groups of 4 columns
    at.get_by_key("masks_view").set_value("Overlap between runs").run()
    at.radio(key="masks_scope").set_value("the whole model").run()
    no_exception(at)
    whole = figures(at)["masks_overlap"]["data"][0]
    dense = [i for i, name in enumerate(whole["y"]) if name.startswith("dense")][0]
    assert sorted(whole["z"][dense])[:3] == pytest.approx([0.5] * 3, abs=0.01)  # 3 half-sparse runs vs all-kept


def test_training_curves_divergence_and_snapshots(open_page, rich):
    path, ids = rich
    at = open_page(path, "training")
    no_exception(at)
    charts = figures(at)
    curves = charts["training_metrics_chart"]
    panels = {a["text"]: a for a in curves["layout"]["annotations"]}
    assert set(panels) == {"loss", "accuracy"}  # one figure, a panel per metric
    assert [t["showlegend"] for t in curves["data"]].count(True) == 1  # one legend entry per run, not per panel
    loss_axis = "x" if sorted(panels).index("loss") == 0 else "x2"
    (loss,) = [t for t in curves["data"] if t.get("xaxis", "x") == loss_axis]
    assert loss["x"] == list(range(0, 61, 10)) and loss["y"][0] > loss["y"][-1]
    assert {axis_titles(curves)["yaxis"], axis_titles(curves)["yaxis2"]} == {"loss", "accuracy"}
    lines = charts["training_sad_lines"]["data"]
    assert len(lines) == 2 and all(len(t["x"]) == 3 for t in lines)  # 2 layers x 3 steps after the first
    snapshots = charts["training_snapshots"]
    assert len(snapshots["frames"]) == 4
    at.multiselect(key="training_metrics").set_value(["accuracy"]).run()
    (panel,) = figures(at)["training_metrics_chart"]["layout"]["annotations"]
    assert panel["text"] == "accuracy"


def test_kernels_speedup_roofline_latency_and_failures(open_page, rich):
    path, _ = rich
    at = open_page(path, "kernels")
    no_exception(at)
    charts = figures(at)
    speedup = charts["kernels_speedup"]
    assert {t["name"] for t in speedup["data"]} == {"bsr, bfloat16", "bsr, float16", "cusparselt, bfloat16",
                                                    "cusparselt, float16"}
    # the configuration each case's search chose is in the hover, beside the time
    hovered = [point for t in speedup["data"] if t["name"].startswith("cusparselt") for point in t["customdata"]]
    assert hovered and all("alg 2, split-k 1, transposed result" in point for point in hovered)
    at.get_by_key("kernels_view").set_value("Speedup, steady blocks").run()
    steady = figures(at)["kernels_steady"]["data"]  # only the rows that measured it, at 0.9 of the alternated
    assert {t["name"] for t in steady} == {"cusparselt, bfloat16", "cusparselt, float16"}
    alternated = {(t["name"], x): y for t in speedup["data"] for x, y in zip(t["x"], t["y"])}
    assert all(y == pytest.approx(0.9 * alternated[(t["name"], x)]) for t in steady for x, y in zip(t["x"], t["y"]))
    for view, key in (("Roofline fraction", "kernels_roofline"), ("Model latency", "kernels_model")):
        at.get_by_key("kernels_view").set_value(view).run()
        assert list(figures(at)) == [key]
    model = figures(at)["kernels_model"]  # the 2:4 run's model: prefill and decode panels, speedup above 1
    assert {t["xaxis"] for t in model["data"]} == {"x", "x2"} and all(y > 1 for t in model["data"] for y in t["y"])
    # plain and compiled models of one backend are separate lines, told apart by the dash
    assert {t["name"] for t in model["data"]} == {"cusparselt, plain", "cusparselt, compiled"}
    at.get_by_key("kernels_view").set_value("Speedup").run()
    failed = table(at, "error")
    assert "compute capability 8.x" in failed["error"].iloc[0]
    at.multiselect(key="kernels_dtype").set_value(["float16"]).run()
    graph = figures(at)["kernels_speedup"]["data"]
    assert {t["name"] for t in graph} == {"bsr, float16", "cusparselt, float16"}
    at.selectbox(key="kernels_timing").set_value("eager").run()
    eager = figures(at)["kernels_speedup"]["data"]
    best = {t["name"]: max(v for v in t["y"] if v is not None) for t in graph}
    assert all(max(v for v in t["y"] if v is not None) < best[t["name"]] for t in eager)


def test_training_and_kernels_are_empty_on_the_default_suite(open_page, suite_path):
    for page, words in (("training", "No training runs yet"), ("kernels", "No kernel benchmark rows yet")):
        at = open_page(suite_path, page)
        no_exception(at)
        assert words in notices(at)
