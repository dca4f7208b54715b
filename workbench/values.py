"""Value types every room shares (specs, methods, kernels, the app): no torch, no store, no circles.

``StrictModel`` is the base of every user-facing spec part; ``Pattern`` says where zeros may go.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a spec must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Fields added after keys were first stored, whose default reproduces the earlier results: left out of
    # the canonical form while at their default, so that stored runs keep their keys.
    KEY_OMITS_AT_DEFAULT: ClassVar[frozenset[str]] = frozenset()


class Pattern(StrictModel):
    """Where zeros may go. ``keep``/``group`` set for N:M (N = kept of every M along the input)."""

    name: Literal["unstructured", "nm"]
    keep: int | None = None
    group: int | None = None

    @classmethod
    def parse(cls, text: str) -> "Pattern":
        text = str(text).strip().lower()
        if text == "unstructured":
            return cls(name="unstructured")
        match = re.fullmatch(r"(\d+)\s*:\s*(\d+)", text)
        if not match:
            raise ValueError(f"unknown pattern {text!r}; use 'unstructured' or 'N:M' (N kept of every M), e.g. '2:4'")
        keep, group = int(match.group(1)), int(match.group(2))
        if not 0 < keep < group:
            raise ValueError(f"pattern {text!r} must keep fewer than it groups: N:M needs 0 < N < M, e.g. '2:4'")
        return cls(name="nm", keep=keep, group=group)

    @property
    def is_nm(self) -> bool:
        return self.name == "nm"

    @property
    def sparsity(self) -> float | None:
        """The sparsity an N:M pattern implies (None when unstructured)."""
        return 1 - self.keep / self.group if self.is_nm else None

    def __str__(self) -> str:
        return f"{self.keep}:{self.group}" if self.is_nm else "unstructured"
