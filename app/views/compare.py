"""Compare: quality against sparsity (and against measured speed) per method, with the Pareto front drawn."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st
from workbench_app.specs import numeric_fields
from workbench_app.ui import choose, page_start, selection, show_figure, view_switch

from workbench.figures import quality_figure
from workbench.results import QUALITY_METRICS

SUMMARY_FIELDS = ["method", "model", "pattern", "allocation", "target_sparsity", "data", "kind"]
MAX_MATRIX_POINTS = 1000  # a scatter matrix of more points is a blur; a seeded sample keeps the picture


def measured_speedups(runs: pd.DataFrame, rows: pd.DataFrame) -> list[float | None]:
    """Each run's speedup over dense: the median of the latency rows timed with its own masks
    (``source_run``), else of the kernel cases at its pattern and sparsity; 1 for the dense run itself."""
    own = rows.groupby("source_run")["speedup"].median().to_dict() if "source_run" in rows else {}
    by_case = rows.groupby([rows["pattern"].astype(str), rows["sparsity"].round(3)])["speedup"].median().to_dict()
    out = []
    for run_id, method, pattern, target in zip(runs["run_id"], runs["method"], runs["pattern"],
                                               runs["target_sparsity"].fillna(0.0)):
        if method == "dense":
            out.append(1.0)
        else:
            out.append(own.get(run_id, by_case.get((str(pattern), round(float(target), 3)))))
    return out


reader, runs = page_start("Compare")
finished = runs[runs["status"] == "finished"]
metrics = [m for m in QUALITY_METRICS if m in finished and finished[m].notna().any()]
if not metrics:
    st.info("No finished run has a quality metric (perplexity, embedding fidelity or accuracy) yet. "
            "Run `workbench demo`, or start a prune job on the **Launch** page.", icon=":material/inbox:")
    st.stop()

specs = reader.specs()
spec_only = specs[[c for c in specs.columns if c not in finished.columns and c.split(".")[0] not in finished.columns]]
table = finished.join(spec_only, on="run_id")
fields = SUMMARY_FIELDS + [c for c in spec_only.columns if table[c].notna().any()]

controls = st.columns(5)
with controls[0]:
    metric = choose("Quality", metrics, key="compare_metric", persist_state="session")
with controls[1]:
    x_axis = choose("Sparsity", ["achieved_sparsity", "target_sparsity"], key="compare_x", persist_state="session",
                    help="achieved: zeros measured on the pruned weights; target: what the spec asked for")
with controls[2]:
    color = choose("Colour by", fields, key="compare_color", default="method", persist_state="session")
with controls[3]:
    symbol = choose("Symbol by", ["(none)"] + fields, key="compare_symbol", default="pattern", persist_state="session")
with controls[4]:
    fronts = choose("Pareto front", ["all runs", "each colour group", "off"], key="compare_fronts",
                    persist_state="session")
symbol = None if symbol == "(none)" else symbol
only_selected = st.toggle("Only the selected runs", key="compare_only_selected", persist_state="session",
                          disabled=not selection(), help="select runs on the Runs page")
if only_selected and selection():
    table = table[table["run_id"].isin(selection())]
data = table[table[metric].notna() & table[x_axis].notna()]
log_y = st.toggle("Log scale", value=metric == "perplexity", key=f"compare_log_{metric}")
st.caption(f"{len(data):,} finished runs with {metric}; {int((runs['status'] != 'finished').sum()):,} "
           "unfinished or failed runs are left out.")
VIEWS = ["Against sparsity", "Against measured speed", "Scatter matrix of the spec's numeric fields"]
view = view_switch(VIEWS, "compare_view")


def against_sparsity() -> None:
    show_figure(quality_figure(data, x_axis, metric, color=color, symbol=symbol, fronts=fronts, log_y=log_y,
                               x_title=x_axis.replace("_", " "), height=520), key="compare_quality")


def against_speed() -> None:
    """Quality against the speedup measured for each run's model or for kernels of its pattern."""
    kernels = reader.kernel_results()
    if "speedup" in kernels and not kernels.empty:
        kernels = kernels[kernels["speedup"].notna()]
        phase = kernels["phase"].fillna("kernel") if "phase" in kernels else pd.Series("kernel", index=kernels.index)
        by_run = kernels[phase.isin(["prefill", "decode"]) & kernels["source_run"].isin(set(data["run_id"]))] \
            if "source_run" in kernels else kernels.iloc[0:0]
        cases = kernels[phase == "kernel"]
    else:
        by_run = cases = kernels.iloc[0:0]
    sources = {}
    if not by_run.empty:
        sources["the model pruned by each run (latency benchmark)"] = by_run
    if not cases.empty:
        sources["kernel cases at each run's pattern and sparsity"] = cases
    if "speedup" in data and data["speedup"].notna().any():
        sources["each run's own speedup metric"] = None
    speed = None
    if sources:
        source = choose("Speed from", list(sources), key="compare_speed_source", persist_state="session")
        rows = sources[source]
        if rows is not None:
            pick = st.columns(5)
            with pick[0]:
                backend = choose("Backend", sorted(rows["backend"].dropna().unique()), key="compare_backend",
                                 persist_state="session")
            with pick[1]:
                dtype = choose("Dtype", sorted(rows["dtype"].dropna().unique()), key="compare_dtype",
                               persist_state="session")
            with pick[4]:
                timing = choose("Timing", sorted(rows["timing"].dropna().astype(str).unique()), key="compare_timing",
                                default="graph", persist_state="session")
            rows = rows[(rows["backend"] == backend) & (rows["dtype"] == dtype) & (rows["timing"].astype(str) == timing)]
            if source.startswith("kernel cases"):
                size_column = "tokens"
            else:
                with pick[2]:
                    chosen_phase = choose("Phase", sorted(rows["phase"].dropna().unique()), key="compare_phase",
                                          persist_state="session")
                rows = rows[rows["phase"] == chosen_phase]
                size_column = "batch" if chosen_phase == "decode" else "tokens"
            with pick[3]:
                size = choose(size_column.capitalize(), sorted(int(t) for t in rows[size_column].dropna().unique()),
                              key=f"compare_{size_column}", persist_state="session")
            rows = rows[rows[size_column] == size]
            speed = data.assign(speedup=measured_speedups(data, rows))
            st.caption(f"Median measured speedup over dense on {backend}, {dtype}, {timing}, {size_column} = {size} "
                       "(the dense run is the baseline: 1).")
        else:
            speed = data
    if speed is None or speed["speedup"].notna().sum() == 0:
        st.info("No latency measured for these runs yet: kernel benchmark rows (job kind `bench`), a latency "
                "benchmark of a pruned run's model, or runs that record a `speedup` metric fill this chart.",
                icon=":material/timer:")
    else:
        show_figure(quality_figure(speed[speed["speedup"].notna()], "speedup", metric, color=color, symbol=symbol,
                                   fronts=fronts, log_y=log_y, x_title="speedup over dense", height=520),
                    key="compare_speed")


def scatter_matrix() -> None:
    """Every numeric spec field that varies, against each other and the quality metric."""
    dimensions = [f for f in numeric_fields(table[[c for c in table.columns if c in fields]]) if f != "kind"]
    dimensions = list(dict.fromkeys(dimensions + [x_axis, metric]))
    if len(dimensions) < 3:
        st.info("The runs differ in fewer than two numeric spec fields; a sweep over e.g. `sparsity` and "
                "`calibration.samples` fills this matrix.", icon=":material/numbers:")
    else:
        sample = data.sample(MAX_MATRIX_POINTS, random_state=0) if len(data) > MAX_MATRIX_POINTS else data
        if len(sample) < len(data):
            st.caption(f"A seeded sample of {len(sample):,} of {len(data):,} runs.")
        matrix = px.scatter_matrix(sample, dimensions=dimensions, color=sample[color].astype(str), hover_name="label",
                                   labels={"color": color}, height=160 * len(dimensions) + 120)
        matrix.update_traces(diagonal_visible=False, marker=dict(size=5))
        show_figure(matrix, key="compare_matrix")


{VIEWS[0]: against_sparsity, VIEWS[1]: against_speed, VIEWS[2]: scatter_matrix}[view]()
