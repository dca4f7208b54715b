"""Dense training: the baseline every sparse method is compared with. No mask, nothing held to zero."""

from __future__ import annotations

from typing import ClassVar

from workbench.training.registry import TrainingMethod


class Dense(TrainingMethod):
    name: ClassVar[str] = "dense"
    version: ClassVar[str] = "1"
