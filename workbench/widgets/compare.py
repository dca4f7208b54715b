"""Quality against sparsity, one colour per method, with the Pareto front and the picker's selection.

The figure is ``workbench.figures.quality_traces``, the one the app's Compare page draws: the front
holds the runs that no other run beats on both axes (sparser and better), and which way "better"
points comes from ``workbench.results.lower_is_better``. The quality is any the filtered runs measured:
perplexity, embedding fidelity, accuracy, or a downstream task's score (``<task>/acc``, higher is better).
"""

from __future__ import annotations

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go

from workbench import api
from workbench.figures import quality_traces
from workbench.results import QUALITY_METRICS, quality_metrics, run_labels
from workbench.widgets._view import View, new_figure, replace_traces, set_options
from workbench.widgets.picker import RunPicker


def sparsity_axis(frame: pd.DataFrame) -> pd.Series:
    """Achieved sparsity where the run measured it, else its target."""
    achieved = frame["sparsity"] if "sparsity" in frame else pd.Series(index=frame.index, dtype=float)
    return achieved.fillna(frame["target_sparsity"]).astype(float)


class CompareView(View):
    """Scatter of a quality metric against sparsity over the picker's filtered runs."""

    def __init__(self, picker: RunPicker, metric: str | None = None):
        self.metric = widgets.Dropdown(description="quality", options=list(QUALITY_METRICS),
                                       value=metric or "perplexity")
        self.log_y = widgets.Checkbox(description="log scale", value=True)
        self.front = pd.DataFrame()
        super().__init__([self.metric, self.log_y], new_figure("quality vs sparsity"), picker)
        self.update()

    def update(self) -> None:
        frame = self.picker.runs
        available = api.nonempty(frame, quality_metrics(frame.columns))
        with self.quiet():
            set_options(self.metric, available or list(QUALITY_METRICS))
        metric = self.metric.value
        if frame.empty or metric not in frame:
            self.front = frame
            replace_traces(self.figure, [], title=f"{metric} vs sparsity: no runs")
            return
        data = frame.assign(sparsity=sparsity_axis(frame), method=frame["method"].fillna(frame["kind"]))
        data = data.dropna(subset=["sparsity", metric])
        data = data.assign(label=run_labels(data))
        traces, layout = quality_traces(data, "sparsity", metric, color="method", log_y=self.log_y.value,
                                        x_title="sparsity (fraction of zeros)")
        self.front = api.pareto_front(data, x="sparsity", y=metric)
        chosen = data[data["run_id"].isin(self.picker.selected)]
        traces.append(go.Scatter(x=chosen["sparsity"], y=chosen[metric], mode="markers", name="selected",
                                 customdata=chosen["run_id"], text=chosen["label"], hoverinfo="text",
                                 marker=dict(size=18, symbol="circle-open", line=dict(width=2, color="red"))))
        layout["xaxis"]["range"] = [-0.05, 1.0]
        replace_traces(self.figure, traces, **layout)
