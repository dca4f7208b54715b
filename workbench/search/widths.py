"""The structured space: how many attention heads and MLP channels each block loses (EvoPress's search over
per-block levels, with structured widths as the levels; the structured criterion still ranks the units).

**Geometry.** One position per block and kind of unit (heads, channels) of the ``structure``. Level ``l`` of a
position removes ``base + l * step`` units of its kind from its block: ``base`` is what the uniform allocation
removes there (``allocate.uniform``, the same count in every block) and ``step`` is ``levels.step`` of a block's
units of that kind, rounded, at least one. The blocks have one size, so a step removes the same parameters in
every block: the positions of a kind form a class whose levels sum to zero, and every candidate removes exactly
the uniform allocation's units of each kind, hence its parameters. A position's levels stop at removing none
of its units, or all but one.

**Which units.** Inside a block the criterion decides, as in the structured prune: its scores come from the
dense model's calibration statistics once (``structured.prune.width_units``) and a block losing ``r`` units
loses its ``r`` lowest-scored ones. ``WidthMasker`` puts a candidate into the model by zeroing the removed units'
input columns of the output projections (o_proj per head, down_proj per channel), which computes what removing
them computes; with FLAP's compensation the removed features' calibration mean contribution is added to those
projections' outputs, as the prune run adds it to their bias. The structured prune spec that names the search
(``allocation: search``) removes the same units of every block (``removed_units``) and shrinks the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workbench.errors import SpecError
from workbench.search.evolution import Candidate, Space
from workbench.structured import allocate
from workbench.structured.criteria.flap import bias_compensation
from workbench.structured.layout import Layout, model_layout
from workbench.structured.prune import WidthEntry, shape_units
from workbench.structured.stats import Statistics

KINDS = ("heads", "channels")


@dataclass(frozen=True)
class WidthGeometry:
    keys: tuple[str, ...]  # the structured mask's key per position: "<blocks>.<i>.heads" / "<blocks>.<i>.channels"
    kinds: tuple[str, ...]  # "heads" or "channels" per position
    units: tuple[int, ...]  # removable units per position
    costs: tuple[float, ...]  # parameters of one unit of the position
    steps: tuple[int, ...]  # units one level removes
    base: tuple[int, ...]  # units removed at level 0 (the uniform allocation)
    low: tuple[int, ...]
    high: tuple[int, ...]
    decoder_parameters: int

    @property
    def size(self) -> int:
        return len(self.keys)

    def removed(self, index: int, level: int) -> int:
        return self.base[index] + level * self.steps[index]

    def space(self) -> Space:
        classes = tuple(KINDS.index(kind) for kind in self.kinds)
        return Space(self.low, self.high, classes, (0, 0))

    def sparsity_of(self, candidate: Candidate) -> float:
        """Fraction of the decoder's parameters a candidate removes (the uniform allocation's, exactly)."""
        removed = sum(self.removed(i, level) * self.costs[i] for i, level in enumerate(candidate))
        return removed / self.decoder_parameters


def width_geometry(layout: Layout, kinds: tuple[str, ...], head_unit: str, sparsity: float, max_level: int,
                   step_fraction: float) -> WidthGeometry:
    units = shape_units(layout, kinds, head_unit)
    decoder = sum(layout.block_parameters())
    for kind in kinds:
        shapes = {(len(u.scores), float(u.costs[0])) for u in units if u.kind == kind}
        if len(shapes) != 1:
            raise SpecError(f"the blocks' {kind} differ in number or size", "search the unshrunk model")
    allocate.check_reachable(units, sparsity * decoder, f"removing {'+'.join(kinds)} ({head_unit} units)")
    base = [int((~keep).sum()) for keep in allocate.uniform(units, sparsity * decoder)]
    steps = [max(1, round(step_fraction * len(u.scores))) for u in units]
    low = [-min(max_level, b // s) for b, s in zip(base, steps)]
    high = [min(max_level, (len(u.scores) - 1 - b) // s) for u, b, s in zip(units, base, steps)]
    if all(lo == hi == 0 for lo, hi in zip(low, high)):
        raise SpecError("no block can lose more or fewer units than the uniform allocation",
                        "lower levels.step or move the sparsity away from 0 and 1")
    return WidthGeometry(tuple(f"{layout.prefix}.{u.layer}.{u.kind}" for u in units), tuple(u.kind for u in units),
                         tuple(len(u.scores) for u in units), tuple(float(u.costs[0]) for u in units), tuple(steps),
                         tuple(base), tuple(low), tuple(high), decoder)


class WidthMasker:
    """Runs the model with a candidate's units removed (their output-projection columns zeroed, FLAP's mean
    contribution added where ``compensate``); ``restore`` puts the dense weights back."""

    def __init__(self, model: nn.Module, entries: list[WidthEntry], geometry: WidthGeometry,
                 stats: Statistics | None, compensate: bool):
        by_key = {key: (units, convert) for units, convert, key in entries}
        layout = model_layout(model)
        self.geometry = geometry
        self.units = [by_key[key][0] for key in geometry.keys]
        self.convert = [by_key[key][1] for key in geometry.keys]
        self.modules: list[nn.Linear] = []
        self.widths: list[int] = []  # columns per stored-mask entry: head_dim per query head, 1 per channel
        self.means: list[torch.Tensor | None] = []
        for units, kind in zip(self.units, geometry.kinds):
            layer_stats = stats.layers[units.layer] if compensate and stats is not None and stats.layers else None
            if kind == "heads":
                attention = layout.attention(units.layer)
                self.modules.append(attention.o)
                self.widths.append(attention.head_dim)
                self.means.append(layer_stats.heads_output.mean if layer_stats is not None else None)
            else:
                self.modules.append(layout.mlp(units.layer).output)
                self.widths.append(1)
                self.means.append(layer_stats.channels.mean if layer_stats is not None else None)
        self.dense = [module.weight.detach().clone() for module in self.modules]
        self.offsets: list[torch.Tensor | None] = [None] * geometry.size
        self.current: list[int | None] = [None] * geometry.size
        self.hooks = [module.register_forward_hook(self._offset_hook(i)) for i, module in enumerate(self.modules)]

    def _offset_hook(self, index: int) -> Any:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            offset = self.offsets[index]
            return output if offset is None else output + offset.to(output.dtype)

        return hook

    def kept_columns(self, index: int, level: int) -> torch.Tensor:
        """The output projection's input columns that stay (True) when position ``index`` is at ``level``."""
        keep = self.units[index].keep_lowest_removed(self.geometry.removed(index, level))
        return self.convert[index](keep).repeat_interleave(self.widths[index])

    @torch.no_grad()
    def apply(self, candidate: Candidate) -> None:
        if not self.geometry.space().admits(candidate):
            raise ValueError(f"a structured candidate has one level per position, each kind summing to 0: {candidate}")
        for index, level in enumerate(candidate):
            if self.current[index] == level:
                continue
            columns = self.kept_columns(index, level).to(self.dense[index].device)
            self.modules[index].weight.copy_(self.dense[index] * columns)
            mean = self.means[index]
            self.offsets[index] = None if mean is None or columns.all() else bias_compensation(
                self.dense[index], mean, ~columns)
            self.current[index] = level

    @torch.no_grad()
    def restore(self) -> None:
        for index, module in enumerate(self.modules):
            module.weight.copy_(self.dense[index])
        for hook in self.hooks:
            hook.remove()
        self.offsets = [None] * self.geometry.size
        self.current = [None] * self.geometry.size
