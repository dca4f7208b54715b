"""Training curves and mask divergence over steps.

Top: a per-step metric (loss, accuracy, sparsity...) of each chosen run. Bottom: SAD between the
run's consecutive mask snapshots (SR-STE, Zhou et al. 2021: sum |E_t - E_t-1|, as a fraction of the
masked weights), from ``api.mask_drift``: how fast the sparse topology settles.
"""

from __future__ import annotations

import ipywidgets as widgets
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench import api, queries
from workbench.widgets._view import View, new_figure, replace_traces, set_options
from workbench.widgets.allocation import MAX_RUNS
from workbench.widgets.picker import RunPicker, label_map


class TrainingCurveView(View):
    """A per-step metric (top) and SAD between consecutive masks (bottom) of the picker's chosen runs."""

    def __init__(self, picker: RunPicker, metric: str | None = None):
        self.metric = widgets.Dropdown(description="metric", options=[metric] if metric else [], value=metric)
        self.drift = widgets.Dropdown(description="divergence", options=["sad_fraction", "sad", "iou"],
                                      value="sad_fraction")
        figure = new_figure("training", make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08))
        figure.update_layout(height=560)
        super().__init__([self.metric, self.drift], figure, picker)
        self.update()

    def update(self) -> None:
        chosen = self.picker.chosen
        run_ids = list(chosen["run_id"][:MAX_RUNS]) if not chosen.empty else []
        labels = label_map(chosen)
        steps = queries.metrics(self.picker.store, run_ids) if run_ids else None
        steps = steps[steps["step"].notna()] if steps is not None else None
        with self.quiet():
            set_options(self.metric, sorted(steps["name"].unique()) if steps is not None else [])
        pairs = queries.divergence(self.picker.store, run_ids) if run_ids else None
        snapshotted = set(pairs[pairs["run_a"] == pairs["run_b"]]["run_a"]) if pairs is not None else set()
        traces: list[go.Scatter] = []
        for index, run_id in enumerate(run_ids):
            colour = dict(color=_colour(index))
            curve = steps[(steps["run_id"] == run_id) & (steps["name"] == self.metric.value)]
            if not curve.empty:
                traces.append(go.Scatter(x=curve["step"], y=curve["value"], mode="lines", name=labels[run_id],
                                         legendgroup=run_id, line=colour))
            drift = api.mask_drift(run_id, store=self.picker.store) if run_id in snapshotted else None
            if drift is not None and not drift.empty:
                traces.append(go.Scatter(x=drift["step_b"], y=drift[self.drift.value], mode="lines+markers",
                                         name=f"{labels[run_id]} ({self.drift.value})", legendgroup=run_id,
                                         showlegend=curve.empty, line=colour, xaxis="x2", yaxis="y2"))
        replace_traces(self.figure, traces, title=f"{self.metric.value or 'no per-step metrics'} and mask divergence",
                       yaxis_title=self.metric.value or "", yaxis2_title=f"{self.drift.value} vs previous mask",
                       xaxis2_title="step")


def _colour(index: int) -> str:
    palette = plotly.colors.qualitative.Plotly
    return palette[index % len(palette)]
