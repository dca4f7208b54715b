"""Layers: layer-wise allocation of the selected runs side by side (per block, per layer type, or one block's
layers), what structured runs kept per block, reconstruction error, OWL outlier ratios."""

from __future__ import annotations

import json

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from workbench_app.figures import short_names
from workbench_app.layerview import (
    BY_BLOCK,
    EACH_LAYER,
    GROUPINGS,
    MAX_LAYERS,
    blocks_of,
    default_grouping,
    group_layers,
    structure_rows,
)
from workbench_app.ui import choose, page_start, pick_runs, show_figure, view_switch

from workbench.figures import COLORS, LOG_TICKFORMAT, facet_figure

HEATMAP_VALUES = {"achieved sparsity": "achieved_sparsity", "target sparsity": "target_sparsity",
                  "achieved − target": "gap", "reconstruction error": "recon_error"}
RUNS_BY_DEFAULT = 4
GROUP_TITLES = {BY_BLOCK: "block", "per layer type": "layer type", EACH_LAYER: "layer"}


def extras(layers: pd.DataFrame) -> pd.DataFrame:
    """The numeric values of each layer row's ``extra`` JSON as columns (OWL writes its outlier ratio there)."""
    records = [{k: v for k, v in json.loads(text or "{}").items() if isinstance(v, (int, float))}
               for text in layers["extra"]]
    return pd.DataFrame.from_records(records, index=layers.index)


