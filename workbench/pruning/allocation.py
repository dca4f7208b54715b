"""Layer-wise sparsity allocation: how a model-wide target is spread over layers.

An allocation is one module and one line in ``ALLOCATIONS``; it defines ``ALLOCATION`` with
``allocate(context, sparsity) -> {layer: sparsity}``. ``uniform`` gives every layer the target.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from workbench.errors import SpecError

ALLOCATIONS: dict[str, str] = {
    "uniform": "workbench.pruning.allocation",
}


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Allocation(ABC):
    name: ClassVar[str]
    version: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams
    needs_calibration: ClassVar[bool] = False

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.Params.model_validate(params or {}).model_dump(mode="json")
        except ValidationError as err:
            first = err.errors()[0]
            raise SpecError(f"allocation {self.name!r}: bad parameter {'.'.join(map(str, first['loc']))!r} "
                            f"({first['msg']})", f"its parameters are: {', '.join(self.Params.model_fields) or 'none'}") from None

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
