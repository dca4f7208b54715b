"""Validated parameters for anything a spec names (methods, allocations, training methods)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from workbench.errors import SpecError


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HasParams:
    """A named, versioned thing with a pydantic ``Params`` model; unknown parameters are errors."""

    name: ClassVar[str]
    version: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams
    what: ClassVar[str] = "method"  # how error messages call it

    def validate_params(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """The parameters with defaults filled in, as JSON-ready data (they enter the cache key)."""
        try:
            return self.Params.model_validate(params or {}).model_dump(mode="json")
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(map(str, first["loc"])) or "params"
            known = ", ".join(self.Params.model_fields) or "none"
            raise SpecError(f"{self.what} {self.name!r}: bad parameter {where!r} ({first['msg']})",
                            f"its parameters are: {known}") from None
