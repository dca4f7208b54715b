"""Kernels: measured speedup over dense against tokens per shape, dtype and backend; roofline fraction;
model latency; the cases that failed, with their error text."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from workbench_app.data import Reader
from workbench_app.ui import runs_or_stop, show_figure

LATENCY_WORDS = ("latency", "tokens_per_s", "throughput")
FACETS = 3  # shapes side by side per row


def filtered(frame: pd.DataFrame, column: str, label: str, key: str) -> pd.DataFrame:
    """A multiselect filter on one column (all values when none is picked)."""
    values = sorted(frame[column].dropna().astype(str).unique())
    if len(values) < 2:
        return frame
    chosen = st.multiselect(label, values, key=key, persist_state="session", placeholder="all")
    return frame[frame[column].astype(str).isin(chosen)] if chosen else frame


def against_tokens(frame: pd.DataFrame, y: str, title: str, key: str, baseline: float | None = None) -> None:
    shapes = sorted(frame["shape"].unique())
    figure = px.line(frame.sort_values("tokens"), x="tokens", y=y, color="backend", line_dash="dtype",
                     line_group="series", facet_col="shape", facet_col_wrap=FACETS, markers=True, log_x=True,
                     hover_name="run", hover_data={"case_id": True, "median_us": ":.2f", "timing": True,
                                                   "series": False, "shape": False},
                     category_orders={"shape": shapes}, title=title,
                     height=320 * ((len(shapes) + FACETS - 1) // FACETS) + 80)
    if baseline is not None:
        figure.add_hline(y=baseline, line=dict(color="grey", dash="dash"), annotation_text="dense")
    show_figure(figure, key=key)


st.title("Kernels")
reader = Reader()
runs = runs_or_stop(reader)
kernels = reader.kernel_results()
if kernels.empty:
    st.info("No kernel benchmark rows yet. Kernel benchmark jobs (kind `bench`) time dense, 2:4 "
            "(cuSPARSELt), block-sparse and CSR matmuls over shapes, dtypes and token counts on a GPU and "
            "write one row per case here.", icon="📭")
    st.stop()

labels = dict(zip(runs["run_id"], runs["label"]))
kernels = kernels.assign(shape=kernels["out_features"].astype("Int64").astype(str) + "×"
                         + kernels["in_features"].astype("Int64").astype(str),
                         run=kernels["run_id"].map(labels).fillna(kernels["run_id"]))
kernels["series"] = kernels["run_id"] + kernels["backend"].astype(str) + kernels["dtype"].astype(str) \
    + kernels["timing"].astype(str) + kernels["shape"]

with st.container(border=True):
    columns = st.columns(4)
    with columns[0]:
        kernels = filtered(kernels, "dtype", "Dtype", "kernels_dtype")
    with columns[1]:
        kernels = filtered(kernels, "backend", "Backend", "kernels_backend")
    with columns[2]:
        kernels = filtered(kernels, "shape", "Shape (out × in)", "kernels_shape")
    with columns[3]:
        kernels = filtered(kernels, "timing", "Timing", "kernels_timing")
    kernels = filtered(kernels, "run", "Benchmark runs", "kernels_runs")

measured = kernels[kernels["speedup"].notna()]
failed = kernels[kernels["error"].notna() | ~kernels["status"].fillna("ok").isin(["ok", "finished", "measured"])]
st.caption(f"{len(measured):,} measured cases, {len(failed):,} failed, from {kernels['run_id'].nunique()} runs")

if measured.empty:
    st.info("No measured speedup among the cases shown.")
else:
    against_tokens(measured, "speedup", "speedup over dense (same shape, dtype and tokens)", "kernels_speedup", 1.0)
    if measured["roofline_fraction"].notna().any():
        against_tokens(measured[measured["roofline_fraction"].notna()], "roofline_fraction",
                       "fraction of the roofline floor achieved", "kernels_roofline")
    else:
        st.info("These cases recorded no roofline fraction.")

st.subheader("Model latency")
bench_runs = list(dict.fromkeys(kernels["run_id"]).keys()) + list(runs.loc[runs["kind"] == "bench", "run_id"])
metrics = reader.metrics(list(dict.fromkeys(bench_runs)))
latency = metrics[metrics["name"].str.contains("|".join(LATENCY_WORDS))] if not metrics.empty else metrics
if latency.empty:
    st.info("No model latency recorded: a benchmark that times a whole pruned model logs e.g. "
            "`model_latency_ms`.", icon="⏱️")
else:
    latency = latency.assign(run=latency["run_id"].map(labels))
    show_figure(px.bar(latency, x="run", y="value", color="name", barmode="group", hover_name="run",
                       title="model latency and throughput per run"), key="kernels_latency")

if not failed.empty:
    st.subheader("Failed cases")
    st.dataframe(failed[["run", "case_id", "backend", "dtype", "shape", "tokens", "status", "error"]],
                 hide_index=True, key="kernels_failed")
with st.expander("Every case, with its methodology fields"):
    st.dataframe(kernels.drop(columns=["series"]), hide_index=True, key="kernels_all")
