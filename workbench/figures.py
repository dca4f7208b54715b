"""Figures that both the Streamlit app and the Jupyter widgets draw (plotly only; no streamlit, no ipywidgets).

- ``grouped_traces`` / ``figure_of``: scatter or line traces grouped by columns, built as plain dicts.
- ``quality_traces`` / ``quality_figure``: a quality metric against sparsity (or speed), one colour per
  group, with the Pareto front of all runs or of each group. Directions, labels and fronts come from
  ``workbench.results``, so the app and the widgets draw the same front with the same axis words.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from workbench.results import better, lower_is_better, pareto_front

# ---------------------------------------------------------------- grouped traces without plotly express
# plotly express spends ~10 ms of bookkeeping per trace; a figure with a few hundred traces (kernel curves
# per backend, dtype and shape; 10,000 runs coloured by method) would take seconds. These build the same
# traces directly. Every point names its run on hover (the frame's ``label`` column).

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf"]
SYMBOLS = ["circle", "diamond", "square", "x", "triangle-up", "star", "cross", "triangle-down"]
DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
WEBGL_POINTS = 20_000  # beyond this a trace draws with WebGL (below it SVG draws faster where no GPU helps)
FRONT = "Pareto front"  # the name of the all-runs front trace; a group's front is "Pareto front: <group>"


def _styles(frame: pd.DataFrame, column: str | None, styles: list[str]) -> dict[str, str]:
    if not column:
        return {}
    return {value: styles[i % len(styles)] for i, value in enumerate(sorted(frame[column].astype(str).unique()))}


def _hover(x: str, y: str, hover: list[str]) -> str:
    extra = "".join(f"<br>{name}: %{{customdata[{i}]}}" for i, name in enumerate(hover))
    return f"<b>%{{text}}</b><br>{x}: %{{x}}<br>{y}: %{{y}}{extra}<extra></extra>"


def _values(series: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=float, na_value=np.nan)
    return series.to_numpy(dtype=object)


def grouped_traces(frame: pd.DataFrame, x: str, y: str, *, color: str | None = None, symbol: str | None = None,
                   dash: str | None = None, line_group: str | None = None, mode: str = "markers",
                   hover: list[str] = (), label: str = "label") -> list[dict]:
    """One trace (a plain dict) per combination of the ``color`` / ``symbol`` / ``dash`` columns, styled
    consistently across figures of the same data. ``line_group`` splits a trace's line into one line per
    value (NaN breaks between them) without adding traces."""
    keys = list(dict.fromkeys(c for c in (color, symbol, dash) if c))
    colors, symbols, dashes = _styles(frame, color, COLORS), _styles(frame, symbol, SYMBOLS), _styles(frame, dash, DASHES)
    hover = [h for h in dict.fromkeys(hover) if h in frame and h not in (x, y)]
    # copy only the columns drawn (frames read from the store are wide) and sort once
    frame = frame[list(dict.fromkeys([*keys, *([line_group] if line_group else []), x, y, label, *hover]))]
    if "lines" in mode:
        frame = frame.sort_values([line_group, x] if line_group else [x], kind="stable")
    groups = frame.groupby([frame[k].astype(str) for k in keys], sort=True) if keys else [((), frame)]
    traces = []
    for values, group in groups:
        named = dict(zip(keys, values if isinstance(values, tuple) else (values,)))
        # numbers stay float arrays (plotly ships them as compact binary); text is an object array
        columns = {axis: _values(group[column]) for axis, column in (("x", x), ("y", y))}
        columns["text"] = group[label].astype(str).to_numpy(dtype=object)
        if hover:
            columns["customdata"] = group[hover].astype(str).to_numpy(dtype=object)
        if line_group:  # a gap (NaN, or None in text) between two lines of one trace breaks the line there
            owner = group[line_group].astype(str).to_numpy()
            cuts = np.flatnonzero(owner[1:] != owner[:-1]) + 1
            columns = {k: np.insert(v, cuts, np.nan if v.dtype.kind == "f" else None, axis=0)
                       for k, v in columns.items()}
        webgl = len(group) > WEBGL_POINTS and "lines" not in mode
        name = ", ".join(named.values()) or y
        traces.append(dict(
            type="scattergl" if webgl else "scatter", mode=mode, name=name, legendgroup=name,
            hovertemplate=_hover(x, y, hover), **columns,
            marker=dict(color=colors.get(named.get(color)), symbol=symbols.get(named.get(symbol))),
            line=dict(color=colors.get(named.get(color)), dash=dashes.get(named.get(dash)))))
    return traces


def figure_of(traces: list[dict], layout: Any = None) -> go.Figure:
    """A figure from trusted trace dicts, skipping plotly's per-property validation (the slow part)."""
    return go.Figure(data=traces, layout=layout, _validate=False)


