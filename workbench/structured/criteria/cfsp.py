"""CFSP: coarse-to-fine structured pruning from one forward pass (Wang, Ma, Wang, Chen, Fan, Shan, Yang, Xu,
Liu and Qin, 2024, "CFSP: An Efficient Structured Pruning Framework for LLMs with Coarse-to-Fine Activation
Information").

Coarse (between blocks): a block's importance is the angular distance between its input and output hidden
states, averaged over the calibration tokens t,

    I_l = mean_t arccos( <x_t^l, x_t^{l+1}> / (||x_t^l|| ||x_t^{l+1}||) ) / pi,

and the blocks share the sparsity budget s through a sigmoid of the centred importances,

    r_l = (1 - s) * sigma(a (I_l - mean I)) / mean_k sigma(a (I_k - mean I)),    s_l = 1 - r_l,

so that the keep ratios r_l average 1 - s and more important blocks keep more. When a ratio would reach 1 (or
0), all deviations r_l - (1 - s) are scaled down together, to at most s / 1.05 above (as the released code)
and (1 - s) / 1.05 below; the mean is unchanged. The released code applies the sigmoid to sums over
128 x 2048 tokens divided by 1e4, i.e. a slope of about 26 a on the per-token means used here: ``slope``
(default 25) is that product.

Fine (within a block): MLP channel j, with W_down (d x m), W_up and W_gate (m x d) and a_j = ||X^down_j||
(the norm over calibration tokens of channel j's activation), scores

    S_j = ( mean_i A_ij / sum_j' A_ij'  +  sum_{W in up, gate} mean_k |W_jk| / sum_j' |W_j'k| ) * a_j^c,
    A_ij = |W_down[i, j]| * a_j^b:

each weight's share among the weights that compete with it across channels (the same output of down, the
same input of up/gate), times the activation. The released code divides each weight by the sum over its own
channel's weights instead; averaged per channel that share is the constant 1/d, so its ranking reduces to
a_j^c. The share across channels (RIA's relative importance, Zhang et al., 2024, which CFSP builds on) keeps
the weights in the score. Channel j of block l is removed when it is among the s_l * m lowest. As in the
released code only MLP channels are pruned (``allocation = "by_block"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from workbench.structured.criteria import Criterion

if TYPE_CHECKING:
    import torch

    from workbench.structured.layout import MLP
    from workbench.structured.stats import LayerStatistics, Statistics


class CFSPParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slope: float = Field(25.0, ge=0, description="a: sigmoid slope on centred per-token angular distances")
    b: float = Field(1.0, description="exponent of the activation norm inside the down_proj share")
    c: float = Field(1.0, description="exponent of the activation norm multiplying the shares")


def block_keep_ratios(importance: torch.Tensor, sparsity: float, slope: float) -> torch.Tensor:
    """r_l from the block importances I_l: mean exactly 1 - sparsity, every ratio inside (0, 1)."""
    import torch

    importance = importance.double()
    keep = 1.0 - sparsity
    sig = torch.sigmoid(slope * (importance - importance.mean()))
    deviation = keep * sig / sig.mean() - keep
    above, below = float(deviation.max()), float(-deviation.min())
    scale = 1.0
    if above > 0:
        scale = min(scale, sparsity / 1.05 / above)
    if below > 0:
        scale = min(scale, keep / 1.05 / below)
    return (keep + deviation * scale).float()


def channel_shares(mlp: MLP, norm: torch.Tensor, b: float = 1.0, c: float = 1.0) -> torch.Tensor:
    """S_j of the fine-grained step for every intermediate channel j."""
    norm = norm.float()
    down = mlp.output.weight.float().abs() * norm.reshape(1, -1).pow(b)  # (d, m)
    share = (down / down.sum(1, keepdim=True).clamp_min(1e-30)).mean(0)
    for linear in mlp.inputs:  # (m, d): share of channel j among the channels that read input k
        weight = linear.weight.float().abs()
        share = share + (weight / weight.sum(0, keepdim=True).clamp_min(1e-30)).mean(1)
    return share * norm.pow(c)


class CFSP(Criterion):
    name = "cfsp"
    version = "1"
    Params = CFSPParams
    structures = frozenset({"channels"})
    allocation = "by_block"
    needs_inputs = True
    needs_blocks = True

    def channel_scores(self, mlp: MLP, stats: LayerStatistics | None, params: CFSPParams) -> torch.Tensor:
        return channel_shares(mlp, stats.channels.norm, params.b, params.c)

    def layer_fractions(self, stats: Statistics, mean_fraction: float, params: CFSPParams) -> list[float]:
        return (1 - block_keep_ratios(stats.block_angular, mean_fraction, params.slope)).tolist()


CRITERION = CFSP()
