"""The level database: every prunable layer pruned at levels -L..+L around the target sparsity.

**Geometry.** One level step removes the same number of weights, ``step``, in every layer, so a candidate
(one level per layer) whose levels sum to zero prunes exactly as many weights as level 0 everywhere,
which is the uniform allocation of the same method. A layer's count at level ``l`` is
``base + l * step``, ``base`` being what the method prunes of it at the target ``s`` (Wanda:
``rows * int(cols * s)``, whole rows; SparseGPT: ``round(s * rows * width)`` in each column block).
``step`` is a multiple of every layer's rows and columns, so the target
``t = s + l * step / numel`` moves Wanda's per-row count by ``l * step / rows`` and every SparseGPT
column block by ``l * step / cols`` per column, both whole numbers: the method meets the count
exactly, in the database and in a later prune run given the same per-layer targets. Each target is
checked against the method's own count (and nudged by a few ulps where floating point lands one
short); each database mask is checked against it again. The requested step (a fraction of the smallest
layer, ``levels.step``) is rounded up to that multiple. A layer's levels stop where it would keep less
than one row or column's worth of weights or prune fewer than none (EvoPress does the same), so small
layers may have fewer levels than ``levels.max``.

**N:M levels** (``nm_geometry``). Level ``l`` of a layer keeps ``N - l`` of every ``M`` inputs, ``N:M``
being the target pattern, from ``M - 1`` kept down to 1 (``levels.max`` steps either way at most). One
step moves a layer's count by ``numel / M`` weights, which differs between layers of different sizes, so
the exact total needs one more rule: a move lowers one layer's level and raises another's *of the same
number of weights* (the layers fall into classes by size; Llama's q/o, k/v, and gate/up/down each form
one). Every class keeps its levels' sum at zero, so every candidate prunes exactly what the uniform
``N:M`` prunes, class by class. The target handed to the method is ``1 - (N - l) / M``, from which Wanda
and SparseGPT read each layer's kept count (``masks.nm_kept``).

**Statistics.** As EvoPress, every level of a layer is computed from the dense model's calibration
activations (the pipeline in observe-only mode: no layer sees its predecessors pruned), so any
combination of levels can be put together afterwards.

**Storage.** One safetensors file per layer: Wanda's masks as packed bits (``mask.<level>``, numpy
packbits order, 1 = kept), applied to the dense weights; SparseGPT's reconstructed weights
(``weight.<level>``, the model's dtype, pruned entries zero). ``manifest.json`` (the geometry and
every target) is written last, and the folder renamed into place, so a half-built database is never read.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from workbench.errors import PruningError
from workbench.pruning.masks import check_nm_width, pack_bits, pruned_count
from workbench.pruning.pipeline import GroupPruner, InputStatistics, LayerResult, Needs, run_pipeline
from workbench.search.evolution import Space
from workbench.values import Pattern

DATABASE_VERSION = "1"  # bumped when a database's content for the same inputs changes
MAX_NUDGES = 64
UNSTRUCTURED = Pattern(name="unstructured")

# (rows, cols, target sparsity) -> weights the method prunes of such a layer
Counter = Callable[[int, int, float], int]


def wanda_count(rows: int, cols: int, sparsity: float) -> int:
    """What Wanda prunes (``masks.row_topk_mask``: ``int(cols * sparsity)`` in every row)."""
    return rows * int(cols * sparsity)


def sparsegpt_counter(blocksize: int) -> Counter:
    """What SparseGPT prunes: ``masks.topk_mask`` over each block of ``blocksize`` columns x all rows."""

    def count(rows: int, cols: int, sparsity: float) -> int:
        return sum(pruned_count(rows * (min(start + blocksize, cols) - start), sparsity)
                   for start in range(0, cols, blocksize))

    return count


def method_counter(method: str, params: dict[str, Any]) -> Counter:
    if method == "wanda":
        return wanda_count
    if method == "sparsegpt":
        return sparsegpt_counter(int(params.get("blocksize", 128)))
    raise PruningError(f"no level database for method {method!r}", "use prune_method: wanda or sparsegpt")


def exact_target(count: Counter, rows: int, cols: int, guess: float, wanted: int) -> float:
    """A target near ``guess`` for which ``count`` gives exactly ``wanted`` (floating point can land an ulp
    short of a whole number of weights; the count is monotone in the target)."""
    target = guess
    for _ in range(MAX_NUDGES):
        got = count(rows, cols, target)
        if got == wanted:
            return target
        target = math.nextafter(target, 1.0 if got < wanted else 0.0)
    raise PruningError(f"no target sparsity near {guess:.12g} prunes exactly {wanted} weights of a {rows}x{cols} "
                       "layer", "report this as a bug in the level geometry")


@dataclass(frozen=True)
class LevelGeometry:
    """Where each layer's levels lie: counts, admissible range and the target that meets each count."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, int], ...]
    sparsity: float
    step: int  # weights per level, the same in every layer (unstructured)
    base: tuple[int, ...]  # pruned at level 0 (the method's uniform count)
    low: tuple[int, ...]  # lowest admissible level (<= 0)
    high: tuple[int, ...]  # highest admissible level (>= 0)
    targets: tuple[tuple[float, ...], ...]  # per layer, the target of levels low..high
    group: int = 0  # N:M levels: M (a step is numel / M weights of the layer); 0 for unstructured levels

    @property
    def size(self) -> int:
        return len(self.names)

    def numel(self, index: int) -> int:
        rows, cols = self.shapes[index]
        return rows * cols

    def layer_step(self, index: int) -> int:
        """Weights one level moves in this layer."""
        return self.numel(index) // self.group if self.group else self.step

    def count(self, index: int, level: int) -> int:
        return self.base[index] + level * self.layer_step(index)

    def pattern(self, level: int) -> Pattern:
        """What a level means to the method: unstructured, or the N:M pattern keeping ``N - level``."""
        if not self.group:
            return UNSTRUCTURED
        return Pattern(name="nm", keep=round(self.group * (1 - self.sparsity)) - level, group=self.group)

    def target(self, index: int, level: int) -> float:
        if not self.low[index] <= level <= self.high[index]:
            raise ValueError(f"level {level} of {self.names[index]} is outside {self.low[index]}..{self.high[index]}")
        return self.targets[index][level - self.low[index]]

    def check(self, candidate: tuple[int, ...]) -> None:
        if not self.space().admits(candidate):
            raise ValueError(f"a candidate has one level per layer ({self.size}) in its range, summing to 0 (in "
                             f"every class of layers of one size, for N:M), not {candidate}")

    def pruned(self, candidate: tuple[int, ...]) -> int:
        """Weights a candidate prunes in all layers together."""
        return sum(self.count(i, level) for i, level in enumerate(candidate))

    def total(self) -> int:
        return sum(self.numel(i) for i in range(self.size))

    def sparsity_of(self, candidate: tuple[int, ...]) -> float:
        return self.pruned(candidate) / self.total()

    def space(self) -> Space:
        """The search space of these levels: each layer in its range, all levels summing to zero (N:M: the
        levels of the layers of each size)."""
        if not self.group:
            return Space(self.low, self.high)
        sizes = list(dict.fromkeys(self.numel(i) for i in range(self.size)))
        classes = tuple(sizes.index(self.numel(i)) for i in range(self.size))
        return Space(self.low, self.high, classes, (0,) * len(sizes))

    def allocation(self, candidate: tuple[int, ...]) -> dict[str, float]:
        """Per-layer targets (what a prune job hands its method) of a candidate."""
        return {name: self.target(i, level) for i, (name, level) in enumerate(zip(self.names, candidate))}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LevelGeometry":
        return cls(names=tuple(data["names"]), shapes=tuple(tuple(s) for s in data["shapes"]),
                   sparsity=float(data["sparsity"]), step=int(data["step"]), base=tuple(data["base"]),
                   low=tuple(data["low"]), high=tuple(data["high"]),
                   targets=tuple(tuple(float(t) for t in row) for row in data["targets"]),
                   group=int(data.get("group", 0)))


