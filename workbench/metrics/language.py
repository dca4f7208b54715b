"""Perplexity of a causal LM and embedding fidelity of an encoder against its dense self.

Perplexity = exp(mean token loss) over non-overlapping evaluation windows, each scored on its own
(no context carried over), as in the SparseGPT and Wanda evaluations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from workbench.progress import Bar


@torch.inference_mode()
def perplexity(model: nn.Module, windows: torch.Tensor, batch_size: int = 4, progress: bool = False) -> float:
    device = next(model.parameters()).device
    total_loss, total_tokens = 0.0, 0
    for start in Bar(range(0, len(windows), batch_size), desc="perplexity", unit="batch", enabled=progress,
                     leave=False):
        batch = windows[start : start + batch_size].to(device)
        logits = model(input_ids=batch).logits[:, :-1].float()
        targets = batch[:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
        total_loss += float(loss)
        total_tokens += targets.numel()
    if not math.isfinite(total_loss):
        return float("inf")
    return math.exp(total_loss / total_tokens)


@torch.inference_mode()
def sentence_embeddings(model: nn.Module, tokenizer: object, sentences: list[str], max_length: int = 128,
                        batch_size: int = 32) -> torch.Tensor:
    """Mean-pooled, L2-normalised embeddings (the all-MiniLM-L6-v2 recipe)."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(sentences), batch_size):
        encoded = tokenizer(sentences[start : start + batch_size], padding=True, truncation=True,  # type: ignore[operator]
                            max_length=max_length, return_tensors="pt")
        encoded = {k: v.to(device) for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        hidden = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out.append(F.normalize(pooled.float(), dim=-1))
    return torch.cat(out)


def embedding_fidelity(dense: torch.Tensor, pruned: torch.Tensor) -> dict[str, float]:
    """Mean cosine between dense and pruned embeddings, and how often each sentence's nearest
    neighbour (among the others) stays the same."""
    cosine = float((dense * pruned).sum(-1).mean())
    def neighbours(embeddings: torch.Tensor) -> torch.Tensor:
        similarity = embeddings @ embeddings.T
        similarity.fill_diagonal_(-float("inf"))
        return similarity.argmax(-1)
    agreement = float((neighbours(dense) == neighbours(pruned)).float().mean()) if len(dense) > 1 else 1.0
    return {"embedding_cosine": cosine, "neighbour_agreement": agreement}
