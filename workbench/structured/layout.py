"""Where the removable structures of a transformer are, and what they cost in parameters.

Two families are supported:

* Llama-family causal LMs (``LlamaForCausalLM``; Mistral, Qwen2 and Gemma-3 share the layout): per block
  ``self_attn.{q,k,v,o}_proj`` and a gated MLP ``mlp.{gate,up,down}_proj``. Gemma-3's extra norms (q/k
  norms over ``head_dim``, a norm before and after the MLP) act within a head or on the residual stream,
  so removing a head or a channel leaves them as they are. Attention may use grouped-query
  attention: ``num_kv_heads`` key/value heads, each shared by ``group_size`` consecutive query heads (query
  head ``h`` reads kv head ``h // group_size``, the order of ``repeat_kv``).
* BERT-family encoders (``BertModel``): ``attention.self.{query,key,value}``, ``attention.output.dense``,
  ``intermediate.dense`` and ``output.dense``. Every head is its own group (``group_size`` 1).

A *head* is ``head_dim`` consecutive rows of q (and of k/v for its group) and the same columns of o. A
*channel* is one row of every MLP input projection (gate and up) and one column of the output projection
(down). A *block* is one entry of the block list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from workbench.errors import SpecError
from workbench.models.layers import transformer_blocks

Family = Literal["llama", "bert"]
LLAMA_FAMILY = {"llama", "mistral", "qwen2", "gemma3_text"}  # model types whose config_parameter_count knows


@dataclass
class Attention:
    """One block's attention projections and its head geometry (read from the weights, so that a shrunk
    layer reports its own width)."""

    module: nn.Module  # LlamaAttention (and alike) or BertSelfAttention: holds the head counts the forward reads
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    head_dim: int

    @property
    def num_heads(self) -> int:
        return self.q.out_features // self.head_dim

    @property
    def num_kv_heads(self) -> int:
        return self.k.out_features // self.head_dim

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads

    def query_head_cost(self) -> int:
        """Parameters of one query head: its q rows (and q bias) and its o columns."""
        return self.head_dim * (self.q.in_features + (self.q.bias is not None) + self.o.out_features)

    def kv_head_cost(self) -> int:
        """Parameters of one key/value head: its k and v rows (and biases)."""
        return self.head_dim * (self.k.in_features + (self.k.bias is not None)
                                + self.v.in_features + (self.v.bias is not None))

    def group_cost(self) -> int:
        """A whole key/value group: the kv head and all its query heads."""
        return self.group_size * self.query_head_cost() + self.kv_head_cost()


@dataclass
class MLP:
    """One block's MLP: the projections that make the intermediate channels and the one that reads them."""

    module: nn.Module
    inputs: tuple[nn.Linear, ...]  # gate and up (Llama), intermediate.dense (BERT)
    output: nn.Linear  # down_proj (Llama), output.dense (BERT)

    @property
    def width(self) -> int:
        return self.output.in_features

    def channel_cost(self) -> int:
        """Parameters of one channel: a row (and bias) of each input projection, a column of the output one."""
        return sum(p.in_features + (p.bias is not None) for p in self.inputs) + self.output.out_features


@dataclass
class Layout:
    """The block list of a supported model and the parts of each block."""

    model: nn.Module
    family: Family
    prefix: str  # qualified name of the block list, e.g. "model.layers"
    blocks: nn.ModuleList

    def __len__(self) -> int:
        return len(self.blocks)

    def attention(self, index: int) -> Attention:
        block = self.blocks[index]
        if self.family == "llama":
            attn = block.self_attn
            return Attention(attn, attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, int(attn.head_dim))
        attn = block.attention.self
        return Attention(attn, attn.query, attn.key, attn.value, block.attention.output.dense,
                         int(attn.attention_head_size))

    def mlp(self, index: int) -> MLP:
        block = self.blocks[index]
        if self.family == "llama":
            return MLP(block.mlp, (block.mlp.gate_proj, block.mlp.up_proj), block.mlp.down_proj)
        return MLP(block, (block.intermediate.dense,), block.output.dense)

    def block_parameters(self) -> list[int]:
        return [sum(p.numel() for p in block.parameters()) for block in self.blocks]

    def widths(self) -> dict[str, list[int]]:
        """Per-layer head, key/value head and intermediate counts, as read from the weights."""
        attention = [self.attention(i) for i in range(len(self))]
        return {"heads": [a.num_heads for a in attention], "kv_heads": [a.num_kv_heads for a in attention],
                "intermediate": [self.mlp(i).width for i in range(len(self))]}


