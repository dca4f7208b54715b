"""The method registry: a method is one module in this package and one line in ``METHODS``.

Each module defines ``METHOD``, an instance of a ``PruningMethod`` subclass with a ``name``, a
``version`` (bump it when the algorithm's output changes: it enters the cache key), a pydantic
``Params`` model and ``prune(context) -> PruneOutcome``.

A spec names a method, so validating a spec imports its module: a method module imports torch (and the
mask helpers, the pipeline) inside the functions that compute, never at its top, so that specs validate
and cached jobs answer without torch (tests/test_startup.py checks every registered method).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from workbench.errors import SpecError
from workbench.params import HasParams, NoParams  # noqa: F401 - NoParams re-exported for methods
from workbench.values import Pattern

if TYPE_CHECKING:
    import torch
    from torch import nn

METHODS: dict[str, str] = {
    "dense": "workbench.pruning.dense",
    "random": "workbench.pruning.random",
    "magnitude": "workbench.pruning.magnitude",
    "wanda": "workbench.pruning.wanda",
    "sparsegpt": "workbench.pruning.sparsegpt",
    "dsnot": "workbench.pruning.dsnot",
}


@dataclass
class PruneContext:
    """Everything a method may read. Methods write masks; the job applies them to the weights."""

    model: nn.Module
    layers: dict[str, nn.Module]  # prunable modules by qualified name (Linear, Embedding)
    targets: dict[str, float]  # per-layer target sparsity from the allocation
    pattern: Pattern
    params: BaseModel
    seed: int = 0
    calibration: torch.Tensor | None = None  # (samples, seq_len) token ids when the method needs them
    heldout: torch.Tensor | None = None  # further windows, kept out of the statistics, for recon_error
    extras: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-layer values an allocation records
    allocation_params: dict[str, Any] = field(default_factory=dict)  # the spec's validated allocation_params
    family: str = "causal-lm"
    progress: bool = False
    precision: str = "model"  # calibration forward passes: "model" (its dtype) or "bfloat16" (autocast)


@dataclass
class PruneOutcome:
    masks: dict[str, torch.Tensor]  # bool, True = kept, same shape as the weight
    layer_extras: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Needs:
    """Which statistics of a layer's input a calibrated method reads (``pipeline.InputStatistics``)."""

    sq_norm: bool = False  # Wanda: running mean over sequences of sum_t x_tj^2
    hessian: bool = False  # SparseGPT: H = 2/n sum_sequences X^T X
    moments: bool = False  # DSnoT: per-column mean and variance over tokens


class PruningMethod(HasParams, ABC):
    needs_calibration: ClassVar[bool] = False
    supports_nm: ClassVar[bool] = True

    @abstractmethod
    def prune(self, context: PruneContext) -> PruneOutcome:
        """Masks for every layer in ``context.layers`` (weights may be updated in place)."""


def resolve_method(name: str) -> PruningMethod:
    if name not in METHODS:
        raise SpecError(f"unknown method {name!r}", f"use one of: {', '.join(sorted(METHODS))}")
    return importlib.import_module(METHODS[name]).METHOD
