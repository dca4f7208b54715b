"""The backend interface: a pruned weight prepared once in a backend's format, maybe a configuration
searched per token count, then ``y = x W^T`` (a linear layer).

Every backend turns a pruned weight into its own format once (``prepare``), may search its best
configuration per token count (``tune``; such a backend sets ``searches_configuration``), then
multiplies (``matmul``). The kernel harness times them on synthetic weights; the model converter
(``kernels/convert.py``) puts the same backends inside ``nn.Linear`` replacements, so a kernel figure and
a model figure come from the same code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch

from workbench.kernels.backends.tuning import search_copies
from workbench.kernels.measure.environment import DeviceInfo

# error texts that mean "this library cannot do this here", as opposed to a fault
_UNSUPPORTED_MARKERS = ("compute capability", "not implemented for", "not supported", "only supports",
                        "unsupported", "is not compiled")


def is_unsupported_error(err: BaseException) -> bool:
    text = str(err).lower()
    return isinstance(err, NotImplementedError) or any(marker in text for marker in _UNSUPPORTED_MARKERS)


@dataclass
class PreparedWeight:
    data: Any  # the backend's own representation
    nbytes: int  # bytes a matmul reads for the weight, sparse metadata included
    dtype: str
    shape: tuple[int, int]  # (out_features, in_features)
    tuned: dict[int, Any] = field(default_factory=dict)  # token count -> chosen configuration


@dataclass
class TuneResult:
    config: dict[str, Any]
    seconds: float
    cached: bool


def copy_prepared(prepared: PreparedWeight) -> PreparedWeight:
    """Another copy of a prepared weight in memory (to time beyond the L2), its choices kept; tensors that
    the original shares (one compression used by several configurations) stay shared in the copy."""
    clones: dict[int, torch.Tensor] = {}

    def clone(item: Any) -> Any:
        if isinstance(item, torch.Tensor):
            return clones.setdefault(id(item), item.clone())
        if isinstance(item, PreparedWeight):
            return copy_prepared(item)
        if isinstance(item, (list, tuple)):
            return type(item)(clone(part) for part in item)
        if isinstance(item, dict):
            return {key: clone(value) for key, value in item.items()}
        return item

    return replace(prepared, data=clone(prepared.data), tuned=dict(prepared.tuned))


def operands_beyond_l2(prepared: PreparedWeight, x: torch.Tensor) -> list[tuple[PreparedWeight, torch.Tensor]]:
    """``(prepared, x)`` and copies of both, as many as the cuSPARSELt search rotates
    (``tuning.search_copies``), so that candidates are timed with their weight beyond the L2."""
    copies = search_copies(prepared.nbytes + x.nbytes)
    return [(prepared, x)] + [(copy_prepared(prepared), x.clone()) for _ in range(copies - 1)]


class Backend(ABC):
    name: ClassVar[str] = ""
    pattern: ClassVar[str] = "dense"  # dense | 2:4 | block | unstructured
    devices: ClassVar[frozenset[str]] = frozenset({"cuda"})
    dtypes: ClassVar[dict[str, frozenset[str]]] = {}  # device kind -> dtype names
    # True: ``tune`` searches a configuration per weight shape and token count (a one-time cost, a setup row;
    # the choice is kept in the row's ``extra.tuned``)
    searches_configuration: ClassVar[bool] = False

    def __init__(self, block: int = 64):
        self.block = block

    def unsupported(self, device: DeviceInfo, dtype: str) -> str | None:
        """Why this backend cannot run ``dtype`` on ``device`` (None when it can)."""
        if device.kind not in self.devices:
            return f"{self.name} runs on {', '.join(sorted(self.devices))} only"
        if dtype not in self.dtypes.get(device.kind, frozenset()):
            return f"{self.name} has no {dtype} kernel on {device.kind}"
        return None

    def token_multiple(self, dtype: str) -> int:
        """Token counts are padded (with zero rows, outside the timed call) to a multiple of this."""
        return 1

    def min_tokens(self, dtype: str) -> int:
        return 1

    def padded_tokens(self, tokens: int, dtype: str) -> int:
        multiple = self.token_multiple(dtype)
        return max(self.min_tokens(dtype), -(-tokens // multiple) * multiple)

    def math_fraction(self, density: float) -> float:
        """Fraction of the dense multiply-adds the format must do."""
        return density

    @abstractmethod
    def prepare(self, weight: torch.Tensor, dtype: str) -> PreparedWeight:
        """The weight in this backend's format (compressed, padded), ready for ``matmul``."""

    def tune(self, prepared: PreparedWeight, x: torch.Tensor) -> TuneResult | None:
        return None

    def share_choices(self, tuned: PreparedWeight, other: PreparedWeight) -> None:
        """Let ``other``, a weight of the same shape, use the configurations searched on ``tuned``."""
        other.tuned = tuned.tuned

    @abstractmethod
    def matmul(self, prepared: PreparedWeight, x: torch.Tensor) -> torch.Tensor:
        """``x @ W^T`` with the prepared weight: (tokens, in) -> (tokens, out)."""
