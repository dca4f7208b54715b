"""Downstream task scores in the app: Compare offers each task's accuracy as the quality (its Pareto front
computed higher-is-better), and a run's page lists its scores with their standard errors and the command
that exports its model."""

from __future__ import annotations

import pytest

from tests.app.helpers import figures, no_exception, table
from tests.app.stores import TASK_ACC
from workbench.figures import axis_titles

SMOL = "smollm2-135m · shakespeare"


def front_runs(figure: dict) -> set[str]:
    (front,) = [t for t in figure["data"] if t["name"] == "Pareto front"]
    return set(front["customdata"])


def test_compare_offers_the_task_scores_of_the_chosen_model(open_page, tasks):
    path, _ = tasks
    at = open_page(path, "compare")
    no_exception(at)
    assert at.multiselect(key="compare_models").value == [SMOL]
    options = at.selectbox(key="compare_metric").options
    assert options == ["perplexity", TASK_ACC, "shakespeare-nextline/acc", "shakespeare-nextline/acc_norm"]
    at.multiselect(key="compare_models").set_value(["tiny-llama · shakespeare"]).run()
    assert at.selectbox(key="compare_metric").options == ["perplexity"]  # no task was scored on this model


def test_the_front_under_a_task_accuracy_keeps_the_most_accurate_runs(open_page, tasks):
    path, ids = tasks
    at = open_page(path, "compare")
    perplexity = figures(at)["compare_quality"]
    assert front_runs(perplexity) == {ids["dense"], ids["sparsegpt50"], ids["wanda70"]}
    at.selectbox(key="compare_metric").set_value(TASK_ACC).run()
    no_exception(at)
    accuracy = figures(at)["compare_quality"]
    assert axis_titles(accuracy)["yaxis"] == f"{TASK_ACC} (higher is better)"
    assert accuracy["layout"]["yaxis"].get("type") != "log"
    assert front_runs(accuracy) == {ids["dense"], ids["wanda50"], ids["magnitude70"]}
    (baseline,) = [t for t in accuracy["data"] if t["name"] == "dense baseline"]
    assert baseline["y"] == [0.5, 0.5]
    at.toggle(key="compare_relative").set_value(True).run()
    relative = figures(at)["compare_quality"]
    assert axis_titles(relative)["yaxis"] == f"{TASK_ACC} / dense (higher is better)"
    assert front_runs(relative) == {ids["dense"], ids["wanda50"], ids["magnitude70"]}


def test_the_runs_table_has_a_column_per_task_score(open_page, tasks):
    path, ids = tasks
    at = open_page(path, "runs")
    no_exception(at)
    runs = table(at, TASK_ACC)
    assert "shakespeare-nextline/acc_norm" in runs.columns
    assert not any(column.endswith(("_stderr", "/documents")) for column in runs.columns)
    assert runs.set_index("run_id").loc[ids["wanda50"], TASK_ACC] == pytest.approx(0.42)


def test_a_run_page_lists_its_task_scores_and_the_export_command(open_page, tasks):
    path, ids = tasks
    at = open_page(path, "runs", selection=[ids["wanda50"]])
    no_exception(at)
    scores = table(at, "± stderr")
    assert list(zip(scores["task"], scores["metric"])) == [
        ("shakespeare-lastword", "acc"), ("shakespeare-nextline", "acc"), ("shakespeare-nextline", "acc_norm")]
    assert scores["value"].tolist() == pytest.approx([0.42, 0.52, 0.62])
    assert scores["± stderr"].tolist() == pytest.approx([0.05, 0.04, 0.04])
    assert scores["documents"].tolist() == [40, 50, 50]
    commands = [block.value for block in at.code if "export-model" in block.value]
    assert len(commands) == 1 and commands[0].startswith(f"workbench export-model {ids['wanda50']} OUT/ --store ")
    assert str(path) in commands[0]


@pytest.mark.parametrize("run", ["encoder", "tiny-dense"])
def test_runs_without_task_scores_show_none_and_only_language_models_export(open_page, tasks, run):
    path, ids = tasks
    at = open_page(path, "runs", selection=[ids[run]])
    no_exception(at)
    assert not any("± stderr" in frame.value.columns for frame in at.dataframe)
    exports = [block.value for block in at.code if "export-model" in block.value]
    assert len(exports) == (0 if run == "encoder" else 1)  # an encoder has no perplexity: not a language model
