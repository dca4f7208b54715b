"""Magnitude pruning: drop the weights with the smallest |W|.

Layer-wise (``scope: layer``): each matrix prunes exactly its target fraction. Global (``scope:
global``): one ranking across all prunable layers, as torch.nn.utils.prune.global_unstructured does,
so layers end with different sparsities. N:M: in every M consecutive inputs of a row keep the N largest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from workbench.errors import PruningError
from workbench.pruning.registry import PruneContext, PruneOutcome, PruningMethod

if TYPE_CHECKING:
    import torch


class MagnitudeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: Literal["layer", "global"] = "layer"


def global_magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """One exact ranking of |W| over all layers (concatenated in order, like global_unstructured)."""
    import torch

    from workbench.pruning.masks import pruned_count

    flat = torch.cat([w.detach().abs().reshape(-1) for w in weights.values()])
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    prune = pruned_count(flat.numel(), sparsity)
    if prune:
        keep[torch.topk(flat, prune, largest=False).indices] = False
    masks, offset = {}, 0
    for name, weight in weights.items():
        masks[name] = keep[offset : offset + weight.numel()].view_as(weight)
        offset += weight.numel()
    return masks


class Magnitude(PruningMethod):
    name = "magnitude"
    version = "1"
    Params = MagnitudeParams

    def prune(self, context: PruneContext) -> PruneOutcome:
        from workbench.pruning.masks import nm_mask, topk_mask

        weights = {name: m.weight.detach() for name, m in context.layers.items()}
        if context.params.scope == "global":
            if context.pattern.is_nm:
                raise PruningError("global magnitude ranks across layers and cannot produce an N:M pattern",
                                   "use scope: layer with N:M, or an unstructured pattern")
            targets = set(context.targets.values())
            if len(targets) != 1:
                raise PruningError("global magnitude sets per-layer sparsity itself", "use allocation: uniform")
            return PruneOutcome(global_magnitude_masks(weights, targets.pop()))
        if context.pattern.is_nm:
            masks = {n: nm_mask(w.abs(), context.pattern.keep, context.pattern.group) for n, w in weights.items()}
        else:
            masks = {n: topk_mask(w.abs(), context.targets[n]) for n, w in weights.items()}
        return PruneOutcome(masks)


METHOD = Magnitude()
