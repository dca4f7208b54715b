"""OWL: outlier-weighted layer-wise sparsity (Yin et al., 2024, "Outlier Weighed Layerwise Sparsity (OWL):
A Missing Secret Sauce for Pruning LLMs to High Sparsity"), section 4.

One dense pass over the calibration windows gives Wanda's scores A_ij = |W_ij| * ||X_j|| for every linear
layer. For transformer block l, with all its layers' scores taken together, the layer outlier distribution
D_l is the fraction of scores greater than M times their mean (eq. 3). D is min-max normalised to
[0, 2 lambda] and the block's sparsity is s_l = s - (D'_l - mean(D')), the mean weighted by each block's
parameter count, so that the model-wide sparsity stays s exactly; blocks with more outliers are pruned
less. The paper intends s_l to lie in [s - lambda, s + lambda]; when a skewed D would push a block past
that band, the deviations are scaled down together until the farthest one is lambda away (the mean is
kept), and ``owl_scaled`` records it. Every linear layer of block l is then pruned at s_l by the method
of the spec (magnitude, Wanda, SparseGPT, DSnoT).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from workbench.errors import PruningError
from workbench.pruning.allocation import Allocation
from workbench.pruning.registry import Needs
from workbench.pruning.wanda import wanda_scores

if TYPE_CHECKING:  # a spec names an allocation: this module imports without torch (see pruning/registry.py)
    import torch
    from torch import nn

    from workbench.pruning.pipeline import InputStatistics, LayerResult


class OWLParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lam: float = Field(0.08, ge=0, lt=1, description="lambda: block sparsities stay within sparsity +- lambda")
    m: float = Field(5.0, gt=0, description="M: a score is an outlier above M times its block's mean score")


def block_outlier_ratios(weights: list[dict[str, torch.Tensor]], sq_norms: dict[str, torch.Tensor],
                         m: float) -> list[float]:
    """D_l per block: fraction of the block's Wanda scores above m times the block's mean score."""
    ratios = []
    for block in weights:
        scores = [wanda_scores(w, sq_norms[name]) for name, w in block.items()]
        total = sum(float(s.double().sum()) for s in scores)
        count = sum(s.numel() for s in scores)
        threshold = m * total / count
        ratios.append(sum(int((s > threshold).sum()) for s in scores) / count)
    return ratios


def owl_sparsities(ratios: list[float], sizes: list[int], sparsity: float, lam: float) -> tuple[list[float], bool]:
    """Block sparsities from outlier ratios (section 4); also whether the deviations had to be scaled."""
    if sparsity + lam >= 1 or sparsity - lam < 0:
        raise PruningError(f"OWL with sparsity {sparsity:g} and lambda {lam:g} would ask for a block sparsity "
                           "outside [0, 1)", f"use lambda below {min(sparsity, 1 - sparsity):g}")
    import torch

    D = torch.tensor(ratios, dtype=torch.float64)
    weights = torch.tensor(sizes, dtype=torch.float64)
    spread = float(D.max() - D.min())
    if spread == 0:
        return [sparsity] * len(ratios), False
    normalised = (D - D.min()) / spread * 2 * lam
    deviation = normalised - (normalised * weights).sum() / weights.sum()
    farthest = float(deviation.abs().max())
    scaled = farthest > lam * (1 + 1e-9)  # not for rounding noise
    if scaled:
        deviation *= lam / farthest
    return (sparsity - deviation).tolist(), scaled


class OWL(Allocation):
    name = "owl"
    version = "1"
    Params = OWLParams
    needs_calibration = True

    def allocate(self, context: Any, sparsity: float) -> dict[str, float]:
        params = OWLParams.model_validate(context.allocation_params)
        return owl_targets(context, sparsity, params)


def owl_targets(context: Any, sparsity: float, params: OWLParams) -> dict[str, float]:
    """Run the dense statistics pass and turn the outlier ratios into per-layer targets; the ratios go to
    ``context.extras`` so that the layer stats show why each block got its sparsity."""
    from workbench.pruning.pipeline import block_layers, run_pipeline

    sq_norms: dict[str, torch.Tensor] = {}

    def observe(modules: dict[str, nn.Linear], stats: InputStatistics) -> dict[str, LayerResult]:
        for name in modules:
            sq_norms[name] = stats.sq_norm.clone()
        return {}

    run_pipeline(context.model, context.layers, context.calibration, Needs(sq_norm=True), observe,
                 observe_only=True, progress=context.progress, desc="owl", precision=context.precision)
    blocks = [{name: m.weight.detach() for name, m in block.items()}
              for block in block_layers(context.model, context.layers) if block]
    ratios = block_outlier_ratios(blocks, sq_norms, params.m)
    sizes = [sum(w.numel() for w in block.values()) for block in blocks]
    block_sparsity, scaled = owl_sparsities(ratios, sizes, sparsity, params.lam)
    targets = {}
    for block, ratio, target in zip(blocks, ratios, block_sparsity):
        for name in block:
            targets[name] = target
            context.extras.setdefault(name, {}).update(
                {"owl_outlier_ratio": ratio, **({"owl_scaled": True} if scaled else {})})
    return targets


ALLOCATION = OWL()
