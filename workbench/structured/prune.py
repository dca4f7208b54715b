"""``structured_prune``: score structures with a criterion, choose how many each layer loses, shrink.

``sparsity`` is the fraction of the decoder's parameters to remove: the parameters of the block list (attention,
MLP and norms of every block; embeddings and output head are not counted and never touched). Whole
structures are removed, so the achieved fraction is the closest one the structures allow (``achieved``).

Head units: ``head_unit="group"`` removes whole key/value groups (a kv head with all its query heads; for
multi-head attention a group is one head); ``head_unit="query"`` keeps every kv head and removes the same
number of query heads from each group: the k-th unit of a layer is the k-th least important query head of
every group (its score the mean of theirs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from pydantic import BaseModel
from torch import nn

from workbench.errors import SpecError
from workbench.structured import allocate
from workbench.structured.allocate import Units
from workbench.structured.criteria import CRITERIA, STRUCTURES, Criterion, resolve_criterion
from workbench.structured.layout import Attention, Layout, model_layout
from workbench.structured.shrink import group_keep_to_heads, shrink_blocks, shrink_channels, shrink_heads
from workbench.structured.stats import Statistics, check_calibration, collect_statistics


@dataclass
class ShrinkResult:
    model: nn.Module  # the same object, shrunk in place
    masks: dict[str, torch.Tensor]  # bool, True = kept, by original layer: "<blocks>.<i>.heads" (per query head),
    #   "<blocks>.<i>.kv_heads", "<blocks>.<i>.channels", "<blocks>" (per block)
    scores: dict[str, torch.Tensor]  # the criterion's scores of the units it ranked, same keys
    kept: dict[str, Any]  # after shrinking: per-layer "heads", "kv_heads", "intermediate"; "blocks" count
    target: float  # requested fraction of decoder parameters removed
    achieved: float  # removed fraction actually reached
    decoder_parameters: int  # before
    removed_parameters: int


def _check_request(criterion: Criterion, structure: str, sparsity: float, head_unit: str) -> tuple[str, ...]:
    if structure not in STRUCTURES:
        raise SpecError(f"unknown structure {structure!r}", f"use one of: {', '.join(STRUCTURES)}")
    kinds = STRUCTURES[structure]
    missing = [kind for kind in kinds if kind not in criterion.structures]
    if missing:
        able = sorted(name for name in CRITERIA if set(kinds) <= resolve_criterion(name).structures)
        raise SpecError(f"criterion {criterion.name!r} does not score {missing[0]}",
                        f"use one of {', '.join(able)} for structure {structure!r}" if able
                        else "prune the structures one at a time")
    if not isinstance(sparsity, (int, float)) or not 0 < sparsity < 1:
        raise SpecError(f"structured sparsity {sparsity!r} is not a fraction in (0, 1)",
                        "give the fraction of decoder parameters to remove, e.g. 0.2")
    if head_unit not in ("group", "query"):
        raise SpecError(f"unknown head unit {head_unit!r}", "use 'group' (whole key/value groups) or 'query'")
    return kinds


def _head_units(scores: torch.Tensor, attention: Attention, layer: int,
                unit: str) -> tuple[Units, Callable[[torch.Tensor], torch.Tensor]]:
    """The layer's removable head units and how a keep mask over them becomes a query-head mask."""
    if unit == "group":
        units = Units(layer, "heads", scores, attention.group_cost())
        return units, lambda keep: group_keep_to_heads(keep, attention.group_size)
    per_group = scores.detach().float().cpu().reshape(attention.num_kv_heads, attention.group_size)
    ranked = torch.sort(per_group, dim=1, stable=True)
    units = Units(layer, "heads", ranked.values.mean(0), attention.num_kv_heads * attention.query_head_cost())

    def to_heads(keep: torch.Tensor) -> torch.Tensor:
        removed = int((~keep).sum())  # slices go in rank order: remove the lowest `removed` of every group
        mask = torch.ones_like(per_group, dtype=torch.bool)
        mask.scatter_(1, ranked.indices[:, :removed], False)
        return mask.reshape(-1)

    return units, to_heads


