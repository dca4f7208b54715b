"""block-influence: ShortGPT's Block Influence (Men, Xu, Zhang, Wang, Lin, Lu, Han and Chen, 2024, "ShortGPT:
Layers in Large Language Models are More Redundant Than You Expect", the Block Influence metric):

    BI_l = 1 - E_{X, t} [ <x_t^l, x_t^{l+1}> / (||x_t^l|| ||x_t^{l+1}||) ],

x_t^l being block l's input hidden state at token t and x_t^{l+1} its output, averaged over all calibration
tokens. A block that barely turns its input has a low BI; blocks are removed in ascending BI until the removed
parameters come closest to the target.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from workbench.structured.criteria import Criterion, NoParams

if TYPE_CHECKING:
    import torch

    from workbench.structured.stats import Statistics


class BlockInfluence(Criterion):
    name = "block-influence"
    version = "1"
    Params = NoParams
    structures = frozenset({"blocks"})
    needs_blocks = True

    def block_scores(self, stats: Statistics, params: BaseModel) -> torch.Tensor:
        return 1 - stats.block_cosine


CRITERION = BlockInfluence()
