"""Random pruning at an exact sparsity (seeded): the honest baseline.

Liu et al., "The Unreasonable Effectiveness of Random Pruning" (ICLR 2022): every comparison needs it.
Unstructured keeps a uniformly random subset of exactly the kept count per layer; N:M keeps a uniformly
random N of every M.
"""

from __future__ import annotations

from workbench.pruning.registry import PruneContext, PruneOutcome, PruningMethod


class RandomPruning(PruningMethod):
    name = "random"
    version = "1"

    def prune(self, context: PruneContext) -> PruneOutcome:
        import torch

        from workbench.pruning.masks import nm_mask, topk_mask

        generator = torch.Generator().manual_seed(context.seed)
        masks = {}
        for name, module in context.layers.items():
            # random scores ranked by top-k give a uniformly random subset with an exact count
            scores = torch.rand(module.weight.shape, generator=generator)
            if context.pattern.is_nm:
                masks[name] = nm_mask(scores, context.pattern.keep, context.pattern.group)
            else:
                masks[name] = topk_mask(scores, context.targets[name])
        return PruneOutcome(masks)


METHOD = RandomPruning()
