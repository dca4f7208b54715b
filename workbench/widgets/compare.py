"""Quality against sparsity, one colour per method, with the Pareto front and the picker's selection.

The front holds the runs that no other run beats on both axes (sparser and better), computed by
``api.pareto_front``; which way "better" points comes from ``api.LOWER_IS_BETTER``.
"""

from __future__ import annotations

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go

from workbench import api
from workbench.widgets._view import View, new_figure, replace_traces, set_options
from workbench.widgets.picker import RunPicker, run_label

QUALITY_METRICS = ["perplexity", "accuracy", "embedding_cosine", "neighbour_agreement", "loss"]


def sparsity_axis(frame: pd.DataFrame) -> pd.Series:
    """Achieved sparsity where the run measured it, else its target."""
    achieved = frame["sparsity"] if "sparsity" in frame else pd.Series(index=frame.index, dtype=float)
    return achieved.fillna(frame["target_sparsity"]).astype(float)


class CompareView(View):
    """Scatter of a quality metric against sparsity over the picker's filtered runs."""

    def __init__(self, picker: RunPicker, metric: str | None = None):
        self.metric = widgets.Dropdown(description="quality", options=QUALITY_METRICS, value=metric or "perplexity")
        self.log_y = widgets.Checkbox(description="log scale", value=True)
        self.front = pd.DataFrame()
        super().__init__([self.metric, self.log_y], new_figure("quality vs sparsity"), picker)
        self.update()

    def update(self) -> None:
        frame = self.picker.runs
        available = api.nonempty(frame, QUALITY_METRICS)
        with self.quiet():
            set_options(self.metric, available or QUALITY_METRICS)
        metric = self.metric.value
        if frame.empty or metric not in frame:
            self.front = frame
            replace_traces(self.figure, [], title=f"{metric} vs sparsity: no runs")
            return
        data = frame.assign(x=sparsity_axis(frame)).dropna(subset=["x", metric])
        traces: list[go.Scatter] = []
        for method, group in data.groupby(data["method"].fillna(data["kind"]), sort=True):
            traces.append(go.Scatter(x=group["x"], y=group[metric], mode="markers", name=str(method),
                                     marker=dict(size=10), customdata=group["run_id"],
                                     hovertext=[run_label(r) for r in group.itertuples(index=False)]))
        self.front = api.pareto_front(data, x="x", y=metric)
        traces.append(go.Scatter(x=self.front["x"], y=self.front[metric], mode="lines", name="Pareto front",
                                 line=dict(dash="dash", color="black"), customdata=self.front["run_id"],
                                 hoverinfo="skip"))
        chosen = data[data["run_id"].isin(self.picker.selected)]
        traces.append(go.Scatter(x=chosen["x"], y=chosen[metric], mode="markers", name="selected",
                                 customdata=chosen["run_id"],
                                 marker=dict(size=18, symbol="circle-open", line=dict(width=2, color="red"))))
        better = "lower" if api.LOWER_IS_BETTER.get(metric, True) else "higher"
        replace_traces(self.figure, traces, title=f"{metric} ({better} is better) vs sparsity",
                       xaxis_title="sparsity (fraction of zeros)", xaxis_range=[-0.05, 1.0], yaxis_title=metric,
                       yaxis_type="log" if self.log_y.value else "linear")
