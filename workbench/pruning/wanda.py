"""Wanda: pruning by weights and activations (Sun, Liu, Bair and Kolter, 2023, "A Simple and Effective
Pruning Approach for Large Language Models").

Score (eq. 1): S_ij = |W_ij| * ||X_j||_2, the weight's magnitude times the L2 norm of its input column
over the calibration tokens. No weight is updated.

Comparison group (section 3, "per output"): each output row. Every row prunes the same number of
weights, int(sparsity * columns), so per-row sparsity is exact. N:M (N kept of every M consecutive
inputs of a row) ranks the weights of each M-group by the same score. Ties within a row are broken by
column order (the lower index is pruned first), as in the authors' and llmcompressor's stable sort.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.pruning.calibrated import CalibratedMethod
from workbench.pruning.registry import Needs, PruneContext
from workbench.values import Pattern

if TYPE_CHECKING:
    import torch
    from torch import nn

    from workbench.pruning.pipeline import GroupPruner, InputStatistics, LayerResult


def wanda_scores(weight: torch.Tensor, sq_norm: torch.Tensor) -> torch.Tensor:
    """S = |W| * sqrt(sq_norm) in float32, sq_norm being the per-column sum of squared activations."""
    import torch

    return weight.float().abs() * torch.sqrt(sq_norm.float().reshape(1, -1))


def wanda_mask(scores: torch.Tensor, sparsity: float, pattern: Pattern) -> torch.Tensor:
    """Wanda's mask from its scores: per-row unstructured, or N:M within each row's M-groups."""
    from workbench.pruning.masks import nm_kept, nm_prune_mask, row_topk_mask

    if pattern.is_nm:
        return nm_prune_mask(scores, nm_kept(pattern, sparsity), pattern.group)
    return row_topk_mask(scores, sparsity)


def wanda_pruner(targets: dict[str, float], pattern: Pattern) -> GroupPruner:
    from workbench.pruning.pipeline import LayerResult

    def prune(modules: dict[str, nn.Linear], stats: InputStatistics) -> dict[str, LayerResult]:
        return {name: LayerResult(wanda_mask(wanda_scores(m.weight, stats.sq_norm), targets[name], pattern))
                for name, m in modules.items()}

    return prune


class Wanda(CalibratedMethod):
    name = "wanda"
    version = "1"
    needs = Needs(sq_norm=True)

    def pruner(self, context: PruneContext) -> GroupPruner:
        return wanda_pruner(context.targets, context.pattern)


METHOD = Wanda()
