"""Runs: every run in the store, filtered, sorted, its columns chosen and exported as CSV, and selected; what
differs between the selected specs; a run's tags and note edited; runs deleted."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st
from workbench_app import filters
from workbench_app.editing import delete_controls, notes_editor, show_outcome
from workbench_app.specs import spec_diff
from workbench_app.ui import (
    RUNS_PICK,
    number_columns,
    page_start,
    pick_runs,
    selection,
    set_selection,
    store_option,
    table_csv,
)

from workbench.records import shortfall_warning
from workbench.results import quality_metrics, task_scores

FIXED = ["run_id", "status", "kind", "model", "method", "pattern", "target_sparsity", "achieved_sparsity",
         "allocation"]
# labels the user gave (name, tags): beside the run id, not past the scroll (shown when any run has one)
LEADING = ["name", "tags"]
TRAILING = ["prune_seconds", "peak_memory_mb", "nm_valid", "speedup", "parameters", "wall_s", "created_at", "data",
            "host", "note", "error"]
NOT_COLUMNS = {"label"}  # the pickers' text, not a column to show
COLUMNS_KEY, CUSTOM_KEY = "runs_columns", "runs_columns_custom"


def filled(series: pd.Series) -> bool:
    """Whether any run has a value in this column (an empty tuple of tags is none)."""
    return bool(series.map(lambda v: bool(v) if isinstance(v, tuple) else pd.notna(v)).any())


reader, runs = page_start("Runs")
counts = runs["status"].value_counts()
st.caption(f"{len(runs):,} runs in `{reader.location}`: " + ", ".join(f"{n:,} {s}" for s, n in counts.items()))
show_outcome()

quality = quality_metrics(runs.columns)  # perplexity, embedding fidelity, accuracy, then task scores
columns = [c for c in [FIXED[0], *LEADING, *FIXED[1:], *quality, *TRAILING]
           if c in runs and (c in FIXED or filled(runs[c]))]
every_column = columns + [c for c in runs.columns if c not in columns and c not in NOT_COLUMNS]
# the default columns follow the store until the user chooses
if st.session_state.get(CUSTOM_KEY) and COLUMNS_KEY in st.session_state:
    st.session_state[COLUMNS_KEY] = [c for c in st.session_state[COLUMNS_KEY] if c in every_column]
else:
    st.session_state[COLUMNS_KEY] = columns
all_tags = sorted({tag for tags in runs["tags"] for tag in tags})


def _columns_chosen() -> None:
    st.session_state[CUSTOM_KEY] = True


with st.container(border=True):
    pick = st.columns(5)
    chosen = {column: pick[i].multiselect(column.capitalize(), sorted(runs[column].dropna().unique()),
                                          key=f"runs_filter_{column}", persist_state="session")
              for i, column in enumerate(["status", "kind", "model", "method"])}
    chosen_tags = pick[4].multiselect("Tags", all_tags, key="runs_filter_tags", persist_state="session",
                                      help="runs with any of these tags (the spec's or those added on a run's page)")
    query = st.text_input(
        "Query", key="runs_query", persist_state="session",
        placeholder="method=magnitude|random achieved_sparsity>=0.5 perplexity<300 hamlet",
        help=filters.__doc__.split("\n\n", 1)[1])
    shown_columns = st.multiselect("Columns", every_column, key=COLUMNS_KEY, on_change=_columns_chosen,
                                   persist_state="session",
                                   help="which columns the table shows, in this order (and the CSV holds)") or ["run_id"]
    order = st.columns([3, 1])
    sort_by = order[0].selectbox("Sort by", every_column,
                                 index=every_column.index("created_at") if "created_at" in every_column else 0,
                                 key="runs_sort", persist_state="session")
    descending = order[1].toggle("Descending", value=True, key="runs_descending", persist_state="session")

view = runs
for column, values in chosen.items():
    if values:
        view = view[view[column].isin(values)]
if chosen_tags:
    view = view[view["tags"].map(lambda tags: not set(tags).isdisjoint(chosen_tags)).astype(bool)]
try:
    view = filters.apply(view, query)
except filters.FilterError as err:
    st.error(f"**{err.problem}.** Fix: {err.fix}.")
view = view.sort_values(sort_by, ascending=not descending, na_position="last", kind="stable")
st.session_state["runs_view_ids"] = list(view["run_id"])


def _table_selected() -> None:
    """Rows ticked in the table become the shared selection (and the picker below shows them)."""
    rows = st.session_state["runs_table"]["selection"]["rows"]
    ids = st.session_state.get("runs_view_ids", [])
    picked = [ids[i] for i in rows if i < len(ids)]
    set_selection(picked)
    st.session_state[RUNS_PICK] = picked


table = view[shown_columns]
above = st.columns([4, 1], vertical_alignment="bottom")
above[0].caption(f"**{len(view):,}** of {len(runs):,} runs shown · tick rows to select them for the other pages")
above[1].download_button("Download CSV", table_csv(table), file_name="runs.csv", mime="text/csv", key="runs_csv",
                         icon=":material/download:", help="the table as shown: these rows and columns, in this order")
st.dataframe(table, key="runs_table", hide_index=True, on_select=_table_selected,
             selection_mode="multi-row", column_config=number_columns(table))

candidates = pd.concat([runs[runs["run_id"].isin(selection())], view]).drop_duplicates("run_id")
picked = pick_runs("Selected runs", candidates, key=RUNS_PICK, default=0)

if len(picked) == 1:
    record = runs.set_index("run_id").loc[picked[0]]
    spec = reader.raw_specs(picked)[picked[0]]
    st.subheader(record["label"])
    if record["status"] == "failed" and isinstance(record.get("error"), str):
        st.error(f"This run failed: {record['error']}")
    left, right = st.columns(2)
    left.markdown("**Spec** (canonical: every default filled in)")
    left.code(json.dumps(spec, indent=2, sort_keys=True), language="json")
    metrics = reader.metrics(picked)
    final = metrics[metrics["step"].isna()][["name", "value"]] if not metrics.empty else metrics
    right.markdown("**Final metrics**")
    right.dataframe(final, hide_index=True)
    final_values = dict(zip(final["name"], final["value"]))
    if warning := shortfall_warning(final_values):
        st.warning(f"This run's {warning}.", icon=":material/warning:")
    scores = task_scores(final_values)
    if not scores.empty:
        st.markdown("**Downstream task scores** (the spec's `evaluation.tasks`, scored by lm-evaluation-harness "
                    "on the pruned model; ± one standard error)")
        shown_scores = scores.rename(columns={"stderr": "± stderr"})
        st.dataframe(shown_scores, hide_index=True, key="runs_task_scores", column_config=number_columns(shown_scores))
    if record["kind"] == "prune" and record["status"] == "finished" and "perplexity" in final_values:
        st.markdown("**Export** this run's pruned language model as a Hugging Face folder (the spec is pruned "
                    "again and every mask checked against the stored one):")
        st.code(f"workbench export-model {picked[0]} OUT/{store_option(reader)}", language="bash")
    notes = reader.notes().set_index("run_id")
    known = sorted({tag for tags in notes["user_tags"] for tag in tags})  # every run's, to pick from
    if picked[0] in notes.index:
        mine = notes.loc[picked[0]]
        notes_editor(reader.location, picked[0], mine["spec_tags"], mine["user_tags"], mine["note"], known)
elif len(picked) > 1:
    labels = dict(zip(runs["run_id"], runs["label"]))
    specs = reader.raw_specs(picked)
    # runs in the order picked, in both tables below (the store returns them in its own order)
    diff = spec_diff({run_id: specs[run_id] for run_id in picked if run_id in specs}, labels)
    st.subheader(f"What differs between the {len(picked)} selected runs")
    if diff.empty:
        st.info("Their specs are identical: these are executions of the same job.")
    else:
        st.dataframe(diff, key="runs_diff")
    shown = [c for c in ["status", "achieved_sparsity", *quality, "prune_seconds", "wall_s"] if c in runs]
    side = runs.set_index("run_id").loc[picked, shown]
    side.index = [labels[r] for r in picked]
    st.dataframe(side.T.dropna(how="all").map(lambda v: "—" if pd.isna(v) else f"{v:.4g}" if isinstance(v, float)
                                              else str(v)), key="runs_side_by_side")
if picked:
    delete_controls(reader.location, picked, dict(zip(runs["run_id"], runs["status"])))
    links = st.columns(3)
    links[0].page_link("views/compare.py", label="Compare them", icon=":material/scatter_plot:")
    links[1].page_link("views/layers.py", label="Their layers", icon=":material/stacked_bar_chart:")
    links[2].page_link("views/masks.py", label="Their masks", icon=":material/grid_on:")
