"""Launch a sweep from a notebook: YAML in a text box, a progress bar, results in the same store.

The sweep runs through ``api.sweep`` (so finished keys come from the cache and only what is missing
executes); the bar advances as each job finishes, and linked pickers re-read the store at the end.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
import pandas as pd
import yaml

from workbench import api
from workbench.errors import WorkbenchError
from workbench.runner import RunResult
from workbench.spec import JobSpec, parse_yaml
from workbench.widgets.picker import RunPicker

DEFAULT_SWEEP: dict[str, Any] = {
    "base": {"model": "smollm2-135m", "data": "shakespeare"},
    "grid": {"method": ["magnitude", "random"], "sparsity": [0.5, 0.7]},
    "include": [{"method": "dense"}],
}
RESULT_COLUMNS = ["run_id", "job", "status", "cached", "wall_s", "sparsity", "perplexity", "accuracy", "error"]


class SweepLauncher(widgets.VBox):
    """A sweep editor with a Run button and a progress bar; writes into the picker's store."""

    def __init__(self, store: api.StoreLike = None, sweep: dict[str, Any] | None = None,
                 pickers: list[RunPicker] | tuple[RunPicker, ...] = ()):
        self.store = api.open_store(store)
        self.pickers = list(pickers)
        self.text = widgets.Textarea(value=yaml.safe_dump(sweep or DEFAULT_SWEEP, sort_keys=False),
                                     layout=widgets.Layout(width="720px", height="180px"))
        self.button = widgets.Button(description="Run sweep", button_style="primary", icon="play")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="0 / 0")
        self.status = widgets.HTML()
        self.table = widgets.HTML()
        self.results = pd.DataFrame(columns=RESULT_COLUMNS)
        super().__init__([self.text, widgets.HBox([self.button, self.progress]), self.status, self.table])
        self.button.on_click(lambda _button: self.launch())

    def launch(self) -> pd.DataFrame:
        """Run the sweep in the text box; returns (and shows) one row per job."""
        self.button.disabled = True
        try:
            try:
                specs = api.sweep_specs(parse_yaml(self.text.value, "the sweep") or {})  # refuses keys given twice
            except WorkbenchError as err:
                self.status.value = f"<b>cannot run:</b> {html.escape(str(err), quote=False)}"
                return self.results
            self.progress.max, self.progress.value = max(len(specs), 1), 0
            self.progress.description = f"0 / {len(specs)}"
            self.status.value = f"running {len(specs)} jobs (finished ones come from the cache)"
            self.results = api.sweep(specs, store=self.store, progress=False, on_result=self._job_done)
            failed = int((self.results["status"] == "failed").sum()) if not self.results.empty else 0
            cached = int(self.results["cached"].sum()) if not self.results.empty else 0
            self.status.value = f"done: {len(specs) - cached - failed} ran, {cached} from the cache, {failed} failed"
            self._show()
            for picker in self.pickers:
                picker.refresh()
            return self.results
        finally:
            self.button.disabled = False

    def _job_done(self, _spec: JobSpec, _result: RunResult) -> None:
        self.progress.value += 1
        self.progress.description = f"{self.progress.value} / {self.progress.max}"

    def _show(self) -> None:
        columns = [c for c in RESULT_COLUMNS if c in self.results]
        self.table.value = self.results[columns].to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="")
