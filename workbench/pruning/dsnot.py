"""DSnoT: training-free prune-and-grow of a sparse mask (Zhang et al., 2024, "Dynamic Sparse No Training:
Training-Free Fine-tuning for Sparse LLMs"), section 3.

Starts from an initial mask (Wanda by default, or magnitude) and only swaps which weights are kept; the
weights themselves never change, nor does any row's (or M-group's) count of kept weights.

Per input column j the calibration activations give a mean mu_j, a variance var_j and Wanda's norm.
Per output row, the expected reconstruction error of the pruned layer is e = sum over pruned j of
W_ij * mu_j (eq. 4). While |e| > ``threshold`` and for at most ``max_cycles`` cycles, every row:

- grows the pruned weight whose W_ij * mu_j / var_j reduces e most: the largest positive one when
  e > 0, the most negative one when e < 0 (eq. 6, the variance term favouring stable inputs);
- prunes the kept weight with the lowest Wanda score among those whose W_ij * mu_j has the sign that
  moves e back toward zero (eq. 7); for N:M, the kept weight of the grown weight's M-group with the
  lowest Wanda score, so that every group keeps N.

A swap is made only when e keeps its sign (no overshoot, as in the authors' code) and |e| decreases; a
row whose swap is refused stops. Each weight moves at most once: grown weights come from the initial
pruned set and pruned ones from the initial kept set.

As in the authors' code (``--skip_layer mlp``, its default), the layers of a block's ``mlp`` keep the
initial mask and only the attention layers are updated (``skip``: "mlp", "self_attn" or "none"); names
are matched as path components, so encoders without an ``mlp`` module (BERT) update every layer, as the
authors' OPT code does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from workbench.pruning.calibrated import CalibratedMethod
from workbench.pruning.registry import Needs, PruneContext
from workbench.pruning.wanda import wanda_mask, wanda_scores
from workbench.values import Pattern

if TYPE_CHECKING:
    import torch
    from torch import nn

    from workbench.pruning.pipeline import GroupPruner, InputStatistics, LayerNeeds, LayerResult


class DSnoTParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    initial: Literal["wanda", "magnitude"] = Field("wanda", description="method that gives the initial mask")
    threshold: float = Field(0.1, ge=0, description="stop a row once |expected error| is at most this")
    max_cycles: int = Field(50, ge=0, le=100_000, description="prune-and-grow cycles at most")
    skip: Literal["mlp", "self_attn", "none"] = Field(
        "mlp", description="layers under this block module keep the initial mask (the authors' default: mlp)")


def skipped(name: str, skip: str) -> bool:
    """Whether layer ``name`` (a qualified module name) lies under a module called ``skip``."""
    return skip != "none" and skip in name.split(".")[:-1]


def _ranked(scores: torch.Tensor, candidates: torch.Tensor, descending: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the candidate columns ordered by score, and how many candidates each row has."""
    import torch

    fill = float("-inf") if descending else float("inf")
    order = torch.sort(torch.where(candidates, scores, fill), dim=1, descending=descending, stable=True).indices
    return order, candidates.sum(1)


