"""The ``search`` allocation: the per-layer targets of a finished search run.

```yaml
kind: prune
method: wanda
sparsity: 0.7
allocation: search
allocation_params: {run: <the search's run id (or a unique prefix) or its key>}
```
Pruning never reads the store: the prune job resolves ``run`` into the search's per-layer targets
(``layer_stats.target_sparsity`` of the winning candidate) before the run starts
(``workbench.jobs.search.search_targets``) and hands them in as ``allocation_params["targets"]``.
With the database's own method (and its parameters) the run prunes exactly the winning candidate's
number of weights in every layer; its masks come from the usual sequential pipeline, not from the
database (whose levels were all computed from dense activations).

A depth search is named the same way from a structured prune spec (``structure: blocks``), a structured
search from one with its structure and criterion; the prune job reads the kept blocks or the units each
block loses (``workbench.jobs.search.search_blocks``, ``search_widths``) and the structured prune removes
exactly those, so this class never sees them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workbench.errors import PruningError
from workbench.pruning.allocation import Allocation


class SearchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: str = Field("", description="the search run (id, unique prefix, or key) whose allocation is applied")

    @model_validator(mode="after")
    def _named(self) -> "SearchParams":
        if not self.run.strip():
            raise ValueError("allocation search needs allocation_params.run: the id or key of a finished search run")
        return self


class SearchAllocation(Allocation):
    name = "search"
    version = "1"
    Params = SearchParams

    def allocate(self, context: Any, sparsity: float) -> dict[str, float]:
        targets = context.allocation_params.get("targets")
        if targets is None:
            raise PruningError("the search allocation's per-layer targets were not handed in",
                               "run the prune spec through the prune job (workbench run), which reads them "
                               "from the search run")
        missing = sorted(set(context.layers) - set(targets))
        if missing:
            raise PruningError(f"the search run holds no target for layer {missing[0]}",
                               "prune the same layers of the same model the search ran on")
        return {name: float(targets[name]) for name in context.layers}


ALLOCATION = SearchAllocation()
