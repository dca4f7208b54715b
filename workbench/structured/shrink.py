"""Physically removing structures: attention heads, MLP channels and whole blocks.

The model is changed in place and its config follows, so that the result is a dense, smaller model of the
stock class:

* heads (``shrink_heads``): whole heads of q/k/v (``head_dim`` rows each) and the same columns of o, never
  part of a head (rotary embeddings rotate pairs inside ``head_dim``). Under grouped-query attention every
  kept key/value group must keep the same number of query heads; a group that keeps none loses its kv head.
  ``config.head_dim`` is set explicitly so that it is not recomputed from ``hidden_size / heads``.
* channels (``shrink_channels``): rows of gate/up (``intermediate.dense``) and columns of down
  (``output.dense``) together.
* blocks (``shrink_blocks``): entries of the block list; ``layer_idx`` renumbered so that a key/value cache
  lines up, ``num_hidden_layers`` and ``layer_types`` updated.

Embeddings and the output head are never touched, so tied embeddings stay tied.

Per-layer widths may differ. The config then keeps valid global values and records the real widths in
``config.workbench_layer_widths`` (``{"heads": [...], "kv_heads": [...], "intermediate": [...]}``);
``save_pretrained`` writes them and ``load_shrunk`` rebuilds the model from them. When every layer has the
same widths and the config can state them, the global values are those widths and plain
``from_pretrained`` loads the folder (``plain_loadable``). "Can state": transformers validates
``hidden_size % num_attention_heads == 0`` (on save and load), so a Llama whose uniform head count does not
divide hidden_size keeps its earlier head count in the config and needs ``load_shrunk``; BERT derives its
head size from ``hidden_size / num_attention_heads``, so a BERT with heads removed always does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from workbench.errors import AssetError, SpecError
from workbench.structured.layout import Attention, Layout, head_rows, model_layout

WIDTHS_KEY = "workbench_layer_widths"

Mask = torch.Tensor | Sequence[bool]


# ---------------------------------------------------------------- masks and indices
def _as_mask(keep: Mask, size: int, what: str) -> torch.Tensor:
    mask = torch.as_tensor(keep).reshape(-1).cpu()
    if mask.dtype != torch.bool:
        raise SpecError(f"the keep mask of {what} has dtype {mask.dtype}", "pass one bool per structure, True = kept")
    if mask.numel() != size:
        raise SpecError(f"the keep mask of {what} has {mask.numel()} entries but there are {size}",
                        f"pass exactly {size} bools, True = kept")
    return mask


def removal_mask(remove: Sequence[int], size: int, what: str) -> torch.Tensor:
    """The keep mask that removes the given indices; out-of-range, repeated or too many indices are refused."""
    remove = [int(i) for i in remove]
    if len(remove) > size:
        raise SpecError(f"asked to remove {len(remove)} {what} but there are only {size}",
                        f"remove at most {size - 1} of them (at least one must stay)")
    bad = [i for i in remove if not 0 <= i < size]
    if bad:
        raise SpecError(f"{what} {bad[0]} does not exist (there are {size}, numbered 0..{size - 1})",
                        "pass indices in range")
    if len(set(remove)) != len(remove):
        raise SpecError(f"an index of {what} is repeated in {sorted(remove)}", "name each structure once")
    keep = torch.ones(size, dtype=torch.bool)
    keep[remove] = False
    return keep


def group_keep_to_heads(keep_groups: Mask, group_size: int) -> torch.Tensor:
    """Query-head keep mask from a key/value-group keep mask (a group keeps or loses all its query heads)."""
    return torch.as_tensor(keep_groups, dtype=torch.bool).repeat_interleave(group_size)


def _check_layer(layout: Layout, layer: int) -> None:
    if not 0 <= layer < len(layout):
        raise SpecError(f"layer {layer} does not exist (the model has {len(layout)} blocks)", "pass indices in range")


# ---------------------------------------------------------------- linear layers
def _new_parameter(like: nn.Parameter, data: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(data.contiguous(), requires_grad=like.requires_grad)


@torch.no_grad()
def slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> None:
    """Keep rows (``dim`` 0: outputs, and their bias) or columns (``dim`` 1: inputs) ``index`` of a layer."""
    index = index.to(linear.weight.device, torch.long)
    linear.weight = _new_parameter(linear.weight, linear.weight.index_select(dim, index))
    if dim == 0:
        if linear.bias is not None:
            linear.bias = _new_parameter(linear.bias, linear.bias.index_select(0, index))
        linear.out_features = int(index.numel())
    else:
        linear.in_features = int(index.numel())


def _resize_linear(linear: nn.Linear, out_features: int | None = None, in_features: int | None = None) -> None:
    """New, uninitialised weights of the given shape on the layer's device (``load_shrunk`` fills them)."""
    out_features = linear.out_features if out_features is None else out_features
    in_features = linear.in_features if in_features is None else in_features
    weight = linear.weight
    linear.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=weight.dtype, device=weight.device),
                                 requires_grad=weight.requires_grad)
    if linear.bias is not None:
        linear.bias = nn.Parameter(torch.empty(out_features, dtype=linear.bias.dtype, device=linear.bias.device),
                                   requires_grad=linear.bias.requires_grad)
    linear.out_features, linear.in_features = out_features, in_features


