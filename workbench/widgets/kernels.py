"""Sparse-kernel speedups over dense, per backend and pattern, against the number of tokens.

A speedup above 1 means the sparse kernel beat the dense baseline measured in the same run (see
BENCHMARKS in the README: ratios, medians, one machine). Failed cases (an unsupported backend, a
timeout) are data too: they are counted under the figure rather than drawn.
"""

from __future__ import annotations

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go

from workbench import queries
from workbench.widgets._view import View, new_figure, replace_traces, set_options
from workbench.widgets.picker import RunPicker

ALL = "(all)"
X_AXES = ["tokens", "out_features", "in_features", "sparsity"]
# the columns this view reads (see the kernel_results table)
COLUMNS = ["run_id", "backend", "pattern", "dtype", "timing", "out_features", "in_features", "tokens", "sparsity",
           "speedup", "status", "error"]


def shape_label(frame: pd.DataFrame) -> pd.Series:
    return frame["out_features"].astype("Int64").astype(str) + "x" + frame["in_features"].astype("Int64").astype(str)


def measured(frame: pd.DataFrame) -> pd.DataFrame:
    """The cases that produced a timing (status ok, or no status recorded, and a speedup)."""
    ok = frame["status"].isna() | frame["status"].isin(["ok", "finished", "success"])
    return frame[ok & frame["speedup"].notna()]


class KernelSpeedupView(View):
    """Speedup over dense of the picker's chosen bench runs (all bench runs when none is chosen)."""

    def __init__(self, picker: RunPicker):
        self.dtype = widgets.Dropdown(description="dtype", options=[ALL], value=ALL)
        self.timing = widgets.Dropdown(description="timing", options=[ALL], value=ALL)
        self.shape = widgets.Dropdown(description="shape", options=[ALL], value=ALL)
        self.x_axis = widgets.Dropdown(description="x axis", options=X_AXES, value="tokens")
        self.failed = widgets.HTML()
        self.cases = pd.DataFrame()
        super().__init__([self.dtype, self.timing, self.shape, self.x_axis], new_figure("kernel speedup"), picker,
                         footer=[self.failed])
        self.update()

    def _results(self) -> pd.DataFrame:
        chosen = self.picker.chosen
        bench = chosen[chosen["kind"] == "bench"]["run_id"].tolist() if not chosen.empty else []
        frame = queries.kernel_results(self.picker.store, bench) if bench else pd.DataFrame()
        return frame.reindex(columns=list(dict.fromkeys([*frame.columns, *COLUMNS])))

    def update(self) -> None:
        frame = self._results()
        frame = frame.assign(shape=shape_label(frame))
        with self.quiet():
            for dropdown, column in ((self.dtype, "dtype"), (self.timing, "timing"), (self.shape, "shape")):
                set_options(dropdown, [ALL, *sorted(frame[column].dropna().astype(str).unique())])
        for dropdown, column in ((self.dtype, "dtype"), (self.timing, "timing"), (self.shape, "shape")):
            if dropdown.value != ALL:
                frame = frame[frame[column].astype(str) == dropdown.value]
        good = measured(frame)
        self.cases = good
        x = self.x_axis.value
        traces = []
        split = ["backend", "pattern"] + (["shape"] if self.shape.value == ALL else [])
        for key, group in good.groupby(split, dropna=False, sort=True):
            group = group.sort_values(x)
            traces.append(go.Scatter(x=group[x], y=group["speedup"], mode="lines+markers",
                                     name=" ".join(str(k) for k in key if pd.notna(k))))
        replace_traces(self.figure, traces, title="speedup over dense (same run)", xaxis_title=x,
                       yaxis_title="speedup", xaxis_type="log" if x == "tokens" else "linear",
                       shapes=[dict(type="line", xref="paper", x0=0, x1=1, y0=1, y1=1,
                                    line=dict(dash="dot", color="grey"))])
        failed = len(frame) - len(good)
        self.failed.value = f"{len(good)} measured cases; {failed} failed or unsupported (see kernel_results.error)"
