"""Figures more than one page draws: mask pictures (overview and a zoomed window), layer names and layer
groups. Grouped traces, faceted grids, axis formats and the quality-against-sparsity figure are
``workbench.figures``, which the Jupyter widgets draw too."""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from workbench.figures import KEPT_COLOR, PRUNED_COLOR, facet_figure  # noqa: F401 - facet_figure: the pages' import
from workbench_app.maskview import MAX_PIXELS, density_image, mask_image

DETAIL_ROWS, DETAIL_COLS = 24, 48


def group_of(pattern: object) -> int | None:
    """M of an N:M pattern string ("2:4" -> 4), None for unstructured."""
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(pattern))
    return int(match.group(2)) if match else None


def overview_figure(mask: np.ndarray, group: int | None, title: str, label: str) -> go.Figure:
    """The whole mask, one pixel per weight (kept dark; alternate N:M groups shaded), block-averaged when huge."""
    if mask.size <= MAX_PIXELS:
        figure = px.imshow(mask_image(mask, group), binary_string=True, title=title)
        figure.update_traces(hovertemplate=f"<b>{label}</b><br>row %{{y}}, column %{{x}}<extra></extra>")
    else:
        density, side = density_image(mask)
        figure = px.imshow(density, zmin=0, zmax=1, color_continuous_scale="Blues", title=f"{title} "
                           f"(each pixel: share kept of a {side}×{side} block)", labels={"color": "kept"})
        figure.update_traces(hovertemplate=f"<b>{label}</b><br>block at row %{{y}}×{side}, column %{{x}}×{side}: "
                                           "%{z:.2f} kept<extra></extra>")
    figure.update_layout(height=min(720, max(320, int(900 * mask.shape[0] / max(mask.shape[1], 1)))),
                         xaxis_title="input (column)", yaxis_title="output (row)")
    return figure


def detail_figure(mask: np.ndarray, group: int | None, row: int, col: int, label: str) -> go.Figure:
    crop = mask[row:row + DETAIL_ROWS, col:col + DETAIL_COLS].astype(int)
    rows, cols = np.arange(row, row + crop.shape[0]), np.arange(col, col + crop.shape[1])
    figure = go.Figure(go.Heatmap(z=crop, x=cols, y=rows, zmin=0, zmax=1, xgap=1, ygap=1, showscale=False,
                                  colorscale=[[0, PRUNED_COLOR], [0.5, PRUNED_COLOR], [0.5, KEPT_COLOR], [1, KEPT_COLOR]],
                                  text=np.where(crop == 1, "kept", "pruned"),
                                  hovertemplate=f"<b>{label}</b><br>row %{{y}}, column %{{x}}: %{{text}}<extra></extra>"))
    if group and group > 1:
        for boundary in range(col - col % group + group, col + crop.shape[1], group):
            figure.add_vline(x=boundary - 0.5, line=dict(color="#d62728", width=2))
    figure.update_yaxes(autorange="reversed")
    figure.update_layout(height=420, xaxis_title="input (column)", yaxis_title="output (row)",
                         title=f"rows {row}–{row + crop.shape[0] - 1}, columns {col}–{col + crop.shape[1] - 1}"
                         + (f" (red lines: groups of {group})" if group else ""))
    return figure


def snapshots_figure(masks: list[np.ndarray], steps: list[int], group: int | None, title: str,
                     label: str) -> go.Figure:
    """The same layer's mask at successive steps, with a slider (and play button) over the steps."""
    frames = np.stack([mask_image(mask, group) for mask in masks])
    figure = px.imshow(frames, animation_frame=0, binary_string=True, title=title,
                       labels={"animation_frame": "snapshot"})
    hover = f"<b>{label}</b><br>row %{{y}}, column %{{x}}<extra></extra>"
    figure.update_traces(hovertemplate=hover)
    for frame in figure.frames:
        for trace in frame.data:
            trace.hovertemplate = hover
    for index, step in enumerate(figure.layout.sliders[0].steps if figure.layout.sliders else []):
        step.label = f"step {steps[index]}"
    figure.update_layout(height=min(720, max(360, int(900 * masks[0].shape[0] / max(masks[0].shape[1], 1)))),
                         xaxis_title="input (column)", yaxis_title="output (row)")
    return figure


def short_names(layers: pd.Series) -> pd.Series:
    """Layer names without the prefix they all share (``model.layers.``), cut at a dot."""
    names = sorted(set(layers))
    prefix = os.path.commonprefix(names) if len(names) > 1 else ""
    prefix = prefix[: prefix.rfind(".") + 1]
    return layers.str.slice(len(prefix))