# ---------------------------------------------------------------- quality against sparsity, with fronts

def front_trace(frame: pd.DataFrame, x: str, y: str, name: str = FRONT, color: str | None = None,
                label: str = "label") -> dict | None:
    """The non-dominated runs of ``frame`` (``results.pareto_front``; both directions from
    ``results.LOWER_IS_BETTER``) joined by a dotted line; each point names its run on hover and
    carries its run id as ``customdata``."""
    front = pareto_front(frame, x, y, higher_x=not lower_is_better(x))
    if front.empty:
        return None
    trace = dict(type="scatter", x=_values(front[x]), y=_values(front[y]), mode="lines+markers", name=name,
                 text=front[label].astype(str).to_numpy(dtype=object),
                 line=dict(width=2, dash="dot", color=color or "black"),
                 marker=dict(size=12, symbol="circle-open", color=color or "black"),
                 hovertemplate=f"<b>%{{text}}</b><br>on the Pareto front<br>{x}=%{{x:.4g}}<br>{y}=%{{y:.4g}}"
                               "<extra></extra>")
    if "run_id" in front:
        trace["customdata"] = front["run_id"].astype(str).to_numpy(dtype=object)
    return trace


def quality_traces(frame: pd.DataFrame, x: str, y: str, *, color: str = "method", symbol: str | None = None,
                   fronts: str = "all runs", label: str = "label", x_title: str | None = None,
                   title: str | None = None, log_y: bool = False,
                   height: int | None = None) -> tuple[list[dict], dict]:
    """(traces, layout) of ``y`` (a quality metric) against ``x`` (a sparsity, or a speedup): one trace
    per ``color`` (and ``symbol``) group, and the Pareto front of ``fronts``: ``"all runs"``, ``"each
    colour group"`` or ``"off"``. Both axes carry titles; the y title says which way is better."""
    # the label names method, pattern, sparsity, model and the run id's first characters: no more hover data
    traces = grouped_traces(frame, x, y, color=color, symbol=symbol, label=label)
    if fronts == "all runs":
        traces.append(front_trace(frame, x, y, FRONT, label=label))
    elif fronts == "each colour group":
        colors = _styles(frame, color, COLORS)
        for group, members in frame.groupby(frame[color].astype(str)):
            traces.append(front_trace(members, x, y, f"{FRONT}: {group}", colors.get(group), label=label))
    direction = f"{better(y)} is better"
    layout = dict(title=dict(text=title or f"{y} ({direction}) against {x_title or x}"),
                  xaxis=dict(title=dict(text=x_title or x)),
                  yaxis=dict(title=dict(text=f"{y} ({direction})"), type="log" if log_y else "linear"),
                  legend=dict(title=dict(text=", ".join(c for c in (color, symbol) if c))))
    if height:
        layout["height"] = height
    return [t for t in traces if t is not None], layout


def quality_figure(frame: pd.DataFrame, x: str, y: str, **options: Any) -> go.Figure:
    """``quality_traces`` as a figure."""
    traces, layout = quality_traces(frame, x, y, **options)
    return figure_of(traces, layout)