def _is_llama_block(block: nn.Module) -> bool:
    attn, mlp = getattr(block, "self_attn", None), getattr(block, "mlp", None)
    return (attn is not None and mlp is not None and hasattr(attn, "head_dim")
            and all(isinstance(getattr(attn, n, None), nn.Linear) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
            and all(isinstance(getattr(mlp, n, None), nn.Linear) for n in ("gate_proj", "up_proj", "down_proj")))


def _is_bert_block(block: nn.Module) -> bool:
    attention = getattr(block, "attention", None)
    return (attention is not None and hasattr(getattr(attention, "self", None), "attention_head_size")
            and not getattr(block, "add_cross_attention", False)
            and isinstance(getattr(getattr(block, "intermediate", None), "dense", None), nn.Linear)
            and isinstance(getattr(getattr(block, "output", None), "dense", None), nn.Linear))


def model_layout(model: nn.Module) -> Layout:
    """The layout of a Llama-family causal LM or a BERT-family encoder; anything else is refused."""
    prefix, blocks = transformer_blocks(model)
    if len(blocks) and all(_is_llama_block(b) for b in blocks):
        return Layout(model, "llama", prefix, blocks)
    if len(blocks) and all(_is_bert_block(b) for b in blocks):
        return Layout(model, "bert", prefix, blocks)
    raise SpecError(f"structured pruning does not know the blocks of {type(model).__name__}",
                    "use a Llama-family causal LM (Llama, Mistral, Qwen2, Gemma-3) or a BERT-family encoder")


def head_rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Row indices (of q, k or v) or column indices (of o) of whole heads, in head order."""
    heads = heads.to(torch.long).reshape(-1, 1)
    return (heads * head_dim + torch.arange(head_dim, device=heads.device)).reshape(-1)


def config_parameter_count(config, pooler: bool = False) -> int:
    """Parameters of a model as its config describes it, per-layer widths included
    (``config.workbench_layer_widths``); tied embeddings counted once. ``pooler``: a BertModel built with its
    pooling layer (the config does not say)."""
    d, vocab, layers = config.hidden_size, config.vocab_size, config.num_hidden_layers
    widths = getattr(config, "workbench_layer_widths", None) or {}
    if config.model_type == "bert":
        head_size = d // config.num_attention_heads
        heads = widths.get("heads", [config.num_attention_heads] * layers)
        inter = widths.get("intermediate", [config.intermediate_size] * layers)
        total = (vocab + config.max_position_embeddings + config.type_vocab_size) * d + 2 * d
        for h, i in zip(heads, inter):
            total += 3 * (d * h * head_size + h * head_size) + h * head_size * d + d + 2 * d
            total += d * i + i + i * d + d + 2 * d
        return total + (d * d + d if pooler else 0)
    if config.model_type not in LLAMA_FAMILY:
        raise SpecError(f"no parameter formula for model type {config.model_type!r}",
                        f"count parameters of a built model instead, or use one of {sorted(LLAMA_FAMILY)} or bert")
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    heads = widths.get("heads", [config.num_attention_heads] * layers)
    kv_heads = widths.get("kv_heads", [config.num_key_value_heads] * layers)
    inter = widths.get("intermediate", [config.intermediate_size] * layers)
    qkv_bias = config.model_type == "qwen2" or bool(getattr(config, "attention_bias", False))
    o_bias = config.model_type in ("llama", "gemma3_text") and bool(getattr(config, "attention_bias", False))
    mlp_bias = config.model_type == "llama" and bool(getattr(config, "mlp_bias", False))
    # Gemma-3: norms before and after attention and the MLP, and q/k norms over head_dim; Llama: two norms
    norms = 4 * d + 2 * head_dim if config.model_type == "gemma3_text" else 2 * d
    total = vocab * d + d + (0 if config.tie_word_embeddings else vocab * d)
    for h, kv, i in zip(heads, kv_heads, inter):
        total += (d + qkv_bias) * (h + 2 * kv) * head_dim + h * head_dim * d + (d if o_bias else 0)
        total += 3 * d * i + ((2 * i + d) if mlp_bias else 0) + norms
    return total
