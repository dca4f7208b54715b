"""Structured pruning: remove whole attention heads, MLP channels and blocks, giving a dense, smaller model
of the stock class (faster everywhere, loadable with ``from_pretrained``).

* ``structured_prune(model, calibration, criterion, structure, sparsity) -> ShrinkResult``: the whole step.
* ``shrink``: the surgery (``shrink_heads``, ``shrink_channels``, ``shrink_blocks``, their ``remove_*``
  index forms, ``load_shrunk`` for models with per-layer widths).
* ``criteria``: the scores (``CRITERIA``: magnitude-sp, wanda-sp, flap, cfsp, block-influence).
* ``stats``: one calibration pass collecting what the criteria read.
"""

from workbench.structured.criteria import CRITERIA, Criterion, resolve_criterion
from workbench.structured.layout import config_parameter_count, model_layout
from workbench.structured.prune import STRUCTURES, ShrinkResult, check_request, shrink_to_masks, structured_prune
from workbench.structured.shrink import (
    load_shrunk,
    plain_loadable,
    remove_blocks,
    remove_channels,
    remove_heads,
    shrink_blocks,
    shrink_channels,
    shrink_heads,
)
from workbench.structured.stats import Statistics, collect_statistics

__all__ = [
    "CRITERIA", "STRUCTURES", "Criterion", "ShrinkResult", "Statistics", "check_request", "collect_statistics",
    "config_parameter_count", "load_shrunk", "model_layout", "plain_loadable", "remove_blocks", "remove_channels",
    "remove_heads", "resolve_criterion", "shrink_blocks", "shrink_channels", "shrink_heads", "shrink_to_masks",
    "structured_prune",
]