def _block_masks(crit: Criterion, layout: Layout, stats: Statistics | None, target: float,
                 parsed: BaseModel) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep mask over blocks, block scores)."""
    units = Units(-1, "blocks", crit.block_scores(stats, parsed), torch.tensor(layout.block_parameters()))
    allocate.check_reachable([units], target, "removing blocks")
    return allocate.global_threshold([units], target)[0], units.scores


WidthEntry = tuple[Units, Callable[[torch.Tensor], torch.Tensor], str]  # units, keep -> stored mask, mask key


def width_units(crit: Criterion, layout: Layout, stats: Statistics | None, kinds: tuple[str, ...], head_unit: str,
                parsed: BaseModel) -> list[WidthEntry]:
    """Every block's removable head units and channels, scored by the criterion, with how a keep mask over the
    units becomes the stored mask (per query head for heads) and that mask's key."""
    prefix = layout.prefix
    entries: list[WidthEntry] = []
    for index in range(len(layout)):
        layer_stats = stats.layers[index] if stats is not None and stats.layers is not None else None
        if "heads" in kinds:
            attention = layout.attention(index)
            units, to_heads = _head_units(crit.head_scores(attention, layer_stats, head_unit, parsed),
                                          attention, index, head_unit)
            entries.append((units, to_heads, f"{prefix}.{index}.heads"))
        if "channels" in kinds:
            mlp = layout.mlp(index)
            units = Units(index, "channels", crit.channel_scores(mlp, layer_stats, parsed), mlp.channel_cost())
            entries.append((units, lambda keep: keep, f"{prefix}.{index}.channels"))
    return entries


