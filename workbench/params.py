"""Validated parameters for anything a spec names (methods, allocations, training methods)."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Iterator

from pydantic import BaseModel, ConfigDict, ValidationError

from workbench.errors import SpecError


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _non_finite(value: Any, where: str) -> Iterator[tuple[str, float]]:
    """Every NaN or infinite number inside ``value``, with its dotted place (a range check reads NaN wrongly)."""
    if isinstance(value, float) and not math.isfinite(value):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _non_finite(item, f"{where}.{index}" if where else str(index))


class HasParams:
    """A named, versioned thing with a pydantic ``Params`` model; unknown parameters are errors."""

    name: ClassVar[str]
    version: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams
    what: ClassVar[str] = "method"  # how error messages call it

    def validate_params(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """The parameters with defaults filled in, as JSON-ready data (they enter the cache key)."""
        for where, value in _non_finite(params or {}, ""):
            raise SpecError(f"{self.what} {self.name!r}: parameter {where!r} is {value}", "give a finite number")
        try:
            return self.Params.model_validate(params or {}).model_dump(mode="json")
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(map(str, first["loc"])) or "params"
            known = ", ".join(self.Params.model_fields) or "none"
            raise SpecError(f"{self.what} {self.name!r}: bad parameter {where!r} ({first['msg']})",
                            f"its parameters are: {known}") from None