def _take(order: torch.Tensor, count: torch.Tensor, pointer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The column at each row's pointer, and whether the pointer is still inside the row's candidates."""
    index = order.gather(1, pointer.clamp(max=order.shape[1] - 1).unsqueeze(1)).squeeze(1)
    return index, pointer < count


def dsnot_mask(weight: torch.Tensor, initial: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
               sq_norm: torch.Tensor, pattern: Pattern, threshold: float = 0.1,
               max_cycles: int = 50) -> tuple[torch.Tensor, dict[str, float]]:
    """Prune-and-grow from ``initial`` (True = kept). Returns the new mask and a summary of the swaps."""
    import torch

    W = weight.float()
    rows = torch.arange(W.shape[0], device=W.device)
    mask = initial.clone()
    contribution = W * mean.float().reshape(1, -1)  # W_ij mu_j
    growth = contribution / var.float().clamp_min(1e-12).reshape(1, -1)
    wanda = wanda_scores(W, sq_norm)
    pruned0, kept0 = ~initial, initial.clone()
    error = (contribution * pruned0).sum(1)
    before = error.abs().mean()

    # growth candidates: initially pruned weights whose removal from e moves it toward zero
    grow_up, grow_up_count = _ranked(growth, pruned0 & (contribution > 0), descending=True)  # for e > 0
    grow_down, grow_down_count = _ranked(growth, pruned0 & (contribution < 0), descending=False)  # for e < 0
    pointers = {key: torch.zeros_like(rows) for key in ("grow_up", "grow_down", "prune_neg", "prune_pos")}
    if not pattern.is_nm:
        # pruning candidates: initially kept weights whose contribution, added to e, moves it toward zero
        prune_neg, prune_neg_count = _ranked(wanda, kept0 & (contribution < 0), descending=False)  # for e > 0
        prune_pos, prune_pos_count = _ranked(wanda, kept0 & (contribution > 0), descending=False)  # for e < 0
    prunable = wanda.masked_fill(~kept0, float("inf"))  # N:M: initially kept, not yet swapped out

    active = error.abs() > threshold
    swaps, cycles = 0, 0
    while cycles < max_cycles and bool(active.any()):
        cycles += 1
        positive = error > 0
        up, up_ok = _take(grow_up, grow_up_count, pointers["grow_up"])
        down, down_ok = _take(grow_down, grow_down_count, pointers["grow_down"])
        grow = torch.where(positive, up, down)
        valid = torch.where(positive, up_ok, down_ok)
        if pattern.is_nm:
            start = grow - grow % pattern.group
            group = start.unsqueeze(1) + torch.arange(pattern.group, device=W.device)
            prune = group.gather(1, prunable.gather(1, group).argmin(1, keepdim=True)).squeeze(1)
            valid &= torch.isfinite(prunable[rows, prune])
        else:
            neg, neg_ok = _take(prune_neg, prune_neg_count, pointers["prune_neg"])
            pos, pos_ok = _take(prune_pos, prune_pos_count, pointers["prune_pos"])
            prune = torch.where(positive, neg, pos)
            valid &= torch.where(positive, neg_ok, pos_ok)
        after = error - contribution[rows, grow] + contribution[rows, prune]
        accept = active & valid & (torch.sign(after) == torch.sign(error)) & (after.abs() < error.abs())
        mask[rows[accept], grow[accept]] = True
        mask[rows[accept], prune[accept]] = False
        prunable[rows[accept], prune[accept]] = float("inf")
        error = torch.where(accept, after, error)
        pointers["grow_up"] += (accept & positive).long()
        pointers["grow_down"] += (accept & ~positive).long()
        pointers["prune_neg"] += (accept & positive).long()
        pointers["prune_pos"] += (accept & ~positive).long()
        swaps += int(accept.sum())
        active = accept & (error.abs() > threshold)
    return mask, {"dsnot_swaps": float(swaps), "dsnot_cycles": float(cycles),
                  "dsnot_error_before": float(before), "dsnot_error_after": float(error.abs().mean())}


def dsnot_pruner(targets: dict[str, float], pattern: Pattern, params: DSnoTParams) -> GroupPruner:
    from workbench.pruning.pipeline import LayerResult

    def prune(modules: dict[str, nn.Linear], stats: InputStatistics) -> dict[str, LayerResult]:
        results = {}
        for name, module in modules.items():
            W = module.weight.detach()
            scores = wanda_scores(W, stats.sq_norm) if params.initial == "wanda" else W.float().abs()
            initial = wanda_mask(scores, targets[name], pattern)
            if skipped(name, params.skip):
                results[name] = LayerResult(initial, extras={"dsnot_skipped": 1.0})
                continue
            mask, summary = dsnot_mask(W, initial, stats.mean, stats.var, stats.sq_norm, pattern,
                                       params.threshold, params.max_cycles)
            results[name] = LayerResult(mask, extras=summary)
        return results

    return prune


class DSnoT(CalibratedMethod):
    name = "dsnot"
    version = "2"  # 2: MLP layers keep the initial mask by default, as the authors' code
    Params = DSnoTParams
    needs = Needs(sq_norm=True, moments=True)

    def pruner(self, context: PruneContext) -> GroupPruner:
        return dsnot_pruner(context.targets, context.pattern, context.params)

    def layer_needs(self, context: PruneContext) -> LayerNeeds:
        # skipped layers keep the initial (Wanda) mask: no moments, whose float64 sums over every token cost
        # more than the initial scores themselves
        skip, initial_only = context.params.skip, Needs(sq_norm=True)
        return lambda name: initial_only if skipped(name, skip) else self.needs


METHOD = DSnoT()
