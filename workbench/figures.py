"""Figures that both the Streamlit app and the Jupyter widgets draw (plotly only; no streamlit, no ipywidgets).

- ``grouped_traces`` / ``figure_of``: scatter or line traces grouped by columns, built as plain dicts.
- ``facet_figure``: grouped traces in one panel per value of a column, one legend, titled axes.
- ``quality_traces`` / ``quality_figure``: a quality metric against sparsity (or speed, or parameter
  count), one colour per group, with the Pareto front of all runs or of each group, a dense baseline
  line, error bars (mean and spread over seeds) and one panel per model. Directions, labels and fronts
  come from ``workbench.results``, so the app and the widgets draw the same front with the same words.
- ``readable``: every log axis labelled with whole numbers (plotly's default labels the ticks between
  powers of ten with their leading digit only: 7, 6, 5 ... 100, 9, 8), every axis title kept clear of
  the tick labels.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from workbench.results import VS_DENSE, better, lower_is_better, pareto_front

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
DENSE = "dense baseline"  # the name of the dense run's reference line
# Tick labels of log axes: whole numbers up to 6 digits (100, 200, 500, 8192), powers of ten beyond (1e-6).
LOG_TICKFORMAT = "~g"
# Masks: kept weights dark, pruned ones light (the app's mask pictures and the widgets' heat maps alike).
KEPT_COLOR, PRUNED_COLOR = "#1c3a73", "#f1f1f1"
MASK_COLORSCALE = [[0.0, PRUNED_COLOR], [1.0, KEPT_COLOR]]


def _styles(frame: pd.DataFrame, column: str | None, styles: list[str]) -> dict[str, str]:
    if not column:
        return {}
    return {value: styles[i % len(styles)] for i, value in enumerate(sorted(frame[column].astype(str).unique()))}


def _hover(x: str, y: str, hover: list[str], first: int = 0) -> str:
    extra = "".join(f"<br>{name}: %{{customdata[{first + i}]}}" for i, name in enumerate(hover))
    return f"<b>%{{text}}</b><br>{x}: %{{x}}<br>{y}: %{{y}}{extra}<extra></extra>"


def _values(series: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=float, na_value=np.nan)
    return series.to_numpy(dtype=object)


def _error_bars(series: pd.Series) -> dict:
    spread = pd.to_numeric(series, errors="coerce").fillna(0.0).to_numpy(dtype=float)
    return dict(type="data", array=spread, visible=True, thickness=1.2, width=4)


def grouped_traces(frame: pd.DataFrame, x: str, y: str, *, color: str | None = None, symbol: str | None = None,
                   dash: str | None = None, line_group: str | None = None, mode: str = "markers",
                   hover: list[str] = (), label: str = "label", error_x: str | None = None,
                   error_y: str | None = None, style_frame: pd.DataFrame | None = None,
                   ids: str | None = None) -> list[dict]:
    """One trace (a plain dict) per combination of the ``color`` / ``symbol`` / ``dash`` columns, styled
    consistently across figures of the same data (``style_frame``, default ``frame``, fixes which value
    gets which style: pass the whole table when drawing a part of it). ``line_group`` splits a trace's
    line into one line per value (NaN breaks between them) without adding traces. ``error_x`` /
    ``error_y`` name columns of spreads drawn as error bars (markers only). ``ids`` names a column of run ids
    (or of lists of them: a point that stands for several runs) that each point carries first in its
    ``customdata``, separated by spaces, so that a selection of points names its runs."""
    keys = list(dict.fromkeys(c for c in (color, symbol, dash) if c))
    styled = frame if style_frame is None else style_frame
    colors, symbols, dashes = _styles(styled, color, COLORS), _styles(styled, symbol, SYMBOLS), _styles(styled, dash, DASHES)
    hover = [h for h in dict.fromkeys(hover) if h in frame and h not in (x, y)]
    errors = [e for e in (error_x, error_y) if e and e in frame]
    ids = ids if ids in frame else None
    # copy only the columns drawn (frames read from the store are wide) and sort once
    frame = frame[list(dict.fromkeys([*keys, *([line_group] if line_group else []), x, y, label, *hover, *errors,
                                      *([ids] if ids else [])]))]
    if "lines" in mode:
        frame = frame.sort_values([line_group, x] if line_group else [x], kind="stable")
    groups = frame.groupby([frame[k].astype(str) for k in keys], sort=True) if keys else [((), frame)]
    traces = []
    for values, group in groups:
        named = dict(zip(keys, values if isinstance(values, tuple) else (values,)))
        # numbers stay float arrays (plotly ships them as compact binary); text is an object array
        columns = {axis: _values(group[column]) for axis, column in (("x", x), ("y", y))}
        columns["text"] = group[label].astype(str).to_numpy(dtype=object)
        carried = ([group[ids].map(_id_text)] if ids else []) + [group[h].astype(str) for h in hover]
        if carried:
            columns["customdata"] = np.column_stack([c.to_numpy(dtype=object) for c in carried])
        if line_group:  # a gap (NaN, or None in text) between two lines of one trace breaks the line there
            owner = group[line_group].astype(str).to_numpy()
            cuts = np.flatnonzero(owner[1:] != owner[:-1]) + 1
            columns = {k: np.insert(v, cuts, np.nan if v.dtype.kind == "f" else None, axis=0)
                       for k, v in columns.items()}
        webgl = len(group) > WEBGL_POINTS and "lines" not in mode
        name = ", ".join(named.values()) or y
        trace = dict(
            type="scattergl" if webgl else "scatter", mode=mode, name=name, legendgroup=name,
            hovertemplate=_hover(x, y, hover, first=1 if ids else 0), **columns,
            marker=dict(color=colors.get(named.get(color)), symbol=symbols.get(named.get(symbol))),
            line=dict(color=colors.get(named.get(color)), dash=dashes.get(named.get(dash))))
        if not line_group:
            if error_x and error_x in group:
                trace["error_x"] = _error_bars(group[error_x])
            if error_y and error_y in group:
                trace["error_y"] = _error_bars(group[error_y])
        traces.append(trace)
    return traces


def _id_text(value: Any) -> str:
    """A run id, or the ids of a list of runs separated by spaces."""
    return " ".join(map(str, value)) if isinstance(value, (list, tuple, np.ndarray)) else str(value)


def figure_of(traces: list[dict], layout: Any = None) -> go.Figure:
    """A figure from trusted trace dicts, skipping plotly's per-property validation (the slow part)."""
    return readable(go.Figure(data=traces, layout=layout, _validate=False))


