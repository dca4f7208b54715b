"""Per-layer rows grouped so that a 30-block model stays readable: by transformer block, by layer type
(``self_attn.q_proj``, ``mlp.down_proj`` ...) or one block's layers; and what structured runs kept.

Structured runs (pattern ``structured:<structure>``) store one row per block's heads or channels (layer
``model.layers.<i>.heads`` / ``.channels``, shape 1 x units, ``extra`` {"kept", "units"}) and, for depth
pruning, one row per block (``model.layers.<i>``, ``extra`` {"kept": 0 or 1}).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

BY_BLOCK, BY_TYPE, EACH_LAYER = "per block", "per layer type", "each layer"
GROUPINGS = [BY_BLOCK, BY_TYPE, EACH_LAYER]
MAX_LAYERS = 40  # more layers than this in one chart: group them (or zoom into one block)
_IN_BLOCK = re.compile(r"^(?:.*\.)?(?:layers|layer|h|blocks)\.(\d+)\.(.+)$")
_BLOCK_ITSELF = re.compile(r"^(?:.*\.)?(?:layers|layer|h|blocks)\.(\d+)$")
STRUCTURE_UNITS = ("heads", "channels", "blocks")


def layer_type(name: str) -> str:
    """What a layer is within its block: ``model.layers.3.self_attn.q_proj`` -> ``self_attn.q_proj``; a
    block itself (``model.layers.3``, depth pruning) -> ``block``; a layer outside the blocks keeps its name."""
    match = _IN_BLOCK.match(name)
    if match:
        return match.group(2)
    return "block" if _BLOCK_ITSELF.match(name) else name


# The order a transformer block computes its layers in (the store keeps layers by name): attention, then MLP.
COMPUTE_ORDER = ("q_proj", "k_proj", "v_proj", "qkv_proj", "o_proj", "query", "key", "value", "out_proj",
                 "gate_proj", "up_proj", "gate_up_proj", "down_proj", "fc1", "fc2", "heads", "channels")


def type_rank(kind: str) -> tuple[int, str]:
    """Sort key of a layer type: by ``COMPUTE_ORDER`` of its last part, then by name."""
    last = kind.rsplit(".", 1)[-1]
    return (COMPUTE_ORDER.index(last) if last in COMPUTE_ORDER else len(COMPUTE_ORDER), kind)


def default_grouping(layers: pd.DataFrame) -> str:
    return EACH_LAYER if layers["layer"].nunique() <= MAX_LAYERS else BY_BLOCK


def _weighted(frame: pd.DataFrame, column: str) -> float:
    values = pd.to_numeric(frame[column], errors="coerce")
    weights = pd.to_numeric(frame["numel"], errors="coerce").fillna(0).where(values.notna(), 0)
    total = weights.sum()
    if total > 0:
        return float((values.fillna(0) * weights).sum() / total)
    return float(values.mean()) if values.notna().any() else np.nan


def group_layers(layers: pd.DataFrame, grouping: str) -> tuple[pd.DataFrame, list[str]]:
    """(rows, order): ``layers`` (with ``run``, ``name``, ``gap`` columns) as one row per run and group
    (``group`` names it): sparsities weighted by each layer's weights, the mean reconstruction error, the
    layer count. ``order`` lists the groups in model order (blocks by number, types as they first appear)."""
    if grouping == EACH_LAYER:
        ordered = layers.assign(kind_rank=layers["layer"].map(lambda name: type_rank(layer_type(name))))
        ordered = ordered.sort_values(["block", "kind_rank", "layer"], na_position="last", kind="stable")
        return ordered.drop(columns="kind_rank").assign(group=ordered["name"], layers=1), list(dict.fromkeys(ordered["name"]))
    if grouping == BY_BLOCK:
        block = pd.to_numeric(layers["block"], errors="coerce")
        key = np.where(block.notna(), "block " + block.astype("Int64").astype(str), "outside the blocks")
        rank = block.fillna(np.inf)
    else:
        key = layers["layer"].map(layer_type)
        rank = key.map(type_rank)
    frame = layers.assign(group=key, rank=rank)
    rows = []
    for (run, group), members in frame.groupby(["run", "group"], sort=False):
        rows.append({"run": run, "run_id": members["run_id"].iloc[0], "group": group, "rank": members["rank"].min(),
                     "achieved_sparsity": _weighted(members, "achieved_sparsity"),
                     "target_sparsity": _weighted(members, "target_sparsity"), "gap": _weighted(members, "gap"),
                     "recon_error": pd.to_numeric(members["recon_error"], errors="coerce").mean(),
                     "numel": int(pd.to_numeric(members["numel"], errors="coerce").fillna(0).sum()),
                     "layers": len(members), "layer": f"{len(members)} layers"})
    grouped = pd.DataFrame(rows)
    if grouped.empty:
        return grouped, []
    grouped = grouped.iloc[sorted(range(len(grouped)), key=lambda i: grouped["rank"].iloc[i])].reset_index(drop=True)
    return grouped, list(dict.fromkeys(grouped["group"]))


def blocks_of(layers: pd.DataFrame) -> list[int]:
    return sorted(int(b) for b in pd.to_numeric(layers["block"], errors="coerce").dropna().unique())


def structure_rows(layers: pd.DataFrame) -> pd.DataFrame:
    """Per structured run and block: what was kept of each unit (heads, channels, blocks) and of how many."""
    structured = layers[layers["pattern"].astype(str).str.startswith("structured:")]
    if structured.empty:
        return pd.DataFrame(columns=["run", "run_id", "block", "unit", "kept", "units", "layer"])
    rows = []
    for row in structured.itertuples(index=False):
        extra = json.loads(row.extra or "{}") if isinstance(row.extra, str) else (row.extra or {})
        if "kept" not in extra:
            continue
        last = str(row.layer).rsplit(".", 1)[-1]
        unit = last if last in ("heads", "channels") else "blocks"
        rows.append({"run": row.run, "run_id": row.run_id, "block": row.block, "unit": unit,
                     "kept": float(extra["kept"]), "units": float(extra.get("units", 1)), "layer": row.layer})
    return pd.DataFrame(rows, columns=["run", "run_id", "block", "unit", "kept", "units", "layer"])
