"""The base of the methods that the sequential calibration pipeline runs (Wanda, SparseGPT, DSnoT).

A subclass names the statistics it reads (``needs``; ``layer_needs`` when layers differ) and returns a
``pruner`` for one group of layers that read the same input; ``prune`` runs the pipeline
(``workbench/pruning/pipeline.py``) with it. The base lives apart from the pipeline so that a method's
module imports without torch (a spec reads its name, version and parameters); the pipeline is imported
when a method prunes.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, ClassVar

from workbench.pruning.registry import Needs, PruneContext, PruneOutcome, PruningMethod

if TYPE_CHECKING:
    from workbench.pruning.pipeline import GroupPruner, LayerNeeds


class CalibratedMethod(PruningMethod):
    """A method that the pipeline runs: it names the statistics it reads (``needs``) and how it prunes a
    group of layers that share one input (``pruner``)."""

    needs_calibration = True
    needs: ClassVar[Needs]

    @abstractmethod
    def pruner(self, context: PruneContext) -> GroupPruner:
        """The per-group pruning step for this context's targets, pattern and parameters."""

    def layer_needs(self, context: PruneContext) -> LayerNeeds:
        """What the pipeline collects for each layer (default: ``needs`` for all)."""
        return self.needs

    def prune(self, context: PruneContext) -> PruneOutcome:
        from workbench.pruning.masks import check_pattern_fits, input_widths
        from workbench.pruning.pipeline import run_pipeline

        check_pattern_fits(input_widths(context.layers), context.pattern)
        result = run_pipeline(context.model, context.layers, context.calibration, self.layer_needs(context),
                              self.pruner(context), heldout=context.heldout, progress=context.progress, desc=self.name,
                              precision=context.precision)
        return result.outcome()
