"""The search's fitness: KL divergence of a candidate's next-token distribution to the dense model's.

The dense model runs once over the fitness windows; of its distribution at every position only the
``top_k`` largest log-probabilities and their token ids are kept (float32 and int32: 4 MB for 8k
tokens at k = 128, where the whole bfloat16 logits of a 49k vocabulary would take 800 MB). A candidate's
KL at a position is then taken over those k tokens plus one bucket for the rest of the vocabulary:

    KL = sum_{v in top-k} p_v log(p_v / q_v) + p_rest log(p_rest / q_rest)

with p the dense and q the candidate's probabilities, and the rest's mass taken as the log-sum-exp of the
log-probabilities outside the top k on either side (so it is exact even when tiny). That is the exact KL of the two distributions
coarse-grained to k + 1 outcomes, a lower bound of the full KL that is tight when the dense model puts
little mass outside its top k; it is zero for the dense model itself (the same forward pass gives the
same numbers) and positive for any candidate that moves a probability. Each window runs on its own
(batch of one), so a window's logits do not depend on which other windows a stage drew.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

TOP_K = 128


@dataclass
class DenseReference:
    windows: torch.Tensor  # (windows, seq_len) token ids
    log_probs: torch.Tensor  # (windows, seq_len, k) float32: the dense model's largest log-probabilities
    token_ids: torch.Tensor  # (windows, seq_len, k) int32: their tokens
    rest_log_prob: torch.Tensor  # (windows, seq_len) float32: log of the mass outside the top k

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def tokens(self) -> int:
        return self.windows.numel()


def _log_probs(model: nn.Module, window: torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    logits = model(input_ids=window.unsqueeze(0).to(device), use_cache=False).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


def split_log_probs(log_probs: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The log-probabilities of the tokens ``ids`` and the log of the mass of all other tokens."""
    rest = log_probs.scatter(-1, ids, float("-inf")).logsumexp(-1)
    return log_probs.gather(-1, ids), rest


@torch.inference_mode()
def dense_reference(model: nn.Module, windows: torch.Tensor, top_k: int = TOP_K) -> DenseReference:
    """The dense model's top-k log-probabilities at every position of every window (computed once)."""
    values, indices, rests = [], [], []
    for window in windows:
        log_probs = _log_probs(model, window)
        ids = torch.topk(log_probs, min(top_k, log_probs.shape[-1]), dim=-1).indices
        top, rest = split_log_probs(log_probs, ids)
        values.append(top.cpu())
        indices.append(ids.to(torch.int32).cpu())
        rests.append(rest.cpu())
    return DenseReference(windows.cpu(), torch.stack(values), torch.stack(indices), torch.stack(rests))


def coarse_kl(dense_top: torch.Tensor, dense_rest: torch.Tensor, model_top: torch.Tensor,
              model_rest: torch.Tensor) -> torch.Tensor:
    """Per-position KL over the top-k tokens plus the rest, from both models' log-probabilities of the
    dense model's top-k tokens and of the rest (float64 arithmetic)."""
    log_p, log_q = dense_top.double(), model_top.double()
    inside = (log_p.exp() * (log_p - log_q)).sum(-1)
    rest_p, rest_q = dense_rest.double(), model_rest.double()
    rest = torch.where(torch.isfinite(rest_p), rest_p.exp() * (rest_p - rest_q), torch.zeros_like(rest_p))
    return inside + rest


@torch.inference_mode()
def kl_fitness(model: nn.Module, reference: DenseReference, windows: Sequence[int]) -> float:
    """Mean KL per token over the given fitness windows (indices into ``reference``); lower is better."""
    total, tokens = 0.0, 0
    for index in windows:
        log_probs = _log_probs(model, reference.windows[index])
        top, rest = split_log_probs(log_probs, reference.token_ids[index].to(log_probs.device, torch.int64))
        total += float(coarse_kl(reference.log_probs[index], reference.rest_log_prob[index], top.cpu(), rest.cpu()).sum())
        tokens += top.shape[0]
    return total / tokens
