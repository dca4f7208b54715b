"""Shared fixtures: a fresh store per test, tiny fast specs, and the GPU skip."""

from __future__ import annotations

import pytest
import torch

from workbench.store import Store

TINY_EVAL = {"windows": 4, "seq_len": 64}
TINY_CALIBRATION = {"samples": 4, "seq_len": 64, "seed": 0}


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    path = tmp_path / "store" / "workbench.duckdb"
    monkeypatch.setenv("WORKBENCH_STORE", str(path))
    return Store(path)


@pytest.fixture
def tiny_spec() -> dict:
    return {"model": "tiny-llama", "data": "shakespeare", "method": "magnitude", "sparsity": 0.5,
            "calibration": dict(TINY_CALIBRATION), "evaluation": dict(TINY_EVAL)}


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; run on a GPU host with `pytest -m gpu`")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