# ---------------------------------------------------------------- heads
def _check_head_mask(attn: Attention, keep: torch.Tensor, layer: int) -> torch.Tensor:
    """Kept query heads per kv group; refuses an empty layer and uneven groups."""
    if not keep.any():
        raise SpecError(f"the request removes every attention head of layer {layer}",
                        "keep at least one head per layer, or remove the whole block (structure 'blocks')")
    per_group = keep.view(attn.num_kv_heads, attn.group_size).sum(1)
    kept = per_group[per_group > 0]
    if (kept != kept[0]).any():
        raise SpecError(f"layer {layer}: the kept query heads split the key/value groups unevenly "
                        f"({per_group.tolist()} of {attn.group_size} kept per group)",
                        "keep the same number of query heads in every kept group, or remove whole groups "
                        "(a key/value head with all its query heads)")
    return per_group


def _set_head_counts(attn: Attention, heads: int, kv_heads: int) -> None:
    """The attributes the attention forward reads (Llama: the kv repeat factor; BERT: the head count)."""
    module = attn.module
    if hasattr(module, "num_key_value_groups"):
        module.num_key_value_groups = heads // kv_heads
    for name, value in (("num_heads", heads), ("num_key_value_heads", kv_heads), ("num_attention_heads", heads),
                        ("all_head_size", heads * attn.head_dim)):
        if hasattr(module, name):
            setattr(module, name, value)


def shrink_heads(model: nn.Module, keep: Mapping[int, Mask]) -> None:
    """Remove attention heads: ``keep[layer]`` holds one bool per query head (True = kept). Under
    grouped-query attention a key/value head goes with the last of its query heads, and every kept group
    must keep the same number of query heads."""
    layout = model_layout(model)
    plans = []
    for layer, mask in keep.items():
        _check_layer(layout, layer)
        attn = layout.attention(layer)
        mask = _as_mask(mask, attn.num_heads, f"the query heads of layer {layer}")
        per_group = _check_head_mask(attn, mask, layer)
        plans.append((attn, mask, per_group))
    for attn, mask, per_group in plans:  # all checked before any layer changes
        head_dim = attn.head_dim
        q_rows = head_rows(mask.nonzero().flatten(), head_dim)
        kv_rows = head_rows((per_group > 0).nonzero().flatten(), head_dim)
        slice_linear(attn.q, q_rows, 0)
        slice_linear(attn.k, kv_rows, 0)
        slice_linear(attn.v, kv_rows, 0)
        slice_linear(attn.o, q_rows, 1)
        _set_head_counts(attn, int(mask.sum()), int((per_group > 0).sum()))
    sync_config(model)


def remove_heads(model: nn.Module, remove: Mapping[int, Sequence[int]], unit: str = "query") -> None:
    """Remove heads by index: query heads (``unit="query"``) or whole key/value groups (``unit="group"``)."""
    layout = model_layout(model)
    keep = {}
    for layer, indices in remove.items():
        _check_layer(layout, layer)
        attn = layout.attention(layer)
        if unit == "group":
            groups = removal_mask(indices, attn.num_kv_heads, f"key/value groups of layer {layer}")
            keep[layer] = group_keep_to_heads(groups, attn.group_size)
        elif unit == "query":
            keep[layer] = removal_mask(indices, attn.num_heads, f"query heads of layer {layer}")
        else:
            raise SpecError(f"unknown head unit {unit!r}", "use 'query' or 'group'")
    shrink_heads(model, keep)


