"""The run picker: filter the store's runs as the app does, and choose some of them.

Other views link to a picker: they redraw when its filtered runs change (``version``) or when the
selection changes (``selected``). ``chosen`` is the selection, or every filtered run when nothing is
selected, so a view shows something useful before the user clicks.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import pandas as pd
import traitlets

from workbench import api
from workbench.errors import SpecError
from workbench.results import run_labels
from workbench.widgets._view import set_options

FILTERS = ("kind", "model", "data", "method", "pattern", "allocation", "status")
ANY = "(any)"


def label_map(frame: pd.DataFrame) -> dict[str, str]:
    """Run id -> ``results.run_label`` of every run in a runs table."""
    return dict(zip(frame["run_id"], run_labels(frame))) if "run_id" in frame else {}


class RunPicker(widgets.VBox):
    """Dropdown filters over the run table (kind, model, data, method, pattern, allocation, status)
    and a multi-select list of the runs that pass them."""

    version = traitlets.Int(0, help="bumped whenever the filtered runs change")
    selected = traitlets.List(traitlets.Unicode(), help="run ids selected in the list")

    def __init__(self, store: api.StoreLike = None, **filters: Any):
        unknown = sorted(set(filters) - set(FILTERS))
        if unknown:
            raise SpecError(f"unknown run filter {unknown[0]!r}", f"the picker filters on: {', '.join(FILTERS)}")
        self.store = api.open_store(store)
        self.all_runs = pd.DataFrame()
        self.runs = pd.DataFrame()
        self._quiet = False
        self.filters = {name: widgets.Dropdown(description=name, options=[ANY], value=ANY,
                                               layout=widgets.Layout(width="230px"))
                        for name in FILTERS}
        self.run_list = widgets.SelectMultiple(options=[], rows=8, description="runs",
                                               layout=widgets.Layout(width="720px"))
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh",
                                             tooltip="read the store again")
        self.count = widgets.HTML()
        super().__init__([widgets.HBox(list(self.filters.values())[:4]),
                          widgets.HBox([*list(self.filters.values())[4:], self.refresh_button]),
                          self.run_list, self.count])
        for dropdown in self.filters.values():
            dropdown.observe(self._filters_changed, names="value")
        self.run_list.observe(self._selection_changed, names="value")
        self.refresh_button.on_click(lambda _button: self.refresh())
        self.refresh(**({"status": "finished"} | filters))

    # ------------------------------------------------------------ reading
    def refresh(self, **filters: Any) -> None:
        """Read the store again (after a job wrote to it); ``filters`` set dropdowns by name."""
        self.all_runs = api.runs(store=self.store)
        self._quiet = True
        try:
            for name, dropdown in self.filters.items():
                values = sorted(str(v) for v in self.all_runs[name].dropna().unique()) if name in self.all_runs else []
                wanted = filters.get(name, dropdown.value)
                set_options(dropdown, [ANY, *values], keep=False)
                dropdown.value = wanted if wanted in dropdown.options else ANY
        finally:
            self._quiet = False
        self._apply()

    def _filters_changed(self, _change: Any) -> None:
        if not self._quiet:
            self._apply()

    def _apply(self) -> None:
        chosen = {name: d.value for name, d in self.filters.items() if d.value != ANY}
        frame = api.filter_runs(self.all_runs, **chosen) if not self.all_runs.empty else self.all_runs
        self.runs = frame.reset_index(drop=True)
        keep = [run_id for run_id in self.selected if run_id in set(self.runs.get("run_id", []))]
        self._quiet = True
        try:
            self.run_list.options = list(zip(run_labels(self.runs), self.runs.get("run_id", [])))
            self.run_list.value = tuple(keep)
        finally:
            self._quiet = False
        self.count.value = f"{len(self.runs)} of {len(self.all_runs)} runs"
        self.selected = keep
        self.version += 1

    def _selection_changed(self, change: Any) -> None:
        if not self._quiet:
            self.selected = list(change["new"])

    # ------------------------------------------------------------ what views read
    def select(self, run_ids: list[str]) -> None:
        """Select runs from code (as a click in the list would)."""
        self.run_list.value = tuple(r for r in run_ids if r in set(self.runs["run_id"]))

    @property
    def chosen(self) -> pd.DataFrame:
        """The selected runs, or every filtered run when none is selected."""
        if self.runs.empty or not self.selected:
            return self.runs
        return self.runs[self.runs["run_id"].isin(self.selected)].reset_index(drop=True)
