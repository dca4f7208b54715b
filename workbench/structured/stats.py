"""Calibration statistics for structured criteria, from one forward pass of the dense model.

Calibration windows (``(samples, seq_len)`` token ids) are run in batches through the model's base (no
output head). Hooks stream, per block:

* the inputs of four projections into ``InputStatistics`` (the calibration pipeline's class): the attention
  input (read by q/k/v), the concatenated head outputs (read by o), the MLP input (read by gate/up) and the
  intermediate channels (read by down). Each gets Wanda's ``sq_norm`` (mean over windows of the per-feature
  energy sum_t x_t^2, whose square root is ||X_j||) and per-feature ``mean`` / ``var`` over tokens;
* the block's input and output hidden states, reduced at once to the per-token cosine similarity and angular
  distance arccos(cos) / pi, summed over tokens.

Nothing per token is kept: peak memory is one batch's activations. Every block sees the dense model's
activations (the statistics are of the unpruned model, as in FLAP's and CFSP's single pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from workbench.errors import SpecError
from workbench.pruning.pipeline import InputStatistics, Needs
from workbench.structured.layout import model_layout

NEEDS = Needs(sq_norm=True, moments=True)


@dataclass
class LayerStatistics:
    """Input statistics of one block's projections (features = the projection's input columns)."""

    attention_input: InputStatistics  # read by q/k/v: hidden features
    heads_output: InputStatistics  # read by o: num_heads * head_dim features, head by head
    mlp_input: InputStatistics  # read by gate/up (BERT: intermediate.dense)
    channels: InputStatistics  # read by down (BERT: output.dense): one feature per intermediate channel


@dataclass
class Statistics:
    layers: list[LayerStatistics] | None  # None when only block similarities were asked for
    cosine_sum: torch.Tensor | None  # per block: sum over tokens of cos(block input, block output), float64
    angular_sum: torch.Tensor | None  # per block: sum over tokens of arccos(cos) / pi, float64
    tokens: int

    @property
    def block_cosine(self) -> torch.Tensor:
        """Mean over calibration tokens of cos(x_in, x_out), per block."""
        return (self.cosine_sum / max(self.tokens, 1)).float()

    @property
    def block_angular(self) -> torch.Tensor:
        """Mean over calibration tokens of the angular distance arccos(cos) / pi, per block."""
        return (self.angular_sum / max(self.tokens, 1)).float()


def check_calibration(calibration: torch.Tensor | None, what: str) -> torch.Tensor:
    if calibration is None or not isinstance(calibration, torch.Tensor) or calibration.numel() == 0:
        raise SpecError(f"{what} needs calibration windows and got none",
                        "pass token ids of shape (samples, seq_len), e.g. windows drawn from the corpus")
    if calibration.dim() != 2 or calibration.dtype not in (torch.long, torch.int32, torch.int64):
        raise SpecError(f"calibration windows have shape {tuple(calibration.shape)} and dtype {calibration.dtype}",
                        "pass integer token ids of shape (samples, seq_len)")
    return calibration.long()


def _stream_into(stats: InputStatistics):
    def hook(module: nn.Module, args: tuple) -> None:
        stats.add(args[0].detach())
    return hook


@torch.no_grad()
def collect_statistics(model: nn.Module, calibration: torch.Tensor, inputs: bool = True, blocks: bool = True,
                       tokens_per_batch: int = 2048) -> Statistics:
    """One forward pass over ``calibration``; ``inputs``: projection input statistics, ``blocks``: block
    input/output similarities."""
    calibration = check_calibration(calibration, "structured pruning")
    layout = model_layout(model)
    device = next(model.parameters()).device
    handles = []
    layers = None
    if inputs:
        layers = []
        for index in range(len(layout)):
            attn, mlp = layout.attention(index), layout.mlp(index)
            layer = LayerStatistics(*(InputStatistics(linear.in_features, NEEDS, device)
                                      for linear in (attn.q, attn.o, mlp.inputs[0], mlp.output)))
            layers.append(layer)
            for linear, target in ((attn.q, layer.attention_input), (attn.o, layer.heads_output),
                                   (mlp.inputs[0], layer.mlp_input), (mlp.output, layer.channels)):
                handles.append(linear.register_forward_pre_hook(_stream_into(target)))
    cosine_sum = angular_sum = None
    if blocks:
        cosine_sum = torch.zeros(len(layout), dtype=torch.float64, device=device)
        angular_sum = torch.zeros_like(cosine_sum)

        def similarity(index: int):
            def hook(module: nn.Module, args: tuple, kwargs: dict, output) -> None:
                x_in = args[0] if args else kwargs["hidden_states"]
                x_out = output[0] if isinstance(output, (tuple, list)) else output
                cos = torch.nn.functional.cosine_similarity(x_in.float(), x_out.float(), dim=-1).clamp(-1, 1)
                cosine_sum[index] += cos.double().sum()
                angular_sum[index] += (torch.arccos(cos) / math.pi).double().sum()
            return hook

        handles += [block.register_forward_hook(similarity(i), with_kwargs=True) for i, block in enumerate(layout.blocks)]
    base = getattr(model, "base_model", model)
    was_training = model.training
    model.eval()
    per_batch = max(1, tokens_per_batch // calibration.shape[1])
    extra = {"use_cache": False} if layout.family == "llama" else {}
    try:
        for start in range(0, len(calibration), per_batch):
            base(input_ids=calibration[start:start + per_batch].to(device), **extra)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return Statistics(layers, cosine_sum, angular_sum, calibration.numel())