# ---------------------------------------------------------------- channels
def shrink_channels(model: nn.Module, keep: Mapping[int, Mask]) -> None:
    """Remove MLP intermediate channels: ``keep[layer]`` holds one bool per channel (True = kept)."""
    layout = model_layout(model)
    plans = []
    for layer, mask in keep.items():
        _check_layer(layout, layer)
        mlp = layout.mlp(layer)
        mask = _as_mask(mask, mlp.width, f"the MLP channels of layer {layer}")
        if not mask.any():
            raise SpecError(f"the request removes every MLP channel of layer {layer}",
                            "keep at least one channel per layer, or remove the whole block (structure 'blocks')")
        plans.append((mlp, mask))
    for mlp, mask in plans:
        index = mask.nonzero().flatten()
        for linear in mlp.inputs:
            slice_linear(linear, index, 0)
        slice_linear(mlp.output, index, 1)
        if hasattr(mlp.module, "intermediate_size"):
            mlp.module.intermediate_size = int(index.numel())
    sync_config(model)


def remove_channels(model: nn.Module, remove: Mapping[int, Sequence[int]]) -> None:
    layout = model_layout(model)
    for layer in remove:
        _check_layer(layout, layer)
    shrink_channels(model, {layer: removal_mask(indices, layout.mlp(layer).width, f"MLP channels of layer {layer}")
                            for layer, indices in remove.items()})


# ---------------------------------------------------------------- blocks
def _set_path(root: nn.Module, path: str, value: nn.Module) -> None:
    *parents, last = path.split(".")
    node = root
    for part in parents:
        node = getattr(node, part)
    setattr(node, last, value)


def shrink_blocks(model: nn.Module, keep: Mask) -> None:
    """Remove whole blocks (``keep``: one bool per block, True = kept); the kept ones are renumbered."""
    layout = model_layout(model)
    mask = _as_mask(keep, len(layout), "the blocks")
    if not mask.any():
        raise SpecError("the request removes every block of the model", "keep at least one block")
    kept = [int(i) for i in mask.nonzero().flatten()]
    blocks = nn.ModuleList([layout.blocks[i] for i in kept])
    for new_index, block in enumerate(blocks):
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index  # the key/value cache is indexed by it
    _set_path(model, layout.prefix, blocks)
    config = model.config
    config.num_hidden_layers = len(kept)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [config.layer_types[i] for i in kept]
    sync_config(model)


def remove_blocks(model: nn.Module, remove: Sequence[int]) -> None:
    shrink_blocks(model, removal_mask(remove, len(model_layout(model)), "blocks"))


# ---------------------------------------------------------------- biases (FLAP's compensation needs them)
def ensure_output_bias(model: nn.Module, kind: str) -> None:
    """Give every block's attention output (``kind="heads"``) or MLP output (``"channels"``) projection a
    bias, with the config saying so, so that a compensation can be added and saved.

    BERT has these biases already. Llama states them with ``attention_bias`` (which also gives q/k/v a bias)
    and ``mlp_bias`` (also gate/up): those new biases are zeros, so the function is unchanged. Other
    architectures (Qwen2's o_proj, Mistral) cannot state them in their config and are refused."""
    layout = model_layout(model)
    if kind == "heads":
        attention = [layout.attention(i) for i in range(len(layout))]
        groups = [(a.q, a.k, a.v, a.o) for a in attention]  # the output projection last
        flag = "attention_bias"
    elif kind == "channels":
        mlps = [layout.mlp(i) for i in range(len(layout))]
        groups = [(*m.inputs, m.output) for m in mlps]
        flag = "mlp_bias"
    else:
        raise ValueError(f"kind is 'heads' or 'channels', not {kind!r}")
    outputs = [g[-1] for g in groups]
    if all(linear.bias is not None for linear in outputs):
        return
    if model.config.model_type != "llama":
        raise SpecError(f"bias compensation needs a bias on every {'attention' if kind == 'heads' else 'MLP'} output "
                        f"projection, which a {model.config.model_type!r} config cannot state",
                        "turn compensation off (flap params: compensate: false), or use a Llama-architecture model")
    with torch.no_grad():
        for group in groups:
            for linear in group:
                if linear.bias is None:
                    w = linear.weight
                    linear.bias = nn.Parameter(torch.zeros(linear.out_features, dtype=w.dtype, device=w.device),
                                               requires_grad=w.requires_grad)
    setattr(model.config, flag, True)


