"""The fitness: KL to the dense model's top-k distribution, zero for the dense model, positive otherwise."""

from __future__ import annotations

import torch

from workbench.data import calibration_windows
from workbench.models import load_model
from workbench.models.layers import prunable_layers
from workbench.search.fitness import coarse_kl, dense_reference, kl_fitness, split_log_probs


def test_coarse_kl_is_zero_for_equal_and_positive_for_other_distributions():
    torch.manual_seed(0)
    logits = torch.randn(32, 50)
    log_p = torch.log_softmax(logits, -1)
    log_q = torch.log_softmax(logits + 0.3 * torch.randn(32, 50), -1)
    full = (log_p.exp().double() * (log_p.double() - log_q.double())).sum(-1)

    def kl(k: int, other: torch.Tensor) -> torch.Tensor:
        ids = torch.topk(log_p, k, dim=-1).indices
        return coarse_kl(*split_log_probs(log_p, ids), *split_log_probs(other, ids))

    assert torch.equal(kl(8, log_p), torch.zeros(32, dtype=torch.float64))
    assert (kl(8, log_q) > 0).all()
    assert (kl(8, log_q) <= kl(20, log_q) + 1e-12).all() and (kl(20, log_q) <= full + 1e-12).all()  # a coarser
    assert torch.allclose(kl(49, log_q), full, rtol=1e-5)  # split never raises the divergence; k + 1 = all: exact
    assert torch.allclose(kl(50, log_q), full, rtol=1e-5)  # (an empty rest adds nothing)


def test_kl_is_zero_for_the_dense_model_and_positive_for_a_pruned_one():
    loaded = load_model("tiny-llama")
    windows = calibration_windows("shakespeare", loaded.tokenizer, 3, 64, 1)
    reference = dense_reference(loaded.model, windows, top_k=16)
    assert reference.log_probs.shape == (3, 64, 16) and reference.token_ids.dtype == torch.int32
    assert kl_fitness(loaded.model, reference, [0, 1, 2]) == 0.0
    assert kl_fitness(loaded.model, reference, [2]) == 0.0

    layer = next(iter(prunable_layers(loaded.model).values()))
    dense = layer.weight.detach().clone()
    with torch.no_grad():
        layer.weight[0, 0] = 0.0
        assert kl_fitness(loaded.model, reference, [0, 1, 2]) > 0
        layer.weight.copy_(dense)
    assert kl_fitness(loaded.model, reference, [0, 1, 2]) == 0.0