# ---------------------------------------------------------------- axes a reader can read

def axis(title: str, log: bool | None = None, **more: Any) -> dict:
    """A layout axis with a title; ``log`` True: a log axis labelling its ticks with whole numbers, False:
    a linear axis, None: the type plotly infers (categories stay categories)."""
    spec = dict(title=dict(text=title), automargin=True, **more)
    if log:
        spec.update(type="log", tickformat=LOG_TICKFORMAT)
    elif log is not None:
        spec.update(type="linear")
    return spec


def readable(figure: go.Figure) -> go.Figure:
    """Every log axis of ``figure`` labelled with whole numbers (unless it sets its own format), and
    every axis's title kept clear of its tick labels. Returns the figure (changed in place)."""
    def fix(each: Any) -> None:
        if each.type == "log" and not each.tickformat:
            each.tickformat = LOG_TICKFORMAT
        if each.automargin is None:
            each.automargin = True

    figure.for_each_xaxis(fix)
    figure.for_each_yaxis(fix)
    return figure


def axis_titles(figure: go.Figure | dict) -> dict[str, str]:
    """{axis name: title text} of every x/y axis of a figure (or its JSON): what a test asserts on."""
    layout = figure["layout"] if isinstance(figure, dict) else figure.to_plotly_json()["layout"]
    out = {}
    for name, value in layout.items():
        if name.startswith(("xaxis", "yaxis")) and isinstance(value, dict):
            title = value.get("title")
            out[name] = (title.get("text") if isinstance(title, dict) else title) or ""
    return out


# ---------------------------------------------------------------- panels

