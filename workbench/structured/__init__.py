"""Structured pruning: remove whole attention heads, MLP channels and blocks, giving a dense, smaller model
of the stock class (faster everywhere, loadable with ``from_pretrained``).

* ``structured_prune(model, calibration, criterion, structure, sparsity) -> ShrinkResult``: the whole step.
* ``shrink``: the surgery (``shrink_heads``, ``shrink_channels``, ``shrink_blocks``, their ``remove_*``
  index forms, ``load_shrunk`` for models with per-layer widths).
* ``criteria``: the scores (``CRITERIA``: magnitude-sp, wanda-sp, flap, cfsp, block-influence).
* ``stats``: one calibration pass collecting what the criteria read.

The names below are imported on first use: a spec that names a criterion imports
``workbench.structured.criteria`` (and with it this package) without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "workbench.structured.criteria": ["CRITERIA", "STRUCTURES", "Criterion", "resolve_criterion"],
    "workbench.structured.layout": ["config_parameter_count", "model_layout"],
    "workbench.structured.prune": ["ShrinkResult", "check_request", "shrink_to_masks", "structured_prune"],
    "workbench.structured.shrink": ["load_shrunk", "plain_loadable", "remove_blocks", "remove_channels",
                                    "remove_heads", "shrink_blocks", "shrink_channels", "shrink_heads"],
    "workbench.structured.stats": ["Statistics", "collect_statistics"],
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_HOME_OF)


def __getattr__(name: str) -> Any:
    if name not in _HOME_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME_OF[name]), name)
