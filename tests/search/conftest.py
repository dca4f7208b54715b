"""Shared pieces of the search tests: tiny specs on tiny-llama, one thread (the models are too small for two)."""

from __future__ import annotations

import pytest
import torch

TINY_SEARCH = {
    "kind": "search", "model": "tiny-llama", "data": "shakespeare", "sparsity": 0.5,
    "levels": {"max": 3, "step": 0.1},
    "calibration": {"samples": 4, "seq_len": 64, "seed": 0},
    "budget": {"generations": 4, "offspring": 4, "survivors": [2, 1], "tokens": [64, 192]},
    "evaluation": {"windows": 2, "seq_len": 64},
}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def search_spec() -> dict:
    return {key: (dict(value) if isinstance(value, dict) else value) for key, value in TINY_SEARCH.items()}
