"""Structured criteria: how important each attention head, MLP channel or block is.

A criterion is one module in this package and one line in ``CRITERIA``; the module defines ``CRITERION``, an
instance of a ``Criterion`` subclass with a ``name``, a ``version`` (bump it when scores change), a pydantic
``Params`` model, the structures it scores and how removal counts are spread over layers (``allocation``):

* ``uniform``: scores are compared within a layer only; every layer loses the same fraction;
* ``global``: scores are comparable across layers and modules; one threshold for the whole model;
* ``by_block``: the criterion gives each block its own fraction (``layer_fractions``).

Scores are higher for more important structures. Head scores are per key/value group (``unit="group"``: the
kv head with all its query heads) or per query head (``unit="query"``).

A spec names a criterion, so validating a spec imports its module: criterion modules import torch (and the
layout, statistics and surgery modules) inside the functions that compute, never at their top, so that specs
validate without torch (tests/test_startup.py checks every registered criterion).
"""

from __future__ import annotations

import importlib
from abc import ABC
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from workbench.errors import SpecError
from workbench.params import HasParams, NoParams  # noqa: F401 - NoParams re-exported for criteria

if TYPE_CHECKING:
    import torch
    from torch import nn

    from workbench.structured.layout import MLP, Attention
    from workbench.structured.stats import LayerStatistics, Statistics

# what a spec's `structure` removes: the kinds of units a criterion must score for it
STRUCTURES: dict[str, tuple[str, ...]] = {
    "heads": ("heads",),
    "channels": ("channels",),
    "blocks": ("blocks",),
    "heads+channels": ("heads", "channels"),
}

CRITERIA: dict[str, str] = {
    "magnitude-sp": "workbench.structured.criteria.magnitude_sp",
    "wanda-sp": "workbench.structured.criteria.wanda_sp",
    "flap": "workbench.structured.criteria.flap",
    "cfsp": "workbench.structured.criteria.cfsp",
    "block-influence": "workbench.structured.criteria.block_influence",
}


class Criterion(HasParams, ABC):
    what: ClassVar[str] = "criterion"
    structures: ClassVar[frozenset[str]]  # of "heads", "channels", "blocks"
    allocation: ClassVar[str] = "uniform"  # "uniform", "global" or "by_block"
    needs_inputs: ClassVar[bool] = False  # projection input statistics (stats.LayerStatistics)
    needs_blocks: ClassVar[bool] = False  # block input/output similarities

    def params(self, params: dict[str, Any] | None) -> BaseModel:
        """Validated parameters (unknown or bad ones are a SpecError)."""
        return self.Params.model_validate(self.validate_params(params))

    def head_scores(self, attention: Attention, stats: LayerStatistics | None, unit: str,
                    params: BaseModel) -> torch.Tensor:
        """Per key/value group (``unit="group"``) or per query head (``unit="query"``)."""
        raise NotImplementedError

    def channel_scores(self, mlp: MLP, stats: LayerStatistics | None, params: BaseModel) -> torch.Tensor:
        """Per intermediate channel."""
        raise NotImplementedError

    def block_scores(self, stats: Statistics, params: BaseModel) -> torch.Tensor:
        """Per block."""
        raise NotImplementedError

    def layer_fractions(self, stats: Statistics, mean_fraction: float, params: BaseModel) -> list[float]:
        """Per-block fraction of units to remove, averaging ``mean_fraction`` (``allocation == "by_block"``)."""
        raise NotImplementedError

    def before_shrink(self, model: nn.Module, stats: Statistics | None, head_keep: dict[int, torch.Tensor],
                      channel_keep: dict[int, torch.Tensor], params: BaseModel) -> None:
        """A last change to the weights once the kept structures are known (FLAP's bias compensation)."""


def resolve_criterion(name: str) -> Criterion:
    if name not in CRITERIA:
        raise SpecError(f"unknown structured criterion {name!r}", f"use one of: {', '.join(sorted(CRITERIA))}")
    return importlib.import_module(CRITERIA[name]).CRITERION


def head_blocks_of_rows(weight: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(out, in) weight of q/k/v viewed as (heads, head_dim, in)."""
    return weight.reshape(-1, head_dim, weight.shape[-1])


def head_blocks_of_columns(weight: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(out, heads * head_dim) weight of o viewed as (out, heads, head_dim)."""
    return weight.reshape(weight.shape[0], -1, head_dim)


def per_unit(query: torch.Tensor, kv: torch.Tensor, group_size: int, unit: str) -> torch.Tensor:
    """Additive per-head quantities to per-unit ones: a group is its query heads plus its kv head."""
    if unit == "query":
        return query
    if unit == "group":
        return query.reshape(-1, group_size).sum(1) + kv
    raise SpecError(f"unknown head unit {unit!r}", "use 'group' (whole key/value groups) or 'query'")
