"""What users of run-comparison tools expect of the app: choosing the runs table's columns and exporting it as
shown, selecting runs on the Compare chart and opening them on the Runs page, editing a run's tags and note,
and deleting runs."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from streamlit.delta_generator import DeltaGenerator
from streamlit.testing.v1.element_tree import ElementTree
from workbench_app.ui import selected_runs

from tests.app.helpers import figures, no_exception
from tests.app.stores import notes_store
from workbench import queries
from workbench.store import Store


@pytest.fixture
def notes(tmp_path) -> tuple[Store, dict]:
    return notes_store(tmp_path / "workbench.duckdb")


@pytest.fixture
def downloads(monkeypatch) -> dict[str, str]:
    """What each download button of a page run offers, by key."""
    offered: dict[str, str] = {}
    original = DeltaGenerator.download_button

    def recording(self, label, data, *args, **kwargs):
        offered[kwargs.get("key")] = data
        return original(self, label, data, *args, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "download_button", recording)
    return offered


def test_the_table_shows_the_chosen_columns_and_its_csv_holds_what_is_shown(open_page, notes, downloads):
    store, ids = notes
    at = open_page(store.path, "runs")
    no_exception(at)
    default = list(at.dataframe[0].value.columns)
    assert default[:3] == ["run_id", "tags", "status"] and "note" not in default  # nobody wrote a note yet
    at.multiselect(key="runs_columns").set_value(["method", "perplexity", "run_id", "tags"]).run()
    at.text_input(key="runs_query").input("perplexity<50").run()
    no_exception(at)
    shown = at.dataframe[0].value
    assert list(shown.columns) == ["method", "perplexity", "run_id", "tags"]
    assert sorted(shown["run_id"]) == sorted([ids["dense"], *ids["wanda"]])
    exported = pd.read_csv(io.StringIO(downloads["runs_csv"]), keep_default_na=False)
    assert list(exported.columns) == list(shown.columns)
    assert list(exported["run_id"]) == list(shown["run_id"]) and list(exported["perplexity"]) == list(shown["perplexity"])
    assert exported.set_index("run_id").loc[ids["dense"], "tags"] == "baseline"
    at.switch_page("views/compare.py").run()
    at.switch_page("views/runs.py").run()  # the choice outlives a page switch
    assert list(at.dataframe[0].value.columns) == ["method", "perplexity", "run_id", "tags"]


def test_a_runs_tags_and_note_edited_on_its_page_show_in_the_table_and_filter_it(open_page, notes):
    store, ids = notes
    run_id = ids["magnitude"]
    at = open_page(store.path, "runs", runs_pick=[run_id])
    at.multiselect(key=f"runs_tags_{run_id}").set_value(["needs review", "keep"])
    at.text_area(key=f"runs_note_{run_id}").input("outlier layers: try OWL")
    at.button(key="runs_notes_save").click().run()
    no_exception(at)
    assert f"Saved the tags and note of {run_id}" in at.success[0].value
    record = queries.run(store, run_id)
    assert (record["user_tags"], record["note"]) == (["needs review", "keep"], "outlier layers: try OWL")
    table = at.dataframe[0].value.set_index("run_id")
    assert list(table.loc[run_id, "tags"]) == ["needs review", "keep"]
    assert table.loc[run_id, "note"] == "outlier layers: try OWL"  # the note column appears once a run has one
    assert at.multiselect(key="runs_filter_tags").options == ["baseline", "keep", "needs review"]
    at.multiselect(key="runs_filter_tags").set_value(["keep", "baseline"]).run()
    assert sorted(at.dataframe[0].value["run_id"]) == sorted([run_id, ids["dense"]])
    at.multiselect(key="runs_filter_tags").set_value([]).run()
    at.text_input(key="runs_query").input("tags!=keep").run()
    assert sorted(at.dataframe[0].value["run_id"]) == sorted(set(ids["wanda"]) | {ids["dense"], ids["running"]})
    at.text_input(key="runs_query").input('tags="needs review" OWL').run()  # a tag, and a word of the note
    assert list(at.dataframe[0].value["run_id"]) == [run_id]
    dense = ids["dense"]
    at.multiselect(key="runs_pick").set_value([dense]).run()
    assert any("from its spec, unchanged here: baseline" in m.value for m in at.markdown)
    assert at.multiselect(key=f"runs_tags_{dense}").value == []  # the spec's tag is not the user's to remove


def test_deleting_runs_asks_first_and_a_running_run_cannot_be_deleted(open_page, notes):
    store, ids = notes
    at = open_page(store.path, "runs", runs_pick=[ids["running"]])
    assert at.button(key="runs_delete").disabled
    at.multiselect(key="runs_pick").set_value(ids["wanda"]).run()
    at.button(key="runs_delete").click().run()
    assert "Delete the 2 selected runs" in at.warning[0].value and len(queries.runs(store)) == 5
    at.button(key="runs_delete_cancel").click().run()
    assert not at.warning and len(queries.runs(store)) == 5
    at.button(key="runs_delete").click().run()
    at.button(key="runs_delete_confirm").click().run()
    no_exception(at)
    assert "Deleted 2 runs" in at.success[0].value
    left = set(queries.runs(store)["run_id"])
    assert left == {ids["dense"], ids["magnitude"], ids["running"]}
    assert set(at.dataframe[0].value["run_id"]) == left and at.multiselect(key="runs_pick").value == []


def _select_on_chart(monkeypatch, key: str, points: list[dict]) -> None:
    """Every later run of the page finds ``points`` selected on chart ``key`` (what a click, box or lasso in the
    browser sends; AppTest has no way to click a chart)."""
    original = ElementTree.get_widget_states

    def with_selection(tree):
        states = original(tree)
        for chart in tree.get("plotly_chart"):
            if chart.proto.id.endswith(f"-{key}"):
                state = states.widgets.add()
                state.id = chart.proto.id
                state.string_value = json.dumps({"selection": {"points": points, "point_indices": [
                    p["point_index"] for p in points], "box": [], "lasso": []}})
        return states

    monkeypatch.setattr(ElementTree, "get_widget_states", with_selection)


def test_points_selected_on_the_compare_chart_open_as_the_selection_on_runs(open_page, notes, monkeypatch):
    store, ids = notes
    at = open_page(store.path, "compare")
    no_exception(at)
    chart = figures(at)["compare_quality"]
    carried = {frozenset(c[0].split()) for trace in chart["data"] if trace["name"] not in ("Pareto front", "dense baseline")
               for c in trace["customdata"]}
    # the two Wanda seeds are one point (their mean), which carries both runs
    assert carried == {frozenset([ids["dense"]]), frozenset(ids["wanda"]), frozenset([ids["magnitude"]])}
    (wanda,) = [i for i, trace in enumerate(chart["data"]) if trace["name"].startswith("wanda")]
    mean_point = chart["data"][wanda]["customdata"][0]
    points = [{"curve_number": wanda, "point_number": 0, "point_index": 0, "x": 0.5, "y": 25.0, "customdata": mean_point},
              {"curve_number": 9, "point_number": 0, "point_index": 0, "x": 0.5, "y": 60.0,
               "customdata": ids["magnitude"]}]  # a point of the front: its run id alone
    _select_on_chart(monkeypatch, "compare_quality", points)
    at.run()
    assert "3 runs selected" in " ".join(c.value for c in at.caption)
    at.button(key="compare_open_runs").click().run()
    no_exception(at)
    assert at.multiselect(key="runs_pick").value == [*mean_point[0].split(), ids["magnitude"]]
    assert "What differs between the 3 selected runs" in [h.value for h in at.subheader]


def test_a_selection_names_the_runs_its_points_carry():
    event = {"selection": {"points": [
        {"customdata": "run-a"},  # a point of the Pareto front: its run id
        {"customdata": ["run-b run-c"]},  # a mean over seeds: the ids of its runs
        {"customdata": ["run-a", "hover value"]},  # a run id first, then hover values
        {"x": 0.5, "y": 20.0},  # the dense baseline carries none
    ], "point_indices": [0, 1, 2, 3], "box": [], "lasso": []}}
    assert selected_runs(event) == ["run-a", "run-b", "run-c"]
    assert selected_runs({"selection": {"points": []}}) == [] and selected_runs(None) == []
