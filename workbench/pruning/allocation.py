"""Layer-wise sparsity allocation: how a model-wide target is spread over layers.

An allocation is one module and one line in ``ALLOCATIONS``; it defines ``ALLOCATION`` with
``allocate(context, sparsity) -> {layer: sparsity}``. ``uniform`` gives every layer the target.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from workbench.errors import SpecError
from workbench.params import HasParams

ALLOCATIONS: dict[str, str] = {
    "uniform": "workbench.pruning.allocation",
    "owl": "workbench.pruning.owl",
    "search": "workbench.search.allocation",  # a finished search run's per-layer targets (handed in by the prune job)
}


class Allocation(HasParams, ABC):
    what: ClassVar[str] = "allocation"
    needs_calibration: ClassVar[bool] = False

    @abstractmethod
    def allocate(self, context: Any, sparsity: float) -> dict[str, float]:
        """Per-layer target sparsity for every layer of ``context.layers``."""


class Uniform(Allocation):
    name = "uniform"
    version = "1"

    def allocate(self, context: Any, sparsity: float) -> dict[str, float]:
        return {name: sparsity for name in context.layers}


ALLOCATION = Uniform()


def resolve_allocation(name: str) -> Allocation:
    if name not in ALLOCATIONS:
        raise SpecError(f"unknown allocation {name!r}", f"use one of: {', '.join(sorted(ALLOCATIONS))}")
    return importlib.import_module(ALLOCATIONS[name]).ALLOCATION
