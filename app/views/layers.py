"""Layers: layer-wise allocation of the selected runs side by side, reconstruction error, OWL outlier ratios."""

from __future__ import annotations

import json

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from workbench_app.figures import short_names
from workbench_app.ui import choose, page_start, pick_runs, show_figure, view_switch

from workbench.figures import COLORS

HEATMAP_VALUES = {"achieved sparsity": "achieved_sparsity", "target sparsity": "target_sparsity",
                  "achieved − target": "gap", "reconstruction error": "recon_error"}


def extras(layers: pd.DataFrame) -> pd.DataFrame:
    """The numeric values of each layer row's ``extra`` JSON as columns (OWL writes its outlier ratio there)."""
    records = [{k: v for k, v in json.loads(text or "{}").items() if isinstance(v, (int, float))}
               for text in layers["extra"]]
    return pd.DataFrame.from_records(records, index=layers.index)


reader, runs = page_start("Layers")
candidates = runs[(runs["status"] == "finished") & (runs["kind"] != "bench")]  # benchmarks have no layers
picked = pick_runs("Runs", candidates, key="layers_runs", default=4,
                   help="runs of one model line up layer by layer; the selection carries over to other pages")
if not picked:
    st.info("Select one or more finished runs above.")
    st.stop()
layers = reader.layers(picked)
if layers.empty:
    st.info("The selected runs recorded no per-layer rows (kernel benchmarks have none). Pick prune or "
            "training runs.", icon=":material/inbox:")
    st.stop()

labels = dict(zip(runs["run_id"], runs["label"]))
layers = layers.assign(run=layers["run_id"].map(labels), name=short_names(layers["layer"]),
                       gap=layers["achieved_sparsity"] - layers["target_sparsity"])
order = list(dict.fromkeys(layers.sort_values(["block", "layer"], na_position="last")["name"]))
run_order = [labels[r] for r in picked if r in set(layers["run_id"])]

summary = layers.groupby("run", sort=False).agg(layers=("layer", "count"), weights=("numel", "sum"),
                                               target_mean=("target_sparsity", "mean"),
                                               target_min=("target_sparsity", "min"),
                                               target_max=("target_sparsity", "max"),
                                               achieved_mean=("achieved_sparsity", "mean"))
st.dataframe(summary, key="layers_summary")

VIEWS = ["Allocation", "Reconstruction error and OWL outlier ratios"]
view = view_switch(VIEWS, "layers_view")


def allocation() -> None:
    """Target and achieved sparsity per layer, side by side and as a layers x runs heatmap."""
    st.subheader("Target and achieved sparsity per layer")
    bars = px.bar(layers, x="name", y="achieved_sparsity", color="run", barmode="group", hover_name="run",
                  hover_data={"layer": True, "shape": True, "target_sparsity": ":.4f", "achieved_sparsity": ":.4f",
                              "run": False, "name": False},
                  category_orders={"name": order, "run": run_order}, labels={"name": "layer", "run": "run"},
                  color_discrete_sequence=COLORS)
    targets = layers.dropna(subset=["target_sparsity"])
    if not targets.empty:
        bars.add_trace(go.Scatter(x=targets["name"], y=targets["target_sparsity"], mode="markers", name="target",
                                  marker=dict(symbol="line-ew-open", size=18, color="black", line=dict(width=2)),
                                  text=targets["run"], hovertemplate="<b>%{text}</b><br>%{x}: target %{y:.4f}<extra></extra>"))
    bars.update_layout(height=460, yaxis_title="sparsity (bars: achieved, dashes: target)")
    show_figure(bars, key="layers_bars")

    st.subheader("Layers × runs")
    shown = choose("Heatmap of", [k for k, v in HEATMAP_VALUES.items() if layers[v].notna().any()],
                   key="layers_heatmap_value", persist_state="session")
    value = HEATMAP_VALUES[shown]
    grid = layers.pivot_table(index="name", columns="run", values=value, aggfunc="first").reindex(
        index=order, columns=run_order)
    heatmap = px.imshow(grid, aspect="auto", color_continuous_scale="RdBu_r" if value == "gap" else "Viridis",
                        color_continuous_midpoint=0 if value == "gap" else None,
                        labels={"color": shown, "x": "run", "y": "layer"},
                        height=max(300, 18 * len(order) + 140))
    heatmap.update_traces(hovertemplate="<b>%{x}</b><br>%{y}<br>" + shown + " = %{z:.4f}<extra></extra>")
    heatmap.update_xaxes(side="top")
    show_figure(heatmap, key="layers_heatmap")


def errors_and_outliers() -> None:
    st.subheader("Reconstruction error per layer")
    errors = layers.dropna(subset=["recon_error"])
    if errors.empty:
        st.info("None of these runs recorded a reconstruction error (‖WX − W′X‖ on calibration inputs); "
                "calibration-based methods such as SparseGPT record it.", icon=":material/straighten:")
    else:
        recon = px.line(errors, x="name", y="recon_error", color="run", markers=True, log_y=True, hover_name="run",
                        category_orders={"name": order, "run": run_order}, labels={"name": "layer"})
        show_figure(recon, key="layers_recon")

    st.subheader("OWL outlier ratios")
    extra = extras(layers)
    ratio_columns = [c for c in extra.columns if "outlier" in c]
    if not ratio_columns:
        st.info("No outlier ratios recorded: runs with `allocation: owl` store each block's outlier ratio "
                "(the share of Wanda scores above M × their mean) per layer.", icon=":material/explore:")
    else:
        owl = layers.join(extra[ratio_columns]).dropna(subset=[ratio_columns[0]])
        per_block = owl.groupby(["run", "block"], as_index=False).agg(
            outlier_ratio=(ratio_columns[0], "mean"), target_sparsity=("target_sparsity", "mean"))
        left, right = st.columns(2)
        with left:
            show_figure(px.line(per_block, x="block", y="outlier_ratio", color="run", markers=True, hover_name="run",
                                title="outlier ratio per block"), key="layers_owl_ratio")
        with right:
            show_figure(px.line(per_block, x="block", y="target_sparsity", color="run", markers=True, hover_name="run",
                                title="sparsity OWL gave each block"), key="layers_owl_target")


if view == VIEWS[0]:
    allocation()
else:
    errors_and_outliers()