reader, runs = page_start("Layers")
candidates = runs[(runs["status"] == "finished") & (runs["kind"] != "bench")]  # benchmarks have no layers
# with nothing selected: the newest runs of the model run last (layers line up by name within one model)
newest_model = candidates["model"].iloc[0] if not candidates.empty else None
same_model = candidates[candidates["model"] == newest_model] if newest_model is not None else candidates
picked = pick_runs("Runs", candidates, key="layers_runs", default_ids=list(same_model["run_id"][:RUNS_BY_DEFAULT]),
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
models = sorted(runs.loc[runs["run_id"].isin(picked), "model"].dropna().astype(str).unique())
if len(models) > 1:
    st.warning(f"These runs prune {len(models)} models ({', '.join(models)}): their layers line up by name only.",
               icon=":material/compare_arrows:")
layers = layers.assign(run=layers["run_id"].map(labels), name=short_names(layers["layer"]),
                       gap=layers["achieved_sparsity"] - layers["target_sparsity"])
run_order = [labels[r] for r in picked if r in set(layers["run_id"])]

summary = layers.groupby("run", sort=False).agg(layers=("layer", "count"), weights=("numel", "sum"),
                                               target_mean=("target_sparsity", "mean"),
                                               target_min=("target_sparsity", "min"),
                                               target_max=("target_sparsity", "max"),
                                               achieved_mean=("achieved_sparsity", "mean"))
st.dataframe(summary, key="layers_summary")

count = layers["layer"].nunique()
place = st.columns([1, 1, 2])
with place[0]:
    # remembered apart for small and large models: a choice made on a 2-layer CNN is no default for 210 layers
    grouping = choose("Group layers", GROUPINGS, key=f"layers_grouping_{'many' if count > MAX_LAYERS else 'few'}",
                      default=default_grouping(layers), persist_state="session",
                      help=f"{count:,} layers: per transformer block (weighted by each layer's weights), per layer "
                           "type across the blocks, or each layer (of one block when there are many)")
shown = layers
if grouping == EACH_LAYER and count > MAX_LAYERS and blocks_of(layers):
    with place[1]:
        block = choose("Block", blocks_of(layers), key="layers_block", persist_state="session",
                       help="zoom into one transformer block")
    shown = layers[pd.to_numeric(layers["block"], errors="coerce") == block]
    with place[2]:
        st.caption(f"{count:,} layers: showing block {block}'s {shown['layer'].nunique()}. "
                   "Group per block to see them all.")
grouped, order = group_layers(shown, grouping)
axis_name = GROUP_TITLES[grouping]

VIEWS = ["Allocation", "Reconstruction error and OWL outlier ratios"]
view = view_switch(VIEWS, "layers_view")


def structures() -> None:
    """Heads and channels (and blocks) a structured run kept in each block, out of how many."""
    kept = structure_rows(layers)
    if kept.empty:
        return
    st.subheader("Heads and channels kept per block")
    units = kept.groupby("unit")["units"].max()
    titles = {unit: f"{unit} kept" for unit in units.index}
    figure = facet_figure(kept.assign(label=kept["run"]), "unit", "block", "kept", "what structured pruning kept",
                          columns=len(units), x_title="block", y_title=titles, color="run", mode="lines+markers",
                          panel_title=lambda unit: f"{unit} (of {units[unit]:.0f} per block)" if unit != "blocks"
                          else "blocks (1 kept, 0 removed)", hover=["layer", "units"])
    show_figure(figure, key="layers_structure")


def allocation() -> None:
    """Target and achieved sparsity per group of layers, side by side and as a groups x runs heatmap."""
    structures()
    st.subheader(f"Target and achieved sparsity {'per layer' if grouping == EACH_LAYER else grouping}")
    bars = px.bar(grouped, x="group", y="achieved_sparsity", color="run", barmode="group", hover_name="run",
                  hover_data={"layer": True, "target_sparsity": ":.4f", "achieved_sparsity": ":.4f",
                              "run": False, "group": False},
                  category_orders={"group": order, "run": run_order}, labels={"group": axis_name, "run": "run"},
                  color_discrete_sequence=COLORS)
    targets = grouped.dropna(subset=["target_sparsity"])
    if not targets.empty:
        bars.add_trace(go.Scatter(x=targets["group"], y=targets["target_sparsity"], mode="markers", name="target",
                                  marker=dict(symbol="line-ew-open", size=18, color="black", line=dict(width=2)),
                                  text=targets["run"], hovertemplate="<b>%{text}</b><br>%{x}: target %{y:.4f}<extra></extra>"))
    bars.update_layout(height=460, xaxis_title=axis_name, yaxis_title="sparsity (bars: achieved, dashes: target)")
    show_figure(bars, key="layers_bars")

    st.subheader(f"{axis_name.capitalize()}s × runs")
    value_name = choose("Heatmap of", [k for k, v in HEATMAP_VALUES.items() if grouped[v].notna().any()],
                        key="layers_heatmap_value", persist_state="session")
    value = HEATMAP_VALUES[value_name]
    grid = grouped.pivot_table(index="group", columns="run", values=value, aggfunc="first").reindex(
        index=order, columns=run_order)
    heatmap = px.imshow(grid, aspect="auto", color_continuous_scale="RdBu_r" if value == "gap" else "Viridis",
                        color_continuous_midpoint=0 if value == "gap" else None,
                        labels={"color": value_name, "x": "run", "y": axis_name},
                        height=max(300, 18 * len(order) + 140))
    heatmap.update_traces(hovertemplate="<b>%{x}</b><br>%{y}<br>" + value_name + " = %{z:.4g}<extra></extra>")
    heatmap.update_xaxes(side="top")
    show_figure(heatmap, key="layers_heatmap")


def errors_and_outliers() -> None:
    st.subheader("Reconstruction error " + ("per layer" if grouping == EACH_LAYER else grouping))
    errors = grouped.dropna(subset=["recon_error"])
    if errors.empty:
        st.info("None of these runs recorded a reconstruction error (‖WX − W′X‖ on calibration inputs); "
                "calibration-based methods such as SparseGPT record it.", icon=":material/straighten:")
    else:
        recon = px.line(errors, x="group", y="recon_error", color="run", markers=True, log_y=True, hover_name="run",
                        category_orders={"group": order, "run": run_order},
                        labels={"group": axis_name, "recon_error": "reconstruction error ‖WX − W′X‖ (log)"})
        recon.update_yaxes(tickformat=LOG_TICKFORMAT)
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
                                title="outlier ratio per block",
                                labels={"outlier_ratio": "outlier ratio (share of scores above M × mean)"}),
                        key="layers_owl_ratio")
        with right:
            show_figure(px.line(per_block, x="block", y="target_sparsity", color="run", markers=True, hover_name="run",
                                title="sparsity OWL gave each block", labels={"target_sparsity": "target sparsity"}),
                        key="layers_owl_target")


if view == VIEWS[0]:
    allocation()
else:
    errors_and_outliers()
