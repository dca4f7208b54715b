"""Runs: every run in the store, filtered, sorted and selected; what differs between the selected specs."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st
from workbench_app import filters
from workbench_app.specs import spec_diff
from workbench_app.ui import number_columns, page_start, pick_runs, selection, set_selection, store_option

from workbench.results import quality_metrics, task_scores

FIXED = ["run_id", "status", "kind", "model", "method", "pattern", "target_sparsity", "achieved_sparsity",
         "allocation"]
LEADING = ["name"]  # a label the user gave: beside the run id, not past the scroll (shown when any run has one)
TRAILING = ["prune_seconds", "peak_memory_mb", "nm_valid", "speedup", "parameters", "wall_s", "created_at", "data",
            "host", "error"]

reader, runs = page_start("Runs")
counts = runs["status"].value_counts()
st.caption(f"{len(runs):,} runs in `{reader.location}`: " + ", ".join(f"{n:,} {s}" for s, n in counts.items()))

quality = quality_metrics(runs.columns)  # perplexity, embedding fidelity, accuracy, then task scores
columns = [c for c in [FIXED[0], *LEADING, *FIXED[1:], *quality, *TRAILING]
           if c in runs and (c in FIXED or runs[c].notna().any())]

with st.container(border=True):
    pick = st.columns(4)
    chosen = {column: pick[i].multiselect(column.capitalize(), sorted(runs[column].dropna().unique()),
                                          key=f"runs_filter_{column}", persist_state="session")
              for i, column in enumerate(["status", "kind", "model", "method"])}
    query = st.text_input(
        "Query", key="runs_query", persist_state="session",
        placeholder="method=magnitude|random achieved_sparsity>=0.5 perplexity<300 hamlet",
        help=filters.__doc__.split("\n\n", 1)[1])
    order = st.columns([3, 1])
    sort_by = order[0].selectbox("Sort by", columns, index=columns.index("created_at") if "created_at" in columns else 0,
                                 key="runs_sort", persist_state="session")
    descending = order[1].toggle("Descending", value=True, key="runs_descending", persist_state="session")

view = runs
for column, values in chosen.items():
    if values:
        view = view[view[column].isin(values)]
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
    st.session_state["runs_pick"] = picked


st.caption(f"**{len(view):,}** of {len(runs):,} runs shown · tick rows to select them for the other pages")
st.dataframe(view[columns], key="runs_table", hide_index=True, on_select=_table_selected,
             selection_mode="multi-row", column_config=number_columns(view[columns]))

candidates = pd.concat([runs[runs["run_id"].isin(selection())], view]).drop_duplicates("run_id")
picked = pick_runs("Selected runs", candidates, key="runs_pick", default=0)

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
    links = st.columns(3)
    links[0].page_link("views/compare.py", label="Compare them", icon=":material/scatter_plot:")
    links[1].page_link("views/layers.py", label="Their layers", icon=":material/stacked_bar_chart:")
    links[2].page_link("views/masks.py", label="Their masks", icon=":material/grid_on:")
