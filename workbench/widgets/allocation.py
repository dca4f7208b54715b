"""Where each run put its zeros: sparsity per layer, or per transformer block (weighted by size).

Uniform allocation draws a flat line; OWL (Yin et al., 2024) bends it so that blocks with more
outlier weights keep more of them, while the model-wide mean stays at the target.
"""

from __future__ import annotations

import ipywidgets as widgets
import plotly.graph_objects as go

from workbench import api, queries
from workbench.widgets._view import View, new_figure, replace_traces
from workbench.widgets.picker import RunPicker, label_map

MAX_RUNS = 8  # more lines than this are unreadable


def short_layer(name: str) -> str:
    """``model.layers.3.self_attn.q_proj`` -> ``3.self_attn.q_proj``."""
    for marker in (".layers.", ".layer.", ".h.", ".blocks."):
        if marker in name:
            return name.split(marker, 1)[1]
    return name


class AllocationView(View):
    """Per-layer or per-block sparsity of the picker's chosen runs (at most ``MAX_RUNS``)."""

    def __init__(self, picker: RunPicker):
        self.grouping = widgets.ToggleButtons(options=["per layer", "per block"], value="per layer")
        self.value = widgets.Dropdown(description="show", options=["achieved_sparsity", "target_sparsity"],
                                      value="achieved_sparsity")
        super().__init__([self.grouping, self.value], new_figure("sparsity by layer"), picker)
        self.update()

    def run_ids(self) -> list[str]:
        chosen = self.picker.chosen
        if chosen.empty:
            return []
        return list(chosen[chosen["kind"].isin(["prune", "train"])]["run_id"][:MAX_RUNS])

    def update(self) -> None:
        run_ids = self.run_ids()
        labels = label_map(self.picker.chosen)
        column = self.value.value
        traces = []
        if self.grouping.value == "per block":
            frame = api.block_sparsity(run_ids, store=self.picker.store) if run_ids else None
            for run_id in run_ids:
                rows = frame[frame["run_id"] == run_id]
                traces.append(go.Scatter(x=rows["block"], y=rows[column], mode="lines+markers", name=labels[run_id]))
            x_title = "transformer block"
        else:
            frame = queries.layer_stats(self.picker.store, run_ids) if run_ids else None
            for run_id in run_ids:
                rows = frame[frame["run_id"] == run_id]
                traces.append(go.Scatter(x=[short_layer(n) for n in rows["layer"]], y=rows[column],
                                         mode="lines+markers", name=labels[run_id], customdata=rows["layer"]))
            x_title = "layer (block.module)"
        replace_traces(self.figure, traces, title=f"{column.replace('_', ' ')} {self.grouping.value}",
                       xaxis_title=x_title, yaxis_title=column, yaxis_range=[0, 1])