def _grid(values: list[str], columns: int, title: str, panel_title: Callable[[str], str], x_title: str,
          y_title: str | Mapping[str, str], log_x: bool = False, log_y: bool = False,
          panel_height: int = 320) -> tuple[dict, list[str]]:
    """The layout of one panel per value (plain axis domains: plotly's make_subplots validates every axis
    it creates, which costs more than drawing the data) and each panel's axis suffix ("", "2", ...)."""
    columns = max(1, min(columns, len(values)))
    rows = max(1, -(-len(values) // columns))
    gap_x, gap_y = 0.06, 0.12 if rows > 1 else 0.0
    width, height = (1 - gap_x * (columns - 1)) / columns, (1 - gap_y * (rows - 1)) / rows
    layout: dict = {"title": {"text": title}, "height": panel_height * rows + 110, "annotations": [], "shapes": []}
    suffixes = []
    for index, value in enumerate(values):
        row, col = divmod(index, columns)
        suffix = "" if index == 0 else str(index + 1)
        suffixes.append(suffix)
        left, top = col * (width + gap_x), 1 - row * (height + gap_y)
        panel_y = y_title.get(value, "") if isinstance(y_title, Mapping) else (y_title if col == 0 else "")
        layout[f"xaxis{suffix}"] = {**axis(x_title, log_x or None), "domain": [left, min(1.0, left + width)],
                                    "anchor": f"y{suffix}"}
        layout[f"yaxis{suffix}"] = {**axis(panel_y, log_y or None), "domain": [max(0.0, top - height), top],
                                    "anchor": f"x{suffix}"}
        layout["annotations"].append({"text": panel_title(value), "x": left + width / 2, "y": top, "xref": "paper",
                                      "yref": "paper", "xanchor": "center", "yanchor": "bottom", "showarrow": False})
    return layout, suffixes


def _on_panel(traces: list[dict], suffix: str, shown: set[str]) -> list[dict]:
    """Traces moved onto a panel's axes; a legend entry appears once (its first panel)."""
    for trace in traces:
        trace.update(xaxis=f"x{suffix}", yaxis=f"y{suffix}", showlegend=trace["name"] not in shown)
        shown.add(trace["name"])
    return traces


def facet_figure(frame: pd.DataFrame, facet: str, x: str, y: str, title: str, columns: int = 3,
                 baseline: float | None = None, *, x_title: str | None = None,
                 y_title: str | Mapping[str, str] | None = None, panel_title: Callable[[str], str] | None = None,
                 log_x: bool = False, log_y: bool = False, panel_height: int = 320, **traces: Any) -> go.Figure:
    """``grouped_traces`` in one panel per value of ``facet`` (one legend, one style per value across
    panels), with an optional dashed horizontal ``baseline`` in every panel (e.g. speedup 1 = dense).
    ``y_title`` is the left column's title, or a title per facet value (every panel its own)."""
    values = sorted(frame[facet].astype(str).unique())
    layout, suffixes = _grid(values, columns, title, panel_title or (lambda v: f"{facet} {v}"), x_title or x,
                             y if y_title is None else y_title, log_x, log_y, panel_height)
    data, shown = [], set()
    for value, suffix in zip(values, suffixes):
        if baseline is not None:
            layout["shapes"].append({"type": "line", "xref": f"x{suffix} domain", "yref": f"y{suffix}", "x0": 0,
                                     "x1": 1, "y0": baseline, "y1": baseline,
                                     "line": {"color": "grey", "dash": "dash", "width": 1}})
        members = frame[frame[facet].astype(str) == value]
        data += _on_panel(grouped_traces(members, x, y, style_frame=frame, **traces), suffix, shown)
    return figure_of(data, layout)


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
                 legendgroup=name, text=front[label].astype(str).to_numpy(dtype=object),
                 line=dict(width=2, dash="dot", color=color or "black"),
                 marker=dict(size=12, symbol="circle-open", color=color or "black"),
                 hovertemplate=f"<b>%{{text}}</b><br>on the Pareto front<br>{x}=%{{x:.4g}}<br>{y}=%{{y:.4g}}"
                               "<extra></extra>")
    if "run_id" in front:
        trace["customdata"] = front["run_id"].astype(str).to_numpy(dtype=object)
    return trace


def baseline_trace(frame: pd.DataFrame, x: str, value: float, name: str = DENSE) -> dict:
    """A dashed horizontal line at ``value`` across the x range of ``frame`` (the dense run's quality)."""
    xs = pd.to_numeric(frame[x], errors="coerce").dropna() if x in frame else pd.Series(dtype=float)
    low, high = (float(xs.min()), float(xs.max())) if not xs.empty else (0.0, 1.0)
    if low == high:
        low, high = low - 0.05 * (abs(low) or 1), high + 0.05 * (abs(high) or 1)
    return dict(type="scatter", x=np.array([low, high]), y=np.array([value, value]), mode="lines", name=name,
                legendgroup=name, line=dict(color="grey", dash="dash", width=1.5),
                hovertemplate=f"{name}: {value:.4g}<extra></extra>")


def metric_title(y: str) -> str:
    """A quality axis's title: the metric and which way is better (``perplexity / dense`` for a ratio)."""
    shown = y[: -len(VS_DENSE)] + " / dense" if y.endswith(VS_DENSE) else y
    return f"{shown} ({better(y)} is better)"


def quality_traces(frame: pd.DataFrame, x: str, y: str, *, color: str = "method", symbol: str | None = None,
                   fronts: str = "all runs", label: str = "label", x_title: str | None = None,
                   title: str | None = None, log_y: bool = False, height: int | None = None,
                   baseline: float | None = None, error_x: str | None = None, error_y: str | None = None,
                   style_frame: pd.DataFrame | None = None, ids: str | None = None) -> tuple[list[dict], dict]:
    """(traces, layout) of ``y`` (a quality metric) against ``x`` (a sparsity, a speedup or a parameter
    count): one trace per ``color`` (and ``symbol``) group, the Pareto front of ``fronts``: ``"all
    runs"``, ``"each colour group"`` or ``"off"``, and, given ``baseline``, the dense run's value as a
    dashed line. ``error_x`` / ``error_y`` name columns of spreads (over seeds) drawn as error bars; ``ids``
    a column of the run ids each point carries (``grouped_traces``). Both axes carry titles; the y title
    says which way is better."""
    # the label names method, pattern, sparsity, model and the run id's first characters: no more hover data
    traces = grouped_traces(frame, x, y, color=color, symbol=symbol, label=label, error_x=error_x, error_y=error_y,
                            style_frame=style_frame, ids=ids)
    if fronts == "all runs":
        traces.append(front_trace(frame, x, y, FRONT, label=label))
    elif fronts == "each colour group":
        colors = _styles(frame if style_frame is None else style_frame, color, COLORS)
        for group, members in frame.groupby(frame[color].astype(str)):
            traces.append(front_trace(members, x, y, f"{FRONT}: {group}", colors.get(group), label=label))
    if baseline is not None and not pd.isna(baseline):
        traces.append(baseline_trace(frame, x, float(baseline), DENSE))
    layout = dict(title=dict(text=title or f"{metric_title(y)} against {x_title or x}"),
                  xaxis=axis(x_title or x, log=x == "parameters"), yaxis=axis(metric_title(y), log=log_y),
                  legend=dict(title=dict(text=", ".join(c for c in (color, symbol) if c))))
    if height:
        layout["height"] = height
    return [t for t in traces if t is not None], layout


def quality_figure(frame: pd.DataFrame, x: str, y: str, *, facet: str | None = None,
                   baselines: Mapping[str, float] | None = None, columns: int = 2, **options: Any) -> go.Figure:
    """``quality_traces`` as a figure; with ``facet``, one panel per value of that column (each model its
    own front and its own dense line from ``baselines`` {facet value: dense value}), one legend."""
    baselines = baselines or {}
    if facet is None or frame[facet].nunique(dropna=False) <= 1:
        value = str(frame[facet].iloc[0]) if facet is not None and len(frame) else None
        traces, layout = quality_traces(frame, x, y, baseline=baselines.get(value, options.pop("baseline", None)),
                                        **options)
        if value is not None:
            layout["title"]["text"] += f": {value}"
        return figure_of(traces, layout)
    options.pop("baseline", None)
    height = options.pop("height", None)
    values = sorted(frame[facet].astype(str).unique())
    x_title = options.get("x_title") or x
    layout, suffixes = _grid(values, columns, options.pop("title", None) or f"{metric_title(y)} against {x_title}",
                             str, x_title, metric_title(y), log_x=x == "parameters",
                             log_y=options.get("log_y", False), panel_height=height or 380)
    legend = None
    data, shown = [], set()
    for value, suffix in zip(values, suffixes):
        members = frame[frame[facet].astype(str) == value]
        traces, panel = quality_traces(members, x, y, baseline=baselines.get(value), style_frame=frame, **options)
        legend = panel["legend"]
        data += _on_panel(traces, suffix, shown)
    layout["legend"] = legend
    return figure_of(data, layout)


# ---------------------------------------------------------------- kernel speedups

KERNEL_X_TITLES = {"tokens": "tokens (rows of the input)", "batch": "batch (sequences per decode step)",
                   "size": "tokens (prefill) / batch (decode)", "out_features": "out features",
                   "in_features": "in features", "sparsity": "sparsity"}
KERNEL_Y_TITLES = {"speedup": "speedup over dense", "speedup_steady": "speedup over dense (steady blocks)",
                   "roofline_fraction": "fraction of the roofline floor", "median_us": "median µs"}
LOG_X = ("tokens", "batch", "size")  # counts over decades: 1, 16, 256, 4096


def speedup_figure(frame: pd.DataFrame, x: str = "tokens", y: str = "speedup", *, facet: str | None = None,
                   title: str | None = None, columns: int = 3, baseline: float | None = 1.0,
                   panel_title: Callable[[str], str] | None = None, **traces: Any) -> go.Figure:
    """Kernel (or model) timings against ``x``: one line per ``color`` / ``dash`` / ``line_group``, one panel
    per ``facet`` value (one panel without), a dashed line at ``baseline`` (speedup 1 = dense), a log x
    axis for token and batch counts labelled with whole numbers, both axes titled. The app's Kernels page
    and the widgets' speedup view draw this."""
    if facet is None:
        frame, facet, panel_title = frame.assign(_panel=""), "_panel", (lambda _value: "")
    traces.setdefault("mode", "lines+markers")
    return facet_figure(frame, facet, x, y, title or KERNEL_Y_TITLES.get(y, y), columns=columns,
                        baseline=baseline if y != "median_us" else None, x_title=KERNEL_X_TITLES.get(x, x),
                        y_title=KERNEL_Y_TITLES.get(y, y), log_x=x in LOG_X, panel_title=panel_title, **traces)
