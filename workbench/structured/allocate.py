"""How many structures each layer loses, so that the removed parameters come closest to a target.

A ``Units`` is the list of removable structures of one kind in one layer (heads, key/value groups, query-head
slices, channels, or the blocks of the model) with a score each (low = removed first) and a cost each (the
parameters its removal saves). Every allocator keeps at least one unit of every ``Units``, removes units in
ascending score order within it (ties: the lower index first), and returns one keep mask per ``Units``:

* ``uniform``: the same number of units of a kind in every layer of equal width (scores compared within a
  layer only);
* ``global``: one threshold over all units of all layers and kinds, scores being comparable (FLAP's
  standardised scores): the shortest prefix of the ascending order whose cost is closest to the target;
* ``by_fraction``: given per-layer fractions (CFSP's block-wise sparsity).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.errors import SpecError


@dataclass
class Units:
    layer: int  # block index (-1 for the blocks themselves)
    kind: str  # "heads", "channels" or "blocks"
    scores: torch.Tensor  # (n,), low = removed first
    costs: torch.Tensor  # (n,) parameters saved by removing each unit

    def __post_init__(self):
        self.scores = self.scores.detach().float().cpu().reshape(-1)
        self.costs = torch.as_tensor(self.costs, dtype=torch.float64).cpu().expand(self.scores.shape).clone()
        self._cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(self.costs[self.order], 0)])

    @property
    def order(self) -> torch.Tensor:
        """Removal order: ascending score, ties by index."""
        return torch.sort(self.scores, stable=True).indices

    def keep_lowest_removed(self, count: int) -> torch.Tensor:
        keep = torch.ones(len(self.scores), dtype=torch.bool)
        keep[self.order[:count]] = False
        return keep

    def cost_of_lowest(self, count: int) -> float:
        return float(self._cumulative[count])

    @property
    def removable(self) -> float:
        """Cost of removing all but the best unit."""
        return self.cost_of_lowest(len(self.scores) - 1)


def check_reachable(units: list[Units], target: float, what: str) -> None:
    most = sum(u.removable for u in units)
    if target > most * (1 + 1e-9):
        raise SpecError(f"the target removes {target:,.0f} parameters but {what} can remove at most {most:,.0f} "
                        "(every layer keeps at least one of each structure)",
                        "lower the sparsity, or add another structure (heads+channels, or blocks)")


def uniform(units: list[Units], target: float) -> list[torch.Tensor]:
    """The same fraction of every layer's units of a kind, round(f * n) removed (at most n - 1). Coarse kinds
    (fewest units, e.g. heads) take f = target / everything removable-in-principle; the finest kind (e.g.
    channels) then takes the fraction that brings the total closest to the target (the smaller on a tie)."""
    def count(u: Units, f: float) -> int:
        return min(int(round(f * len(u.scores))), len(u.scores) - 1)

    kinds: dict[str, list[int]] = {}
    for i, u in enumerate(units):
        kinds.setdefault(u.kind, []).append(i)
    order = sorted(kinds, key=lambda k: max(len(units[i].scores) for i in kinds[k]))
    counts = [0] * len(units)
    share = target / sum(float(u.costs.sum()) for u in units)
    for kind in order[:-1]:
        for i in kinds[kind]:
            counts[i] = count(units[i], share)
    fixed = sum(units[i].cost_of_lowest(counts[i]) for kind in order[:-1] for i in kinds[kind])
    finest = kinds[order[-1]]
    candidates = sorted({k / len(units[i].scores) for i in finest for k in range(len(units[i].scores) + 1)})
    best = min(candidates, key=lambda f: (abs(fixed + sum(units[i].cost_of_lowest(count(units[i], f))
                                                          for i in finest) - target), f))
    for i in finest:
        counts[i] = count(units[i], best)
    return [u.keep_lowest_removed(n) for u, n in zip(units, counts)]


def global_threshold(units: list[Units], target: float) -> list[torch.Tensor]:
    """All units in one ascending order of score (each ``Units`` protecting its best unit); the prefix whose
    cumulative cost is closest to the target is removed (FLAP's global threshold with cost weights)."""
    entries = []  # (score, units index, unit index)
    for ui, u in enumerate(units):
        for position in u.order[:-1].tolist():
            entries.append((float(u.scores[position]), ui, position))
    entries.sort(key=lambda e: e[0])  # stable: ties keep layer, then index order
    costs = torch.tensor([float(units[ui].costs[pos]) for _, ui, pos in entries], dtype=torch.float64)
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(costs, 0)])
    prefix = int(torch.argmin((cumulative - target).abs()))
    keeps = [torch.ones(len(u.scores), dtype=torch.bool) for u in units]
    for _, ui, position in entries[:prefix]:
        keeps[ui][position] = False
    return keeps


def round_kept(units: Units, keep: torch.Tensor, multiple: int) -> torch.Tensor:
    """``keep`` with its kept count rounded to the nearest multiple of ``multiple`` (at least one multiple, at
    most every unit), the best-scored units kept: matrix widths that are multiples of 64 or 128 keep GPU
    GEMMs on their fast tiles, where an odd width (11008 x 0.8 = 8806) can make the smaller model slower."""
    size = len(units.scores)
    if multiple <= 1 or size <= multiple:
        return keep
    kept = min(max(int(round(int(keep.sum()) / multiple)) * multiple, multiple), size)
    return units.keep_lowest_removed(size - kept)


def by_fraction(units: list[Units], fractions: list[float]) -> list[torch.Tensor]:
    """``fractions[i]`` of ``units[i]`` removed (rounded, at least one unit kept)."""
    return [u.keep_lowest_removed(min(max(int(round(f * len(u.scores))), 0), len(u.scores) - 1))
            for u, f in zip(units, fractions)]
