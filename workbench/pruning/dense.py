"""The dense baseline: every weight kept. It is the reference row of every comparison."""

from __future__ import annotations

from workbench.pruning.registry import PruneContext, PruneOutcome, PruningMethod


class Dense(PruningMethod):
    name = "dense"
    version = "1"

    def prune(self, context: PruneContext) -> PruneOutcome:
        import torch

        return PruneOutcome({name: torch.ones_like(m.weight, dtype=torch.bool) for name, m in context.layers.items()})


METHOD = Dense()
