"""Per-layer sparsity for a model-wide target: uniform, or Erdos-Renyi-Kernel (ERK).

ERK (Evci et al. 2020, "Rigging the Lottery", Sec. 3; Mocanu et al. 2018 for the Erdos-Renyi form):
a layer's density is proportional to (n_in + n_out + kh + kw) / (n_in * n_out * kh * kw), so small
layers are denser. The scale eps solves sum_l d_l * N_l = (1 - s) * sum_l N_l; a layer whose density
would exceed 1 is made dense and eps is solved again over the rest.
"""

from __future__ import annotations

import torch
from torch import nn

from workbench.errors import SpecError
from workbench.training.sparsity import weight_of


def erk_raw(shape: torch.Size | tuple[int, ...]) -> float:
    """The unnormalised ERK density of a weight shape: (sum of dims) / (product of dims)."""
    total = 1
    for dim in shape:
        total *= dim
    return sum(shape) / total


def erk_sparsities(shapes: dict[str, tuple[int, ...]], sparsity: float) -> dict[str, float]:
    counts = {name: int(torch.Size(shape).numel()) for name, shape in shapes.items()}
    budget = (1 - sparsity) * sum(counts.values())
    dense: set[str] = set()
    while True:
        free = [name for name in shapes if name not in dense]
        remaining = budget - sum(counts[name] for name in dense)
        if not free or remaining <= 0:
            raise SpecError(f"ERK cannot reach sparsity {sparsity:g} on these layers",
                            "lower the sparsity or use density: uniform")
        eps = remaining / sum(erk_raw(shapes[name]) * counts[name] for name in free)
        over = [name for name in free if eps * erk_raw(shapes[name]) > 1]
        if not over:
            break
        dense.update(over)
    return {name: 0.0 if name in dense else 1 - eps * erk_raw(shapes[name]) for name in shapes}


def layer_sparsities(layers: dict[str, nn.Module], sparsity: float, density: str) -> dict[str, float]:
    if density == "uniform":
        return {name: sparsity for name in layers}
    if density == "erk":
        return erk_sparsities({name: tuple(weight_of(m).shape) for name, m in layers.items()}, sparsity)
    raise SpecError(f"unknown density {density!r}", "use uniform or erk")
