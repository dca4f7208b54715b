"""Jupyter widgets over the result store (ipywidgets 8, plotly FigureWidget).

Each view reads through ``workbench.queries`` (as the app does) and redraws when its controls or its
linked ``RunPicker`` change; compose them with your own widgets, or take them all at once:

```python
from workbench.widgets import Dashboard
Dashboard("store/workbench.duckdb")
```
"""

from __future__ import annotations

import ipywidgets as widgets

from workbench import api
from workbench.widgets.allocation import AllocationView
from workbench.widgets.compare import CompareView
from workbench.widgets.kernels import KernelSpeedupView
from workbench.widgets.launcher import SweepLauncher
from workbench.widgets.mask_viewer import MaskViewer
from workbench.widgets.picker import RunPicker
from workbench.widgets.training import TrainingCurveView


class Dashboard(widgets.VBox):
    """One picker above tabs of every view, all linked to it; the launcher refreshes the picker."""

    def __init__(self, store: api.StoreLike = None, sweep: dict | None = None, **filters: object):
        self.picker = RunPicker(store, **filters)
        self.compare = CompareView(self.picker)
        self.allocation = AllocationView(self.picker)
        self.masks = MaskViewer(self.picker)
        self.training = TrainingCurveView(self.picker)
        self.kernels = KernelSpeedupView(self.picker)
        self.launcher = SweepLauncher(self.picker.store, sweep, pickers=[self.picker])
        views = {"compare": self.compare, "allocation": self.allocation, "masks": self.masks,
                 "training": self.training, "kernels": self.kernels, "launch": self.launcher}
        tabs = widgets.Tab(children=list(views.values()), titles=list(views))
        super().__init__([self.picker, tabs])


__all__ = ["AllocationView", "CompareView", "Dashboard", "KernelSpeedupView", "MaskViewer", "RunPicker",
           "SweepLauncher", "TrainingCurveView"]
