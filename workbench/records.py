"""What a job hands to the store: plain records, written in one transaction by ``Store.finish_run``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # masks are tensors, but the store and its readers start without torch
    import torch

# A metric > 0 that a job's output may carry: the job left part of its work out (a time budget ran out).
# The run is stored, but the runner runs its key again rather than serving it as a complete run.
INCOMPLETE = "incomplete"

# A prune run whose achieved sparsity (zeros measured on the weights) is more than SHORTFALL_TOLERANCE off its
# target carries target - achieved as this metric (positive: fewer zeros than asked for).
SHORTFALL_METRIC = "sparsity_shortfall"
SHORTFALL_TOLERANCE = 0.005  # half a percentage point


def sparsity_shortfall(target: float, achieved: float) -> float | None:
    """``target - achieved`` where the two differ by more than ``SHORTFALL_TOLERANCE``, else None."""
    missed = target - achieved
    return missed if abs(missed) > SHORTFALL_TOLERANCE else None


def shortfall_warning(metrics: dict[str, float]) -> str | None:
    """A run's ``SHORTFALL_METRIC`` in words, ``achieved sparsity 0.6892 is 1.08 percentage points below the
    target 0.7``; None for a run without it."""
    missed, achieved = metrics.get(SHORTFALL_METRIC), metrics.get("sparsity")
    if missed is None or achieved is None or missed != missed:
        return None
    return (f"achieved sparsity {achieved:.4f} is {abs(missed) * 100:.2f} percentage points "
            f"{'below' if missed > 0 else 'above'} the target {achieved + missed:.4g}")


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
