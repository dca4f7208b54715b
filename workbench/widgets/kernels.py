"""Sparse-kernel and model-latency speedups over dense, per backend and pattern.

A speedup above 1 means the sparse backend beat the dense baseline measured in the same run (see
README, Benchmarks: ratios of medians, one machine). Kernel runs time one matmul per case (phase
``kernel``, x = tokens); latency runs time a whole model (phases ``prefill``, x = tokens, and
``decode``, x = batch). One-time costs (``setup``, ``ceiling``) are not speedups and stay out;
failed or unsupported cases are data too: they are counted under the figure rather than drawn.
"""

from __future__ import annotations

import ipywidgets as widgets
import pandas as pd

from workbench import queries
from workbench.figures import speedup_figure
from workbench.widgets._view import View, new_figure, replace_traces, set_options
from workbench.widgets.picker import RunPicker

ALL = "(all)"
X_AXES = ["tokens", "batch", "out_features", "in_features", "sparsity"]
ONE_TIME_PHASES = ("setup", "ceiling")
OK = ("ok", "finished", "success")
# the columns this view reads (see the kernel_results table)
COLUMNS = ["run_id", "backend", "pattern", "dtype", "timing", "phase", "out_features", "in_features", "tokens",
           "batch", "sparsity", "speedup", "status", "error"]
FILTERS = ("phase", "dtype", "timing", "shape")


def shape_label(frame: pd.DataFrame) -> pd.Series:
    """'OUTxIN' of a kernel case; 'model' for a latency case (no single shape)."""
    label = frame["out_features"].astype("Int64").astype(str) + "x" + frame["in_features"].astype("Int64").astype(str)
    return label.where(frame["out_features"].notna(), "model")


def measured(frame: pd.DataFrame) -> pd.DataFrame:
    """The cases that produced a speedup (status ok, or none recorded)."""
    ok = frame["status"].isna() | frame["status"].isin(OK)
    return frame[ok & frame["speedup"].notna()]


class KernelSpeedupView(View):
    """Speedup over dense of the picker's chosen bench runs (all bench runs when none is chosen)."""

    def __init__(self, picker: RunPicker):
        self.filters = {name: widgets.Dropdown(description=name, options=[ALL], value=ALL,
                                               layout=widgets.Layout(width="220px")) for name in FILTERS}
        self.x_axis = widgets.Dropdown(description="x axis", options=X_AXES, value="tokens",
                                       layout=widgets.Layout(width="220px"))
        self.failed = widgets.HTML()
        self.cases = pd.DataFrame(columns=COLUMNS)
        super().__init__([*self.filters.values(), self.x_axis], new_figure("speedup over dense"), picker,
                         footer=[self.failed])
        self.update()

    def _results(self) -> pd.DataFrame:
        chosen = self.picker.chosen
        bench = chosen[chosen["kind"] == "bench"]["run_id"].tolist() if not chosen.empty else []
        frame = queries.kernel_results(self.picker.store, bench) if bench else pd.DataFrame()
        frame = frame.reindex(columns=list(dict.fromkeys([*frame.columns, *COLUMNS])))
        frame = frame[~frame["phase"].isin(ONE_TIME_PHASES)]
        return frame.assign(shape=shape_label(frame))

    def update(self) -> None:
        frame = self._results()
        with self.quiet():
            for column, dropdown in self.filters.items():
                values = sorted(frame[column].dropna().astype(str).unique())
                set_options(dropdown, [ALL, *values])
                if column == "phase" and dropdown.value == ALL and "kernel" in values:
                    dropdown.value = "kernel"  # matmul cases first; latency phases on request
        for column, dropdown in self.filters.items():
            if dropdown.value != ALL:
                frame = frame[frame[column].astype(str) == dropdown.value]
        good = measured(frame)
        self.cases = good
        x = self.x_axis.value
        split = ["backend", "pattern"] + [c for c in ("phase", "shape") if self.filters[c].value == ALL]
        lines = good.dropna(subset=[x])
        series = lines[split].apply(lambda row: " ".join(str(k) for k in row if pd.notna(k)), axis=1) \
            if not lines.empty else pd.Series(dtype=str)
        # the figure the app's Kernels page draws, in one panel: a line per backend, pattern (phase, shape)
        figure = speedup_figure(lines.assign(series=series, label=lines["run_id"]), x, "speedup", color="series",
                                hover=["run_id", "dtype", "timing"], title="speedup over dense (same run)")
        layout = figure.layout.to_plotly_json()
        replace_traces(self.figure, figure.data, **{k: v for k, v in layout.items() if k != "template"})
        failed = int((frame["status"].notna() & ~frame["status"].isin(OK)).sum())
        self.failed.value = f"{len(good)} measured cases; {failed} failed or unsupported (see kernel_results.error)"