def level_step(shapes: list[tuple[int, int]], fraction: float) -> int:
    """``fraction`` of the smallest layer's weights, rounded up to a multiple of every row and column count."""
    unit = math.lcm(*(dim for shape in shapes for dim in shape))
    smallest = min(rows * cols for rows, cols in shapes)
    return unit * max(1, math.ceil(fraction * smallest / unit - 1e-9))


def level_geometry(names: list[str], shapes: list[tuple[int, int]], sparsity: float, max_level: int,
                   step_fraction: float, count: Counter) -> LevelGeometry:
    step = level_step(shapes, step_fraction)
    base, low, high, targets = [], [], [], []
    for rows, cols in shapes:
        numel = rows * cols
        zero = count(rows, cols, sparsity)
        lowest = -min(max_level, zero // step)
        # keep at least one row's and one column's worth of weights
        highest = max(0, min(max_level, (numel - max(rows, cols) - zero) // step))
        base.append(zero)
        low.append(lowest)
        high.append(highest)
        targets.append(tuple(exact_target(count, rows, cols, sparsity + level * step / numel, zero + level * step)
                             for level in range(lowest, highest + 1)))
    if all(lo == hi == 0 for lo, hi in zip(low, high)):
        raise PruningError(f"a level step of {step} weights moves no layer (the smallest has "
                           f"{min(r * c for r, c in shapes)} weights)", "lower levels.step or the sparsity's distance to 0 or 1")
    return LevelGeometry(tuple(names), tuple(tuple(s) for s in shapes), sparsity, step, tuple(base), tuple(low),
                         tuple(high), tuple(targets))


def nm_geometry(names: list[str], shapes: list[tuple[int, int]], pattern: Pattern, max_level: int) -> LevelGeometry:
    """N:M levels around ``pattern`` (see the module docstring): level ``l`` keeps ``N - l`` of every M."""
    group, kept = pattern.group, pattern.keep
    base, low, high, targets = [], [], [], []
    for name, (rows, cols) in zip(names, shapes):
        check_nm_width(name, cols, group)
        base.append(rows * cols // group * (group - kept))
        low.append(-min(max_level, group - 1 - kept))  # down to M - 1 kept
        high.append(min(max_level, kept - 1))  # up to 1 kept
        targets.append(tuple(1 - (kept - level) / group for level in range(low[-1], high[-1] + 1)))
    geometry = LevelGeometry(tuple(names), tuple(tuple(s) for s in shapes), 1 - kept / group, 0, tuple(base),
                             tuple(low), tuple(high), tuple(targets), group)
    space = geometry.space()
    if all(space.classes.count(space.classes[i]) < 2 or low[i] == high[i] == 0 for i in range(len(names))):
        raise PruningError(f"pattern {pattern} leaves no layer a level to trade with another of its size",
                           "use a larger M (e.g. 4:8) or more layers")
    return geometry


def _pruner(method: str, params: dict[str, Any], targets: dict[str, float], pattern: Pattern) -> GroupPruner:
    if method == "wanda":
        from workbench.pruning.wanda import wanda_pruner

        return wanda_pruner(targets, pattern)
    from workbench.pruning.sparsegpt import sparsegpt_pruner

    return sparsegpt_pruner(targets, pattern, int(params.get("blocksize", 128)), float(params.get("dampening", 0.01)))


def _needs(method: str) -> Needs:
    return Needs(sq_norm=True) if method == "wanda" else Needs(hessian=True)


def _layer_file(folder: Path, index: int) -> Path:
    return folder / f"layer-{index:04d}.safetensors"


def build_database(model: nn.Module, layers: dict[str, nn.Module], calibration: torch.Tensor,
                   geometry: LevelGeometry, method: str, params: dict[str, Any], folder: Path,
                   precision: str = "model", progress: bool = False) -> None:
    """Compute every level of every layer from dense calibration statistics and write the database to
    ``folder`` (built beside it and renamed into place; the model's weights are not changed)."""
    from safetensors.torch import save_file

    index_of = {name: i for i, name in enumerate(geometry.names)}
    building = folder.with_name(f"{folder.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)

    def observe(modules: dict[str, nn.Linear], stats: InputStatistics) -> dict[str, LayerResult]:
        tensors: dict[str, dict[str, torch.Tensor]] = {name: {} for name in modules}
        indices = {name: index_of[name] for name in modules}
        for level in range(min(geometry.low[i] for i in indices.values()),
                           max(geometry.high[i] for i in indices.values()) + 1):
            inside = {name: m for name, m in modules.items()
                      if geometry.low[indices[name]] <= level <= geometry.high[indices[name]]}
            if not inside:
                continue
            targets = {name: geometry.target(indices[name], level) for name in inside}
            for name, result in _pruner(method, params, targets, geometry.pattern(level))(inside, stats).items():
                pruned = int((~result.mask).sum())
                wanted = geometry.count(indices[name], level)
                if pruned != wanted:
                    raise PruningError(f"{method} pruned {pruned} weights of {name} at level {level}, not {wanted}",
                                       "report this as a bug in the level geometry")
                if result.weight is None:
                    tensors[name][f"mask.{level}"] = pack_bits(result.mask.cpu())
                else:
                    dtype = inside[name].weight.dtype
                    tensors[name][f"weight.{level}"] = (result.weight.to(dtype) * result.mask).cpu().contiguous()
        for name, payload in tensors.items():
            save_file(payload, str(_layer_file(building, indices[name])))
        return {}  # nothing is applied: every block sees dense inputs

    run_pipeline(model, layers, calibration, _needs(method), observe, observe_only=True, progress=progress,
                 desc=f"levels ({method})", precision=precision)
    manifest = {"version": DATABASE_VERSION, "method": method, "params": params, "geometry": geometry.as_dict()}
    (building / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(building, folder)


def load_geometry(folder: Path) -> LevelGeometry | None:
    """The geometry of a complete database in ``folder``, or None when there is none."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return None
    data = json.loads(manifest.read_text())
    if data.get("version") != DATABASE_VERSION:
        return None
    return LevelGeometry.from_dict(data["geometry"])


def database_method(folder: Path) -> str:
    return json.loads((folder / "manifest.json").read_text())["method"]


class LevelSwapper:
    """Puts a candidate's levels into the model's layers, touching only the layers whose level changed.

    Wanda's packed masks are held in memory and applied to a copy of the dense weights; SparseGPT's
    weights are read from the database's files when a layer changes level. ``restore`` puts the dense
    weights back."""

    def __init__(self, layers: dict[str, nn.Module], geometry: LevelGeometry, folder: Path):
        from safetensors.torch import load_file

        if tuple(layers) != geometry.names:
            raise PruningError("the level database was built for other layers than the model's",
                               "delete the database folder and run the search again")
        self.modules = [layers[name] for name in geometry.names]
        self.geometry = geometry
        self.folder = folder
        self.dense = [m.weight.detach().clone() for m in self.modules]
        self.current: list[int | None] = [None] * geometry.size
        self.is_weights = database_method(folder) != "wanda"  # SparseGPT: reconstructed weights, read per swap
        self.packed = [] if self.is_weights else [
            {int(key.split(".", 1)[1]): value for key, value in load_file(str(_layer_file(folder, i))).items()}
            for i in range(geometry.size)]

    def _weight(self, index: int, level: int) -> torch.Tensor:
        if self.is_weights:
            from safetensors import safe_open

            with safe_open(str(_layer_file(self.folder, index)), framework="pt") as handle:
                return handle.get_tensor(f"weight.{level}")
        packed = self.packed[index][level].numpy()
        dense = self.dense[index]
        bits = np.unpackbits(packed, count=dense.numel()).astype(bool)
        return dense * torch.from_numpy(bits).view(dense.shape).to(dense.device)

    @torch.no_grad()
    def apply(self, candidate: tuple[int, ...]) -> None:
        self.geometry.check(candidate)
        for index, level in enumerate(candidate):
            if self.current[index] != level:
                self.modules[index].weight.copy_(self._weight(index, level))
                self.current[index] = level

    @torch.no_grad()
    def restore(self) -> None:
        for index, module in enumerate(self.modules):
            module.weight.copy_(self.dense[index])
            self.current[index] = None
