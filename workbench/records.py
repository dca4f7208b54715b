"""What a job hands to the store: plain records, written in one transaction by ``Store.finish_run``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # masks are tensors, but the store and its readers start without torch
    import torch

# A metric > 0 that a job's output may carry: the job left part of its work out (a time budget ran out).
# The run is stored, but the runner runs its key again rather than serving it as a complete run.
INCOMPLETE = "incomplete"


@dataclass
class Metric:
    name: str
    value: float
    step: int | None = None


@dataclass
class LayerStat:
    layer: str
    block: int | None
    shape: tuple[int, ...]
    target_sparsity: float | None
    achieved_sparsity: float
    pattern: str
    nm_valid: bool | None = None
    recon_error: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def numel(self) -> int:
        total = 1
        for dim in self.shape:
            total *= dim
        return total


@dataclass
class MaskRecord:
    layer: str
    mask: torch.Tensor  # bool, True = kept
    step: int = 0


@dataclass
class DivergenceRecord:
    layer: str
    sad: int
    numel: int
    iou: float
    run_a: str | None = None  # None = the run being written
    run_b: str | None = None
    step_a: int | None = None
    step_b: int | None = None


@dataclass
class JobOutput:
    metrics: list[Metric] = field(default_factory=list)
    layers: list[LayerStat] = field(default_factory=list)
    masks: list[MaskRecord] = field(default_factory=list)
    divergence: list[DivergenceRecord] = field(default_factory=list)
    kernel_results: list[dict[str, Any]] = field(default_factory=list)

    def metric_dict(self) -> dict[str, float]:
        """Final value of each metric (the last step where a metric is logged over steps)."""
        out: dict[str, float] = {}
        for metric in sorted(self.metrics, key=lambda m: -1 if m.step is None else m.step):
            out[metric.name] = metric.value
        return out
