"""A stored mask as a heat map: choose run, layer and snapshot step; zoom out to see structure.

At zoom 1 every cell is one weight (1 = kept, drawn dark as in the app; pruned light). At zoom k every
cell is a k x k tile of weights and shows the fraction kept in it, so a 2:4 pattern reads as a flat 0.5
and OWL's or magnitude's row and column structure shows up as bands. The window shows at most ``CELLS``
x ``CELLS`` cells.
"""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from workbench import queries
from workbench.figures import MASK_COLORSCALE
from workbench.widgets._view import View, new_figure, replace_traces, set_options
from workbench.widgets.picker import RunPicker, label_map

CELLS = 96
ZOOMS = (1, 2, 4, 8, 16, 32, 64)


def mask_tile(mask: torch.Tensor, zoom: int, row0: int = 0, col0: int = 0, cells: int = CELLS) -> np.ndarray:
    """Fraction kept in each ``zoom`` x ``zoom`` tile of the window that starts at weight (row0, col0)
    and spans at most ``cells`` tiles each way. Tiles at the matrix's edge average what they cover."""
    bits = mask.reshape(mask.shape[0], -1).float()
    window = bits[row0: row0 + cells * zoom, col0: col0 + cells * zoom]
    rows, cols = window.shape
    out_rows, out_cols = -(-rows // zoom), -(-cols // zoom)
    padded = torch.full((out_rows * zoom, out_cols * zoom), float("nan"))
    padded[:rows, :cols] = window
    tiles = padded.reshape(out_rows, zoom, out_cols, zoom)
    return torch.nanmean(tiles, dim=(1, 3)).numpy()


class MaskViewer(View):
    """Heat map of one layer's mask of one run; linked to a picker's chosen runs."""

    def __init__(self, picker: RunPicker, run_id: str | None = None):
        self.run = widgets.Dropdown(description="run", options=[], layout=widgets.Layout(width="320px"))
        self.layer = widgets.Dropdown(description="layer", options=[], layout=widgets.Layout(width="380px"))
        self.step = widgets.Dropdown(description="step", options=[], layout=widgets.Layout(width="160px"))
        self.zoom = widgets.SelectionSlider(description="zoom", options=list(ZOOMS), value=1)
        self.row0 = widgets.IntSlider(description="first row", min=0, max=0, continuous_update=False)
        self.col0 = widgets.IntSlider(description="first col", min=0, max=0, continuous_update=False)
        self.summary = widgets.HTML()
        self._cached: tuple[tuple, torch.Tensor] | None = None
        self._shown: tuple = ()
        super().__init__([self.run, self.layer, self.step], new_figure("mask"), picker,
                          footer=[widgets.HBox([self.zoom, self.row0, self.col0]), self.summary])
        for control in (self.zoom, self.row0, self.col0):
            control.observe(self._changed, names="value")
        self._wanted_run = run_id
        self.update()

    def _mask(self, run_id: str, layer: str, step: int | None) -> torch.Tensor:
        key = (run_id, layer, step)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, queries.load_mask(self.picker.store, run_id, layer, step))
        return self._cached[1]

    def _sync_controls(self) -> None:
        chosen = self.picker.chosen
        runs = [(label, run_id) for run_id, label in label_map(chosen).items()]
        set_options(self.run, runs)
        if self._wanted_run in chosen.get("run_id", pd.Series(dtype=str)).tolist():
            self.run.value, self._wanted_run = self._wanted_run, None
        index = queries.mask_index(self.picker.store, self.run.value) if self.run.value else None
        set_options(self.layer, sorted(index["layer"].unique()) if index is not None else [])
        steps = (sorted(int(s) for s in index[index["layer"] == self.layer.value]["step"].unique())
                 if self.layer.value else [])
        if list(self.step.options) != steps:
            self.step.options = steps
        if steps and (self.step.value not in steps or self._shown != (self.run.value, self.layer.value)):
            self.step.value = steps[-1]  # a new run or layer opens on its final mask
        self._shown = (self.run.value, self.layer.value)

    def update(self) -> None:
        with self.quiet():
            self._sync_controls()
            if self.layer.value is None or self.step.value is None:
                replace_traces(self.figure, [], title="no stored masks among the chosen runs")
                self.summary.value = ""
                return
            mask = self._mask(self.run.value, self.layer.value, self.step.value)
            rows, cols = mask.shape[0], mask[0].numel()
            zoom = self.zoom.value
            self.row0.max, self.col0.max = max(rows - zoom, 0), max(cols - zoom, 0)
            self.row0.step = self.col0.step = zoom
        z = mask_tile(mask, zoom, self.row0.value, self.col0.value)
        row_end = min(self.row0.value + z.shape[0] * zoom, rows)
        col_end = min(self.col0.value + z.shape[1] * zoom, cols)
        heatmap = go.Heatmap(z=z, zmin=0, zmax=1, colorscale=MASK_COLORSCALE,  # kept dark, as in the app
                             x=np.arange(z.shape[1]) * zoom + self.col0.value,
                             y=np.arange(z.shape[0]) * zoom + self.row0.value,
                             colorbar=dict(title="kept"),
                             hovertemplate="row %{y}, col %{x}: %{z:.2f} kept<extra></extra>")
        sparsity = 1 - float(mask.float().mean())
        replace_traces(self.figure, [heatmap], title=f"{self.layer.value} (step {self.step.value})",
                       xaxis_title="input (column)", yaxis_title="output (row)", yaxis_autorange="reversed")
        self.summary.value = (f"{rows} x {cols} weights, sparsity {sparsity:.3f}; showing rows "
                              f"{self.row0.value}..{row_end - 1}, cols {self.col0.value}..{col_end - 1}, "
                              f"{zoom} x {zoom} weights per cell")
