"""SAD and IoU on tensors: pure functions that agree with the definition and with results.Overlap."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import workbench.metrics.divergence as divergence
from workbench.metrics.divergence import iou, sad, tensor_overlap
from workbench.results import Overlap


def test_sad_and_iou_by_hand():
    a = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]], dtype=torch.bool)
    b = torch.tensor([[0, 1, 1, 0], [1, 0, 1, 1]], dtype=torch.bool)
    assert tensor_overlap(a, b) == Overlap(both=3, either=6, numel=8)
    assert sad(a, b) == 3 == int((a ^ b).sum())  # popcount of XOR
    assert iou(a, b) == pytest.approx(3 / 6)
    assert sad(a, a) == 0 and iou(a, a) == 1.0
    empty = torch.zeros(2, 4, dtype=torch.bool)
    assert iou(empty, empty) == 1.0  # nothing kept in either: the same (empty) architecture
    with pytest.raises(ValueError, match="differ in shape"):
        sad(a, b.T)


def test_the_divergence_module_stays_pure():
    """No store, no queries, no records: comparing stored runs is workbench.api.compare."""
    tree = ast.parse(Path(divergence.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {m for m in imported if m and m.split(".")[:2] in (["workbench", "store"], ["workbench", "queries"],
                                                                  ["workbench", "records"], ["workbench", "api"])}
    assert not hasattr(divergence, "compare_runs")
