"""Small, fast training specs: a few steps of fashion-cnn on a subset of the images."""

from __future__ import annotations

import pytest


@pytest.fixture
def image_spec() -> dict:
    return {"kind": "train", "model": "fashion-cnn", "data": "fashion-mnist", "train_subset": 256,
            "eval_subset": 200, "batch_size": 32, "steps": 12, "eval_every": 6, "snapshot_every": 3,
            "log_every": 3, "checkpoint_every": 1000, "device": "cpu"}


@pytest.fixture
def text_spec() -> dict:
    return {"kind": "train", "model": "tiny-llama", "data": "shakespeare", "method": "sparse-finetune",
            "sparsity": 0.5, "steps": 6, "batch_size": 2, "seq_len": 64, "eval_subset": 2, "eval_every": 3,
            "snapshot_every": 3, "log_every": 1, "device": "cpu",
            "optimizer": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.0}}
