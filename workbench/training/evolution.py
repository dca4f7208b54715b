"""How masks evolve during training: snapshots every k steps and the SAD between consecutive ones.

SAD (sparse architecture divergence, Zhou et al. 2021, Sec. 3.2) between two masks is the number of
positions whose kept/pruned state differs, the popcount of their XOR. Logged per layer (count,
fraction of the layer, IoU) and as a total per snapshot step, it shows when a topology settles.
An unchanged mask is kept as the same tensor object, so that memory (and the store, which
content-addresses masks) pays for it once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from workbench.metrics.divergence import iou, sad
from workbench.records import DivergenceRecord, MaskRecord, Metric


@dataclass
class MaskEvolution:
    snapshots: list[tuple[int, dict[str, torch.Tensor]]] = field(default_factory=list)
    divergence: list[DivergenceRecord] = field(default_factory=list)

    def snapshot(self, step: int, masks: dict[str, torch.Tensor]) -> list[Metric]:
        """Record the masks at ``step``; returns the step's SAD metrics (none for the first snapshot)."""
        if not masks:
            return []
        previous = self.snapshots[-1] if self.snapshots else None
        if previous is not None and previous[0] == step:
            return []
        current = {}
        for name, mask in masks.items():
            mask = mask.detach().to("cpu", torch.bool)
            before = previous[1].get(name) if previous else None
            current[name] = before if before is not None and torch.equal(before, mask) else mask
        self.snapshots.append((step, current))
        if previous is None:
            return []
        total_sad = total = 0
        for name, mask in current.items():
            count = sad(previous[1][name], mask)
            self.divergence.append(DivergenceRecord(name, count, mask.numel(), iou(previous[1][name], mask),
                                                    step_a=previous[0], step_b=step))
            total_sad += count
            total += mask.numel()
        return [Metric("sad", float(total_sad), step), Metric("sad_fraction", total_sad / total, step)]

    def mask_records(self) -> list[MaskRecord]:
        return [MaskRecord(name, mask, step) for step, masks in self.snapshots for name, mask in masks.items()]

    def total_sad(self) -> int:
        return sum(record.sad for record in self.divergence)

    def latest(self) -> dict[str, torch.Tensor]:
        return self.snapshots[-1][1] if self.snapshots else {}
