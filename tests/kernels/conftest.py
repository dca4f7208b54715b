"""Fixtures of the kernel benchmark tests: the smallest timing settings that still exercise every path."""

from __future__ import annotations

import pytest

TINY_TIMING = {"budget_ms": 2, "min_samples": 3, "max_samples": 5, "rotate_mb": 1, "copy_mb": 4, "matmul_size": 128,
               "case_timeout_s": 60}


@pytest.fixture
def tiny_timing() -> dict:
    return dict(TINY_TIMING)
