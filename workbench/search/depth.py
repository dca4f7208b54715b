"""The depth space: which decoder blocks to drop (Sieberling et al., 2024, EvoPress, section 4.1, and the
authors' layer-dropping search with whole blocks).

A candidate is one level per block, 0 = kept and 1 = dropped, summing to the number of blocks dropped: one
class of 0/1 levels in ``evolution.Space``, so an EvoPress move swaps one dropped block for one kept block
and every candidate drops exactly that many. There is no level database: a block is either there or not.
``BlockDropper`` puts a candidate into the model by handing its block list only the kept blocks (the
others stay in memory, untouched), which computes what ``structured.shrink.shrink_blocks`` leaves: the
prune run that names the search's allocation drops the same blocks and gets the same model.

How many blocks a sparsity drops follows the structured prune's rule for blocks (``allocate.global_threshold``
over the blocks' parameters): the count whose parameters come closest to ``sparsity`` x the decoder's, the
smaller one on a tie. It assumes blocks of one size, as in every model the search loads (a shrunk model's
blocks differ; the search refuses those).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from workbench.errors import SpecError
from workbench.search.evolution import Candidate, Space
from workbench.structured.layout import model_layout


def blocks_for_sparsity(block_parameters: Sequence[int], sparsity: float) -> int:
    """Blocks whose parameters come closest to ``sparsity`` of all blocks' (the smaller count on a tie)."""
    if len(set(block_parameters)) != 1:
        raise SpecError("the depth search needs blocks of one size; this model's blocks differ",
                        "search the unshrunk model")
    size, total = block_parameters[0], sum(block_parameters)
    return min(range(len(block_parameters) + 1), key=lambda count: (abs(count * size - sparsity * total), count))


def depth_space(blocks: int, dropped: int) -> Space:
    if not 1 <= dropped < blocks:
        raise SpecError(f"the depth search would drop {dropped} of {blocks} blocks",
                        f"drop between 1 and {blocks - 1} blocks (blocks: or sparsity:)")
    return Space(low=(0,) * blocks, high=(1,) * blocks, totals=(dropped,))


def kept_mask(candidate: Candidate) -> torch.Tensor:
    """One bool per block, True = kept (the structured prune's block mask)."""
    return torch.tensor([level == 0 for level in candidate], dtype=torch.bool)


class BlockDropper:
    """Runs the model without a candidate's dropped blocks; ``restore`` puts the whole block list back.

    The fitness forward passes use no key/value cache, so the kept blocks need no renumbering here (the prune
    run's ``shrink_blocks`` renumbers them)."""

    def __init__(self, model: nn.Module):
        layout = model_layout(model)
        self.model = model
        self.prefix = layout.prefix
        self.blocks = list(layout.blocks)
        self.full = layout.blocks

    def apply(self, candidate: Candidate) -> None:
        if len(candidate) != len(self.blocks) or not set(candidate) <= {0, 1}:
            raise ValueError(f"a depth candidate has one 0/1 level per block ({len(self.blocks)}), not {candidate}")
        self._set(nn.ModuleList([block for block, level in zip(self.blocks, candidate) if not level]))

    def restore(self) -> None:
        self._set(self.full)

    def _set(self, blocks: nn.ModuleList) -> None:
        parent, _, name = self.prefix.rpartition(".")
        setattr(self.model.get_submodule(parent), name, blocks)
