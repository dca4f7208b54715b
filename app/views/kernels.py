"""Kernels: measured speedup over dense against tokens per shape, dtype and backend (alternated, and from
steady blocks where a run measured them); roofline fraction; model latency; the cases that failed, with
their error text."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st
from workbench_app.ui import choose, page_start, show_figure, view_switch

from workbench.figures import speedup_figure
from workbench.kernels.report.tables import model_setup, tuned_choice, with_steady_speedup

LATENCY_WORDS = ("latency", "tokens_per_s", "throughput")
TIMING_HELP = ("graph: CUDA-graph replay; eager: launches from Python; wall: CPU wall clock (a CPU benchmark); "
               "once: one-time costs timed a single time (converting weights to a sparse format, building a "
               "library, compiling), shown under *One-time costs*, not as speedups")
TIMING_PREFERENCE = ("graph", "wall", "eager")  # the default: the first of these the kernel cases measured


def measured_timing(rows: pd.DataFrame) -> str | None:
    """The timing mode the kernel cases were measured in (graph replay first), not ``once`` (one-time costs)."""
    phase = rows["phase"].fillna("kernel") if "phase" in rows else pd.Series("kernel", index=rows.index)
    cases = rows[phase.isin(["kernel", "prefill", "decode"]) & rows["speedup"].notna()]
    found = cases["timing"].dropna().astype(str).value_counts()
    preferred = [t for t in TIMING_PREFERENCE if t in found.index]
    return preferred[0] if preferred else (str(found.index[0]) if len(found) else None)


FACETS = 3  # shapes side by side per row


def filtered(frame: pd.DataFrame, column: str, label: str, key: str) -> pd.DataFrame:
    """A multiselect filter on one column (all values when none is picked)."""
    values = sorted(frame[column].dropna().astype(str).unique())
    if len(values) < 2:
        return frame
    chosen = st.multiselect(label, values, key=key, persist_state="session", placeholder="all")
    return frame[frame[column].astype(str).isin(chosen)] if chosen else frame


def against_tokens(frame: pd.DataFrame, y: str, title: str, key: str, baseline: float | None = None) -> None:
    """One panel per shape: ``y`` against tokens, a line per backend (colour), dtype (dash) and run."""
    figure = speedup_figure(frame, "tokens", y, facet="shape", title=title, columns=FACETS, baseline=baseline,
                            color="backend", dash="dtype", line_group="series",
                            hover=["case_id", "median_us", "timing", "choice", "rel_error", "run_id"],
                            panel_title=lambda shape: f"weight {shape} (out × in)")
    show_figure(figure, key=key)


reader, runs = page_start("Kernels")
kernels = reader.kernel_results()
if kernels.empty:
    st.info("No kernel benchmark rows yet. Kernel benchmark jobs (kind `bench`) time dense, 2:4 "
            "(cuSPARSELt), block-sparse and CSR matmuls over shapes, dtypes and token counts on a GPU and "
            "write one row per case here.", icon=":material/inbox:")
    st.stop()

labels = dict(zip(runs["run_id"], runs["label"]))
kernels = with_steady_speedup(kernels).assign(shape=kernels["out_features"].astype("Int64").astype(str).fillna("?") + "×"
                         + kernels["in_features"].astype("Int64").astype(str).fillna("?"),
                         label=kernels["run_id"].map(labels).fillna(kernels["run_id"]))
kernels["run"] = kernels["label"]
# what a searching backend chose for the case (CUTLASS tile, cuSPARSELt algorithm, the faster path)
kernels["choice"] = kernels["extra"].map(tuned_choice) if "extra" in kernels else None
# one line per (run, backend, dtype, timing, shape, phase): the unit a curve over tokens belongs to
series = kernels["run_id"].astype(str)
for column in ["backend", "dtype", "timing", "shape"] + (["phase"] if "phase" in kernels else []):
    series = series + "/" + kernels[column].astype(str).fillna("")
kernels["series"] = series

with st.container(border=True):
    columns = st.columns(4)
    with columns[0]:
        kernels = filtered(kernels, "dtype", "Dtype", "kernels_dtype")
    with columns[1]:
        kernels = filtered(kernels, "backend", "Backend", "kernels_backend")
    with columns[2]:
        kernels = filtered(kernels, "shape", "Shape (out × in)", "kernels_shape")
    timed = kernels[kernels["speedup"].notna() | kernels["median_us"].notna()]
    timings = sorted(timed["timing"].dropna().astype(str).unique())
    with columns[3]:
        # graph replay and eager launches of one case differ by design: compare within one timing mode
        timing = choose("Timing", timings, key="kernels_timing", default=measured_timing(timed),
                        persist_state="session", help=TIMING_HELP)
    kernels = filtered(kernels, "run", "Benchmark runs", "kernels_runs")

phase = kernels["phase"].fillna("kernel") if "phase" in kernels else pd.Series("kernel", index=kernels.index)
in_timing = kernels["timing"].astype(str) == str(timing)
cases = kernels[(phase == "kernel") & in_timing]
model_rows = kernels[phase.isin(["prefill", "decode"]) & in_timing]
measured = cases[cases["speedup"].notna()]
failed = kernels[kernels["error"].notna() | ~kernels["status"].fillna("ok").isin(["ok"])]
st.caption(f"{len(measured):,} measured kernel cases, {len(model_rows):,} model latency rows, {len(failed):,} "
           f"failed or unsupported, from {kernels['run_id'].nunique()} runs")


def kernel_view(y: str, title: str, key: str, baseline: float | None = None) -> None:
    if measured.empty:
        st.info("No measured kernel case among the rows shown.")
    elif measured[y].notna().any():
        against_tokens(measured[measured[y].notna()], y, title, key, baseline)
    else:
        st.info(f"These cases recorded no {y}.")


def model_latency() -> None:
    timed = model_rows[model_rows["speedup"].notna() | model_rows["median_us"].notna()]
    if not timed.empty:
        size = timed["batch"].where(timed["phase"] == "decode", timed["tokens"]) if "batch" in timed else timed["tokens"]
        timed = timed.assign(size=size, pruned_by=timed["source_run"].map(labels).fillna(timed["source_run"])
                             if "source_run" in timed else None,
                             setup=timed["extra"].map(model_setup) if "extra" in timed else "plain")
        y = "speedup" if timed["speedup"].notna().any() else "median_us"
        # dash: how both models were built (plain, fused, compiled): the same backend differs by setup
        figure = speedup_figure(timed, "size", y, facet="phase", title="end-to-end model: "
                                + ("speedup over dense" if y == "speedup" else "median µs"), columns=2,
                                color="backend", dash="setup", line_group="series",
                                hover=["model", "dtype", "pruned_by", "tokens_per_s", "median_us", "run_id"],
                                panel_title=lambda phase: f"phase {phase}")
        show_figure(figure, key="kernels_model")
        return
    bench_runs = list(dict.fromkeys(list(kernels["run_id"]) + list(runs.loc[runs["kind"] == "bench", "run_id"])))
    metrics = reader.metrics(bench_runs)
    latency = metrics[metrics["name"].str.contains("|".join(LATENCY_WORDS))] if not metrics.empty else metrics
    if latency.empty:
        st.info("No model latency recorded: a latency benchmark times a whole pruned model (prefill and "
                "decode) against its dense original.", icon=":material/timer:")
    else:
        latency = latency.assign(run=latency["run_id"].map(labels))
        show_figure(px.bar(latency, x="run", y="value", color="name", barmode="group", hover_name="run",
                           title="model latency and throughput per run", labels={"value": "value (see legend)"}),
                    key="kernels_latency")


VIEWS = ["Speedup", "Speedup, steady blocks", "Roofline fraction", "Model latency"]
view = view_switch(VIEWS, "kernels_view")
if view == "Speedup":
    kernel_view("speedup", "speedup over dense (same shape, dtype and tokens), timed in turns", "kernels_speedup", 1.0)
elif view == "Speedup, steady blocks":
    # each side settled and timed on its own: the clock a GPU at its power limit gives that workload alone
    kernel_view("speedup_steady", "speedup over dense, each timed in steady blocks of its own", "kernels_steady", 1.0)
elif view == "Roofline fraction":
    kernel_view("roofline_fraction", "fraction of the roofline floor achieved", "kernels_roofline")
else:
    model_latency()

if not failed.empty:
    st.subheader("Failed and unsupported cases")
    st.dataframe(failed[[c for c in ["run", "case_id", "phase", "backend", "dtype", "shape", "tokens", "status",
                                     "error"] if c in failed]], hide_index=True, key="kernels_failed")
for name, title in (("ceiling", "Machine ceilings measured in the same runs"), ("setup", "One-time costs")):
    rows = kernels[phase == name]
    if not rows.empty:
        with st.expander(title):
            st.dataframe(rows.drop(columns=["series"]).dropna(axis=1, how="all"), hide_index=True,
                         key=f"kernels_{name}")
with st.expander("Every row, with its methodology fields"):
    st.dataframe(kernels.drop(columns=["series"]), hide_index=True, key="kernels_all")
