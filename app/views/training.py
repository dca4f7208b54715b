"""Training: loss, accuracy and mask divergence (SAD) over steps, per layer; mask snapshots over time."""

from __future__ import annotations

import plotly.express as px
import streamlit as st
from workbench_app.figures import group_of, short_names, snapshots_figure
from workbench_app.ui import choose, page_start, pick_run, pick_runs, show_figure

from workbench.figures import facet_figure

PREFERRED = ("loss", "accuracy", "sad_fraction")
MAX_SNAPSHOTS = 24  # frames in the snapshot slider (evenly spaced when a run stored more)

reader, runs = page_start("Training")
train = runs[runs["kind"] == "train"]
if train.empty:
    st.info("No training runs yet. A spec with `kind: train` (sparse training: SR-STE, gradual magnitude "
            "pruning, RigL / SET) logs its loss and accuracy per step, snapshots of its masks and the "
            "divergence (SAD) between consecutive snapshots; start one with `workbench run SPEC.yaml` or on "
            "the **Launch** page.", icon=":material/inbox:")
    st.stop()

picked = pick_runs("Training runs", train, key="training_runs", default=3)
if not picked:
    st.info("Select one or more training runs above.")
    st.stop()
labels = dict(zip(runs["run_id"], runs["label"]))
metrics = reader.metrics(picked)
stepped = metrics[metrics["step"].notna()].assign(run=lambda f: f["run_id"].map(labels))
names = sorted(stepped["name"].unique())
if not names:
    st.info("These runs logged no metric per step (yet: a running job writes its rows when it finishes).")
else:
    default = [n for n in names if any(word in n for word in PREFERRED)][:4] or names[:2]
    chosen = st.multiselect("Metrics over steps", names, default=default, key="training_metrics",
                            persist_state="session")
    if chosen:
        # one figure, a panel per metric and one legend for them all (not a legend per chart)
        curves = stepped[stepped["name"].isin(chosen)].assign(label=lambda f: f["run"])
        figure = facet_figure(curves, "name", "step", "value", "metrics over training steps", columns=2,
                              x_title="step", y_title={name: name for name in chosen}, panel_title=str,
                              color="run", mode="lines+markers", panel_height=280)
        figure.update_layout(legend_title_text="run")
        show_figure(figure, key="training_metrics_chart")

st.subheader("Mask divergence between snapshots, per layer")
candidates = train[train["run_id"].isin(picked)]
run_id = pick_run("Run", candidates, key="training_run")
divergence = reader.divergence([run_id])
between_steps = divergence[(divergence["run_a"] == run_id) & (divergence["run_b"] == run_id)
                           & divergence["step_b"].notna()]
if between_steps.empty:
    st.info("This run recorded no divergence between mask snapshots.", icon=":material/extension:")
else:
    between_steps = between_steps.assign(layer_name=short_names(between_steps["layer"]),
                                         run=labels.get(run_id, run_id))
    value = choose("Divergence", ["sad_fraction", "sad", "iou"], key="training_div_value", persist_state="session",
                   help="SAD: weights whose kept/pruned state changed since the previous snapshot; IoU of the kept sets")
    lines = px.line(between_steps.sort_values("step_b"), x="step_b", y=value, color="layer_name", markers=True,
                    hover_name="run", hover_data={"step_a": True, "layer": True, "layer_name": False},
                    labels={"step_b": "step", "layer_name": "layer"}, title=f"{value} since the previous snapshot")
    show_figure(lines, key="training_sad_lines")
    grid = between_steps.pivot_table(index="layer_name", columns="step_b", values=value, aggfunc="first")
    heat = px.imshow(grid, aspect="auto", color_continuous_scale="Magma_r", labels={"x": "step", "y": "layer",
                                                                                     "color": value},
                     height=max(260, 22 * len(grid) + 140))
    heat.update_traces(hovertemplate=f"<b>{labels.get(run_id, run_id)}</b><br>%{{y}} at step %{{x}}: "
                                     f"{value} %{{z:.4g}}<extra></extra>")
    show_figure(heat, key="training_sad_heatmap")

st.subheader("Mask snapshots over time")
index = reader.mask_index(run_id)
multi = index.groupby("layer")["step"].nunique()
layers = list(multi[multi > 1].index)
if not layers:
    st.info("This run stored its masks at one step only; a training spec that snapshots masks every few "
            "steps shows how the topology settles.", icon=":material/movie:")
else:
    layer = choose("Layer", layers, key="training_snapshot_layer", persist_state="session")
    steps = sorted(int(s) for s in index.loc[index["layer"] == layer, "step"].unique())
    if len(steps) > MAX_SNAPSHOTS:
        steps = [steps[round(i * (len(steps) - 1) / (MAX_SNAPSHOTS - 1))] for i in range(MAX_SNAPSHOTS)]
    masks = [reader.mask(run_id, layer, step) for step in steps]
    group = group_of(candidates.set_index("run_id").loc[run_id, "pattern"])
    show_figure(snapshots_figure(masks, steps, group, f"{labels.get(run_id, run_id)} · {layer}",
                                 labels.get(run_id, run_id)), key="training_snapshots")
