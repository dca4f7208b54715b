"""What every view shares: a plotly FigureWidget under a row of controls, redrawn when its inputs change.

A view listens to its controls and, when it has one, to a ``RunPicker`` (its filtered runs and its
selection). ``update`` re-reads the store through the query layer and replaces the figure's traces in
one batch, so the browser sees one change per interaction.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import ipywidgets as widgets
import plotly.graph_objects as go

from workbench.figures import readable

FIGURE_HEIGHT = 420


def new_figure(title: str = "", figure: go.Figure | None = None, **layout: Any) -> go.FigureWidget:
    widget = go.FigureWidget(figure)
    widget.update_layout(title=title, height=FIGURE_HEIGHT, margin=dict(l=60, r=20, t=50, b=50), **layout)
    return widget


def replace_traces(figure: go.FigureWidget, traces: Sequence[go.BaseTraceType | dict], **layout: Any) -> None:
    """New traces and layout in one batch; log axes labelled with whole numbers (``figures.readable``)."""
    with figure.batch_update():
        figure.data = []
        if traces:
            figure.add_traces(list(traces))
        if layout:
            figure.update_layout(**layout)
        readable(figure)


def set_options(dropdown: widgets.Dropdown, options: Sequence[Any], keep: bool = True) -> None:
    """New options (values, or (label, value) pairs) for a dropdown, keeping its value where it is
    still offered, else taking the first."""
    value = dropdown.value
    options = list(options)
    values = [o[1] if isinstance(o, tuple) else o for o in options]
    if list(dropdown.options) != options:
        dropdown.options = options
    if keep and value in values:
        dropdown.value = value
    elif values and dropdown.value not in values:
        dropdown.value = values[0]


class View(widgets.VBox):
    """A figure with controls; each subclass defines ``update()``, which redraws it from the store."""

    def __init__(self, controls: Sequence[widgets.Widget], figure: go.FigureWidget, picker: Any = None,
                 footer: Sequence[widgets.Widget] = ()):
        self.picker = picker
        self.figure = figure
        self._quiet = False
        children = ([widgets.HBox(list(controls))] if controls else []) + [figure, *footer]
        super().__init__(children)
        for control in controls:
            if hasattr(control, "value"):
                control.observe(self._changed, names="value")
        if picker is not None:
            picker.observe(self._changed, names=["version", "selected"])

    def _changed(self, _change: Any = None) -> None:
        if not self._quiet:
            self.update()  # defined by each view

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """Change controls without redrawing for each change (one ``update`` afterwards)."""
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False
