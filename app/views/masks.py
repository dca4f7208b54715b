"""Masks: a run's mask for one layer as a zoomable picture (N:M groups shaded), its per-row and per-column
sparsity, and how much the masks of several runs overlap (IoU, SAD)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st
from workbench_app.figures import detail_figure, group_of, overview_figure
from workbench_app.maskview import column_sparsity, row_sparsity
from workbench_app.ui import choose, page_start, pick_run, pick_runs, show_figure, view_switch

reader, runs = page_start("Masks")
stored = reader.mask_runs()
if stored.empty:
    st.info("No masks stored yet: every prune and training run stores its masks (1 bit per weight). "
            "Run `workbench demo` or start a job on the **Launch** page.", icon=":material/inbox:")
    st.stop()
candidates = runs[runs["run_id"].isin(set(stored["run_id"]))]
run_id = pick_run("Run", candidates, key="masks_run")
record = candidates.set_index("run_id").loc[run_id]
index = reader.mask_index(run_id)
layer_names = list(dict.fromkeys(index["layer"]))
layer = choose("Layer", layer_names, key="masks_layer", persist_state="session")
steps = sorted(int(s) for s in index.loc[index["layer"] == layer, "step"].unique())
step = steps[-1]
if len(steps) > 1:
    step = st.select_slider("Step (mask snapshot)", steps, value=steps[-1], key="masks_step")

VIEWS = ["This run's mask", "Overlap between runs"]
view = view_switch(VIEWS, "masks_view")


def this_mask() -> None:
    """The mask as a picture, a cell-per-weight window, and its per-row and per-column sparsity."""
    mask = reader.mask(run_id, layer, step)
    group = group_of(record["pattern"])

    kept = int(mask.sum())
    cells = st.columns(4)
    cells[0].metric("Shape", f"{mask.shape[0]} × {mask.shape[1]}")
    cells[1].metric("Kept", f"{kept:,}")
    cells[2].metric("Sparsity", f"{1 - kept / mask.size:.2%}")
    cells[3].metric("Pattern", str(record["pattern"] or "unstructured"))
    show_figure(overview_figure(mask, group, f"{record['label']} · {layer} · step {step}", record["label"]),
                key="masks_image")

    with st.expander("Zoom into a window (every weight one cell)", expanded=bool(group)):
        place = st.columns(2)
        row = place[0].number_input("First row", 0, max(0, mask.shape[0] - 1), 0, key="masks_row")
        col = place[1].number_input("First column", 0, max(0, mask.shape[1] - 1), 0, step=group or 1, key="masks_col")
        show_figure(detail_figure(mask, group, int(row), int(col), record["label"]), key="masks_detail")

    left, right = st.columns(2)
    with left:
        rows = pd.DataFrame({"row": np.arange(mask.shape[0]), "sparsity": row_sparsity(mask), "run": record["label"]})
        show_figure(px.line(rows, x="row", y="sparsity", hover_name="run", title="sparsity of each output row"),
                    key="masks_rows")
    with right:
        columns = pd.DataFrame({"column": np.arange(mask.shape[1]), "sparsity": column_sparsity(mask),
                                "run": record["label"]})
        show_figure(px.line(columns, x="column", y="sparsity", hover_name="run", title="sparsity of each input column"),
                    key="masks_cols")


def between_runs() -> None:
    """Runs x runs IoU or SAD of the selected runs' masks, for this layer or the whole model."""
    same_model = candidates[candidates["model"] == record["model"]] if pd.notna(record["model"]) else candidates
    scope = st.radio("Over", ["this layer", "the whole model"], horizontal=True, key="masks_scope",
                     persist_state="session")
    others = pick_runs("Runs to compare (same model)", same_model, key="masks_overlap_runs", default=4)
    if len(others) < 2:
        st.info("Pick at least two runs to compare their masks.")
        return
    if scope == "this layer":
        holding = [r for r in others if layer in set(reader.mask_index(r)["layer"])]
        iou, sad = reader.pairwise_overlap(holding, layer)
    else:
        iou, sad = reader.pairwise_overlap(others)
    labels = dict(zip(runs["run_id"], runs["label"]))
    shown = st.radio("Show", ["IoU of kept weights", "SAD: share of weights that differ"], horizontal=True,
                     key="masks_overlap_value", persist_state="session")
    matrix = (iou if shown.startswith("IoU") else sad).rename(index=labels, columns=labels)
    heat = px.imshow(matrix, text_auto=".3f", zmin=0, zmax=1, color_continuous_scale="Blues", aspect="auto",
                     labels={"x": "run", "y": "run", "color": shown.split(":")[0]}, height=160 + 60 * len(matrix))
    heat.update_traces(hovertemplate="<b>%{y}</b><br>vs <b>%{x}</b><br>%{z:.4f}<extra></extra>")
    show_figure(heat, key="masks_overlap")
    st.caption("SAD (sparse architecture divergence, Zhou et al. 2021): positions whose kept/pruned state differs, "
               "here as a share of the weights compared. Layers of different shape are not compared.")


if view == VIEWS[0]:
    this_mask()
else:
    between_runs()
