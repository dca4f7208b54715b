"""FLAP: fluctuation-based adaptive structured pruning (An, Zhao, Yu, Tang and Wang, 2024, "Fluctuation-based
Adaptive Structured Pruning for Large Language Models", AAAI).

Fluctuation metric (the paper's structured importance metric): input feature j of an output projection W
(o_proj for heads, down_proj for channels) is scored by how much its input fluctuates over the N calibration
tokens, weighted by the squared norm of the weight column it feeds:

    S_j = 1/(N-1) sum_n (X_nj - mean_n X_nj)^2 * ||W_:,j||_2^2

(the token variance is taken here with 1/N: a common factor that standardisation cancels). A head's score is
the mean over its head_dim features, a key/value group's the mean over the features of all its query heads
(as GQA ports of the released code do).

Adaptive structure search: scores are standardised per layer and module, Z = (S - mean(S)) / std(S) over the
o_proj features or the down_proj channels of one layer; then all heads and channels of all layers are ranked
together and removed in ascending Z until the removed parameters come closest to the target (each unit
weighted by its parameter count, as the released code weighs a Llama-7B head 512/3 channels).
``allocation = "global"``.

Baseline bias compensation: a removed feature is replaced by its calibration mean, so its mean contribution
moves into the bias of the output projection:

    W X + b  ~  W[:, kept] X_kept + (b + W[:, removed] mean(X_removed))

``compensate`` (default on) does this; Llama gets the biases through ``attention_bias`` / ``mlp_bias``, which
also give q/k/v (gate/up) zero biases (see ``shrink.ensure_output_bias``); they count in the achieved
fraction. The released code squares the attention metric before standardising; ``square_attention``
reproduces that (off by default: the formula above).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from workbench.structured.criteria import Criterion

if TYPE_CHECKING:
    import torch
    from torch import nn

    from workbench.structured.layout import MLP, Attention
    from workbench.structured.stats import LayerStatistics, Statistics


class FLAPParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    compensate: bool = True
    square_attention: bool = False


def fluctuation(variance: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """S_j = Var(X_j) * ||W[:, j]||^2 per input feature j of ``weight`` (out, in)."""
    return variance.float() * weight.float().pow(2).sum(0)


def standardize(scores: torch.Tensor) -> torch.Tensor:
    """(S - mean) / std over one layer's module (std with Bessel's correction, as ``torch.std``); all zeros
    when every score is equal."""
    import torch

    scores = scores.double()
    std = scores.std() if scores.numel() > 1 else scores.new_zeros(())
    if not std > 0:
        return torch.zeros_like(scores).float()
    return ((scores - scores.mean()) / std).float()


def bias_compensation(weight: torch.Tensor, mean: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """W[:, removed] @ mean[removed]: what the removed input features add on average to each output."""
    removed = removed.to(weight.device)
    return weight.float()[:, removed] @ mean.float().to(weight.device)[removed]


class FLAP(Criterion):
    name = "flap"
    version = "1"
    Params = FLAPParams
    structures = frozenset({"heads", "channels"})
    allocation = "global"
    needs_inputs = True

    def head_scores(self, attention: Attention, stats: LayerStatistics | None, unit: str,
                    params: FLAPParams) -> torch.Tensor:
        scores = fluctuation(stats.heads_output.var, attention.o.weight)
        if params.square_attention:
            scores = scores**2
        z = standardize(scores)
        width = attention.head_dim * (attention.group_size if unit == "group" else 1)
        return z.reshape(-1, width).mean(1)

    def channel_scores(self, mlp: MLP, stats: LayerStatistics | None, params: FLAPParams) -> torch.Tensor:
        return standardize(fluctuation(stats.channels.var, mlp.output.weight))

    def before_shrink(self, model: nn.Module, stats: Statistics | None, head_keep: dict[int, torch.Tensor],
                      channel_keep: dict[int, torch.Tensor], params: FLAPParams) -> None:
        if not params.compensate:
            return
        import torch

        from workbench.structured.layout import model_layout
        from workbench.structured.shrink import ensure_output_bias

        with torch.no_grad():
            layout = model_layout(model)
            if any(not keep.all() for keep in head_keep.values()):
                ensure_output_bias(model, "heads")
            if any(not keep.all() for keep in channel_keep.values()):
                ensure_output_bias(model, "channels")
            for layer, keep in head_keep.items():
                o = layout.attention(layer).o
                removed = ~keep.repeat_interleave(layout.attention(layer).head_dim)
                if removed.any():
                    delta = bias_compensation(o.weight, stats.layers[layer].heads_output.mean, removed)
                    o.bias.add_(delta.to(o.bias.dtype))
            for layer, keep in channel_keep.items():
                down = layout.mlp(layer).output
                if (~keep).any():
                    delta = bias_compensation(down.weight, stats.layers[layer].channels.mean, ~keep)
                    down.bias.add_(delta.to(down.bias.dtype))


CRITERION = FLAP()