def _width_masks(crit: Criterion, layout: Layout, stats: Statistics | None, kinds: tuple[str, ...], target: float,
                 head_unit: str, parsed: BaseModel, channel_multiple: int = 1,
                 removed_units: Mapping[str, int] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Masks (query heads, kv heads, channels per layer) and the unit scores behind them; ``removed_units``
    (units removed per mask key, a structured search's answer) replaces the criterion's allocation."""
    prefix = layout.prefix
    entries = width_units(crit, layout, stats, kinds, head_unit, parsed)
    all_units = [units for units, _, _ in entries]
    what = f"removing {'+'.join(kinds)}" + (f" ({head_unit} units)" if "heads" in kinds else "")
    if removed_units is None:
        allocate.check_reachable(all_units, target, what)
    if removed_units is not None:  # the lowest-scored units of each block, as many as the search says
        keeps = [units.keep_lowest_removed(removed_units[key]) for units, _, key in entries]
    elif crit.allocation == "global":
        keeps = allocate.global_threshold(all_units, target)
    elif crit.allocation == "by_block":
        prunable = sum(float(u.costs.sum()) for u in all_units)
        fractions = crit.layer_fractions(stats, target / prunable, parsed)
        keeps = allocate.by_fraction(all_units, [fractions[u.layer] for u in all_units])
    else:
        keeps = allocate.uniform(all_units, target)
    masks, scores = {}, {}
    for (units, convert, key), keep in zip(entries, keeps):
        if units.kind == "channels":
            keep = allocate.round_kept(units, keep, channel_multiple)
        masks[key], scores[key] = convert(keep), units.scores
        if units.kind == "heads":
            attention = layout.attention(units.layer)
            masks[f"{prefix}.{units.layer}.kv_heads"] = masks[key].reshape(
                attention.num_kv_heads, attention.group_size).any(1)
    return masks, scores


def _check_multiple(channel_multiple: int) -> None:
    if not isinstance(channel_multiple, int) or channel_multiple < 1:
        raise SpecError(f"channel_multiple {channel_multiple!r} is not a positive whole number",
                        "give 1 (any width) or a multiple such as 64 for GPU-friendly widths")


def shape_units(layout: Layout, kinds: tuple[str, ...], head_unit: str) -> list[Units]:
    """Every block's head units and channels with their costs and no scores (what the shapes alone say)."""
    units = []
    for index in range(len(layout)):
        if "heads" in kinds:
            attention = layout.attention(index)
            count = attention.num_kv_heads if head_unit == "group" else attention.group_size
            cost = attention.group_cost() if head_unit == "group" else attention.num_kv_heads * attention.query_head_cost()
            units.append(Units(index, "heads", torch.zeros(count), cost))
        if "channels" in kinds:
            mlp = layout.mlp(index)
            units.append(Units(index, "channels", torch.zeros(mlp.width), mlp.channel_cost()))
    return units


def check_request(model: nn.Module, criterion: str | Criterion, structure: str, sparsity: float,
                  params: dict[str, Any] | None = None, head_unit: str = "group", channel_multiple: int = 1) -> None:
    """Everything ``structured_prune`` would refuse before scoring (unknown structure, bad parameters, a target
    whole structures cannot reach), checked on the model's shapes alone: a job calls it before it is stored."""
    crit = resolve_criterion(criterion) if isinstance(criterion, str) else criterion
    kinds = _check_request(crit, structure, sparsity, head_unit)
    _check_multiple(channel_multiple)
    crit.params(params)
    layout = model_layout(model)
    target = sparsity * sum(layout.block_parameters())
    if kinds == ("blocks",):
        costs = torch.tensor(layout.block_parameters())
        units = [Units(-1, "blocks", torch.zeros(len(costs)), costs)]
    else:
        units = shape_units(layout, kinds, head_unit)
    allocate.check_reachable(units, target, f"removing {structure}" + (f" ({head_unit} units)" if "heads" in kinds else ""))


def structured_prune(model: nn.Module, calibration: torch.Tensor | None, criterion: str | Criterion, structure: str,
                     sparsity: float, params: dict[str, Any] | None = None, head_unit: str = "group",
                     tokens_per_batch: int = 2048, channel_multiple: int = 1,
                     blocks_kept: torch.Tensor | None = None,
                     removed_units: Mapping[str, int] | None = None) -> ShrinkResult:
    """Remove ``structure`` ("heads", "channels", "blocks" or "heads+channels") from ``model`` in place, ranked
    by ``criterion`` (a name in ``CRITERIA``) on ``calibration`` windows ((samples, seq_len) token ids; the
    data-free magnitude-sp takes None), until about ``sparsity`` of the decoder's parameters are gone.
    ``params``: the criterion's parameters; ``head_unit``: "group" or "query" (see the module docstring);
    ``channel_multiple``: each layer keeps a multiple of this many channels (``allocate.round_kept``);
    ``blocks_kept``: the blocks to keep (one bool per block, a depth search's answer) instead of the
    criterion's choice, which is then not computed; ``removed_units``: how many units each block loses (per mask
    key, a structured search's answer) instead of the criterion's allocation (it still ranks the units)."""
    crit = resolve_criterion(criterion) if isinstance(criterion, str) else criterion
    kinds = _check_request(crit, structure, sparsity, head_unit)
    _check_multiple(channel_multiple)
    parsed = crit.params(params)
    layout = model_layout(model)
    before = sum(layout.block_parameters())
    target = sparsity * before
    if blocks_kept is not None and kinds != ("blocks",):
        raise SpecError(f"kept blocks were given for structure {structure!r}", "give them with structure 'blocks'")
    if removed_units is not None and kinds == ("blocks",):
        raise SpecError("removal counts per block were given for structure 'blocks'", "give kept blocks instead")
    stats: Statistics | None = None
    if (crit.needs_inputs or crit.needs_blocks) and blocks_kept is None:
        check_calibration(calibration, f"criterion {crit.name!r}")
        stats = collect_statistics(model, calibration, inputs=crit.needs_inputs, blocks=crit.needs_blocks,
                                   tokens_per_batch=tokens_per_batch)
    if blocks_kept is not None:
        keep = blocks_kept.reshape(-1).bool()
        masks, scores = {layout.prefix: keep}, {layout.prefix: keep.float()}
        shrink_blocks(model, keep)
    elif kinds == ("blocks",):
        keep, block_scores = _block_masks(crit, layout, stats, target, parsed)
        masks, scores = {layout.prefix: keep}, {layout.prefix: block_scores}
        shrink_blocks(model, keep)
    else:
        masks, scores = _width_masks(crit, layout, stats, kinds, target, head_unit, parsed, channel_multiple,
                                     removed_units)
        prefix = layout.prefix
        head_keep = {i: masks[f"{prefix}.{i}.heads"] for i in range(len(layout)) if f"{prefix}.{i}.heads" in masks}
        channel_keep = {i: masks[f"{prefix}.{i}.channels"] for i in range(len(layout))
                        if f"{prefix}.{i}.channels" in masks}
        crit.before_shrink(model, stats, head_keep, channel_keep, parsed)  # all checks passed: weights change now
        if head_keep:
            shrink_heads(model, head_keep)
        if channel_keep:
            shrink_channels(model, channel_keep)
    shrunk = model_layout(model)
    after = sum(shrunk.block_parameters())
    kept: dict[str, Any] = {**shrunk.widths(), "blocks": len(shrunk)}
    return ShrinkResult(model, masks, scores, kept, float(sparsity), (before - after) / before, before,
                        before - after)


def shrink_to_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Remove from ``model`` what stored structure masks (named as ``ShrinkResult.masks``; True = kept) say
    was removed: the same widths and the same surviving rows, for timing a run's shape or rebuilding it. FLAP's
    bias compensation is not in the masks; a timing does not depend on it."""
    prefix = model_layout(model).prefix
    per_layer = {kind: {int(name.rsplit(".", 2)[1]): mask.reshape(-1).bool()
                        for name, mask in masks.items() if name.startswith(f"{prefix}.") and name.endswith(f".{kind}")}
                 for kind in ("heads", "channels")}
    if per_layer["heads"]:
        shrink_heads(model, per_layer["heads"])
    if per_layer["channels"]:
        shrink_channels(model, per_layer["channels"])
    if prefix in masks:
        shrink_blocks(model, masks[prefix].reshape(-1).bool())