# ---------------------------------------------------------------- config
def sync_config(model: nn.Module) -> None:
    """Make the config describe the model: per-layer widths always, global values where they are uniform
    and the config can state them (else left at their earlier, valid values)."""
    layout = model_layout(model)
    config = model.config
    widths = layout.widths()
    setattr(config, WIDTHS_KEY, widths)
    heads, kv_heads, inter = widths["heads"], widths["kv_heads"], widths["intermediate"]
    if len(set(inter)) == 1:
        config.intermediate_size = inter[0]
    if layout.family == "llama":
        config.head_dim = layout.attention(0).head_dim
        if len(set(heads)) == 1 and len(set(kv_heads)) == 1 and config.hidden_size % heads[0] == 0:
            config.num_attention_heads, config.num_key_value_heads = heads[0], kv_heads[0]
    # BERT derives its head size from hidden_size / num_attention_heads: its global head count stays


def plain_loadable(config) -> bool:
    """Whether the stock class built from this config has the recorded widths (plain ``from_pretrained``)."""
    widths = getattr(config, WIDTHS_KEY, None)
    if not widths:
        return True
    layers = config.num_hidden_layers
    expected = {"heads": [config.num_attention_heads] * layers, "intermediate": [config.intermediate_size] * layers,
                "kv_heads": [getattr(config, "num_key_value_heads", None) or config.num_attention_heads] * layers}
    return all(list(widths.get(key, value)) == value for key, value in expected.items())


# ---------------------------------------------------------------- loading
def _resize_block(layout: Layout, index: int, heads: int, kv_heads: int, intermediate: int) -> None:
    attn = layout.attention(index)
    _resize_linear(attn.q, out_features=heads * attn.head_dim)
    _resize_linear(attn.k, out_features=kv_heads * attn.head_dim)
    _resize_linear(attn.v, out_features=kv_heads * attn.head_dim)
    _resize_linear(attn.o, in_features=heads * attn.head_dim)
    _set_head_counts(attn, heads, kv_heads)
    mlp = layout.mlp(index)
    for linear in mlp.inputs:
        _resize_linear(linear, out_features=intermediate)
    _resize_linear(mlp.output, in_features=intermediate)
    if hasattr(mlp.module, "intermediate_size"):
        mlp.module.intermediate_size = intermediate


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise AssetError(f"{folder} holds no safetensors weights", "save the shrunk model with save_pretrained")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(folder / name))
    return state


def load_shrunk(path: str | Path) -> nn.Module:
    """Load a folder written by ``save_pretrained`` from a shrunk model, whatever its per-layer widths.

    The stock class is built from the config without allocating weights, each block is resized to the
    recorded widths, then the saved weights are assigned and tied embeddings re-tied. A folder whose config
    states its widths globally is simply loaded with ``from_pretrained``. A BertModel saved without its
    pooling layer comes back without it."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    folder = Path(path)
    config = AutoConfig.from_pretrained(folder)
    causal = any(a.endswith("ForCausalLM") for a in (getattr(config, "architectures", None) or []))
    loader = AutoModelForCausalLM if causal else AutoModel
    if plain_loadable(config):
        return loader.from_pretrained(folder).eval()
    widths = getattr(config, WIDTHS_KEY)
    with init_empty_weights():  # parameters on the meta device; buffers (rotary frequencies) real
        model = loader.from_config(config)
    layout = model_layout(model)
    for index in range(len(layout)):
        _resize_block(layout, index, widths["heads"][index], widths["kv_heads"][index], widths["intermediate"][index])
    state = _read_weights(folder)
    if getattr(model, "pooler", None) is not None and not any(k.startswith("pooler.") for k in state):
        model.pooler = None
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.unexpected_keys:
        raise AssetError(f"{folder}: weights {result.unexpected_keys[:3]} have no place in the model",
                         "load the folder with the model class that saved it")
    if getattr(config, "tie_word_embeddings", False) and model.get_output_embeddings() is not None:
        model.get_output_embeddings().weight = model.get_input_embeddings().weight
    missing = [name for name, p in model.named_parameters() if p.is_meta]
    if missing:
        raise AssetError(f"{folder}: no saved weights for {missing[:3]}",
                         "save the shrunk model with save_pretrained, which writes every weight")
    return model.eval()
