"""Where the prunable weights and the transformer blocks of a model are.

Prunable layers are the linear layers inside the transformer blocks; the token embeddings and the
output head are left dense unless asked for. Block locators name, per architecture, the list of
blocks that the sequential calibration pipeline walks; another architecture gets a clear error.
"""

from __future__ import annotations

import re

from torch import nn

from workbench.errors import PruningError

# attribute paths of the block list, per architecture family (first that exists wins)
BLOCK_LOCATORS: dict[str, str] = {
    "llama": "model.layers",  # Llama, Mistral, Qwen2, SmolLM2, Gemma...
    "bert": "encoder.layer",  # BertModel, the encoder under MiniLM
    "bert-with-head": "bert.encoder.layer",
}

_BLOCK_INDEX = re.compile(r"\.(?:layers|layer|h|blocks)\.(\d+)\.")


def _get_path(model: nn.Module, path: str) -> nn.Module | None:
    node: object = model
    for part in path.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node if isinstance(node, nn.ModuleList) else None


def transformer_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(qualified prefix, block list) of a supported architecture."""
    for path in BLOCK_LOCATORS.values():
        blocks = _get_path(model, path)
        if blocks is not None:
            return path, blocks
    arch = type(model).__name__
    raise PruningError(f"unsupported architecture: add a block locator for {arch}",
                       "add the attribute path of its block list to BLOCK_LOCATORS in workbench/models/layers.py")


def block_index(layer_name: str) -> int | None:
    match = _BLOCK_INDEX.search("." + layer_name + ".")
    return int(match.group(1)) if match else None


def prunable_layers(model: nn.Module, prune_embeddings: bool = False, prune_head: bool = False) -> dict[str, nn.Module]:
    """Linear layers inside the blocks, in model order; plus embeddings and head when asked for."""
    prefix, _ = transformer_blocks(model)
    layers: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.startswith(prefix + "."):
            layers[name] = module
    if prune_embeddings:
        embeddings = model.get_input_embeddings()
        layers[next(n for n, m in model.named_modules() if m is embeddings)] = embeddings
    if prune_head and hasattr(model, "get_output_embeddings") and model.get_output_embeddings() is not None:
        head = model.get_output_embeddings()
        name = next(n for n, m in model.named_modules() if m is head)
        if all(m.weight is not head.weight for m in layers.values()):  # tied to the embeddings: already in
            layers[name] = head
    return layers
