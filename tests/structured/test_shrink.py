"""The surgery: removing a structure equals zeroing it; caches, saving, loading, parameter counts and tied
embeddings survive; bad requests are refused with a fix."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM

from tests.structured.conftest import logits, make_gemma, make_llama
from workbench.errors import SpecError
from workbench.structured import (
    config_parameter_count,
    load_shrunk,
    model_layout,
    plain_loadable,
    remove_blocks,
    remove_channels,
    remove_heads,
    shrink_channels,
    shrink_heads,
)
from workbench.structured.layout import head_rows


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def zero_heads(model, layer: int, heads: list[int], kv_heads: list[int] = ()) -> None:
    attn = model_layout(model).attention(layer)
    rows = head_rows(torch.tensor(heads), attn.head_dim)
    attn.q.weight[rows] = 0
    attn.o.weight[:, rows] = 0
    if kv_heads:
        kv_rows = head_rows(torch.tensor(list(kv_heads)), attn.head_dim)
        attn.k.weight[kv_rows] = 0
        attn.v.weight[kv_rows] = 0


@torch.no_grad()
def zero_channels(model, layer: int, channels: list[int]) -> None:
    mlp = model_layout(model).mlp(layer)
    for linear in mlp.inputs:
        linear.weight[channels] = 0
        if linear.bias is not None:
            linear.bias[channels] = 0
    mlp.output.weight[:, channels] = 0


def test_removing_a_kv_group_equals_zeroing_it(llama, ids):
    reference = logits(llama, ids)
    zeroed = make_llama()
    zero_heads(zeroed, 1, [3, 4, 5], kv_heads=[1])
    remove_heads(llama, {1: [1]}, unit="group")
    attn = model_layout(llama).attention(1)
    assert (attn.num_heads, attn.num_kv_heads, attn.module.num_key_value_groups) == (3, 1, 3)
    assert close(logits(llama, ids), logits(zeroed, ids))
    assert not close(logits(llama, ids), reference)


def test_removing_query_heads_evenly_from_every_group_equals_zeroing_them(llama, ids):
    zeroed = make_llama()
    zero_heads(zeroed, 0, [0, 4])
    remove_heads(llama, {0: [0, 4]}, unit="query")  # one of each group of three
    attn = model_layout(llama).attention(0)
    assert (attn.num_heads, attn.num_kv_heads, attn.module.num_key_value_groups) == (4, 2, 2)
    assert close(logits(llama, ids), logits(zeroed, ids))


def test_removing_channels_equals_zeroing_them(llama, ids):
    zeroed = make_llama()
    zero_channels(zeroed, 2, [0, 5, 63])
    remove_channels(llama, {2: [0, 5, 63]})
    assert model_layout(llama).mlp(2).width == 61 and llama.model.layers[2].mlp.intermediate_size == 61
    assert close(logits(llama, ids), logits(zeroed, ids))


@pytest.mark.parametrize("make", [make_llama, make_gemma])
def test_removing_a_block_equals_zeroing_its_residual_branches(make, ids):
    model, zeroed = make(), make()
    with torch.no_grad():
        zeroed.model.layers[1].self_attn.o_proj.weight.zero_()
        zeroed.model.layers[1].mlp.down_proj.weight.zero_()
    remove_blocks(model, [1])  # Gemma's block 1 is its global one: the sliding-window blocks stay in step
    assert model.config.num_hidden_layers == 2
    assert getattr(model.config, "layer_types", None) in (None, ["sliding_attention"] * 2)
    assert [b.self_attn.layer_idx for b in model.model.layers] == [0, 1]
    assert close(logits(model, ids), logits(zeroed, ids))
    assert torch.equal(_generate(model, ids, True), _generate(model, ids, False))


def test_bert_heads_and_channels_removal_equals_zeroing(bert, ids):
    from tests.structured.conftest import make_bert

    zeroed = make_bert()
    zero_heads(zeroed, 0, [1])
    zero_channels(zeroed, 1, [2, 7])
    remove_heads(bert, {0: [1]})
    remove_channels(bert, {1: [2, 7]})
    assert bert.encoder.layer[0].attention.self.num_attention_heads == 3
    assert bert.encoder.layer[0].attention.self.all_head_size == 48
    assert close(logits(bert, ids), logits(zeroed, ids))


def test_gemma_query_heads_of_its_one_kv_group_and_channels_removal_equals_zeroing(gemma, ids):
    zeroed = make_gemma()
    zero_heads(zeroed, 1, [0, 2])  # the global block
    zero_heads(zeroed, 2, [3])
    zero_channels(zeroed, 0, [1, 5, 63])
    remove_heads(gemma, {1: [0, 2], 2: [3]})
    remove_channels(gemma, {0: [1, 5, 63]})
    attn = model_layout(gemma).attention(1)
    assert (attn.num_heads, attn.num_kv_heads, attn.module.num_key_value_groups) == (2, 1, 2)
    assert attn.module.q_norm.weight.shape == (16,)  # per head_dim: shared by the heads that stay
    assert close(logits(gemma, ids), logits(zeroed, ids))
    _refused(lambda: remove_heads(gemma, {0: [0]}, unit="group"), "every attention head")


@pytest.mark.parametrize("uniform", [True, False])
def test_gemma_shrunk_saves_loads_and_counts_its_parameters(gemma, ids, tmp_path, uniform):
    if uniform:
        remove_heads(gemma, {i: [0, 3] for i in range(3)})
        remove_channels(gemma, {i: [7] for i in range(3)})
    else:
        remove_heads(gemma, {0: [1]})
        remove_channels(gemma, {2: list(range(30))})
    assert plain_loadable(gemma.config) == uniform
    assert config_parameter_count(gemma.config) == sum(p.numel() for p in gemma.parameters())
    gemma.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval() if uniform else load_shrunk(tmp_path)
    assert close(logits(loaded, ids), logits(gemma, ids))
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert torch.equal(_generate(loaded, ids, True), _generate(gemma, ids, False))


def _generate(model, ids, cache: bool) -> torch.Tensor:
    return model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=cache, pad_token_id=0)


@pytest.mark.parametrize("surgery", ["groups", "query-heads-non-uniform", "blocks"])
def test_cached_and_uncached_greedy_generation_agree_after_shrinking(llama, ids, surgery):
    if surgery == "groups":
        remove_heads(llama, {0: [0], 2: [1]}, unit="group")
    elif surgery == "query-heads-non-uniform":
        remove_heads(llama, {1: [0, 1, 3, 4]}, unit="query")
        remove_channels(llama, {0: list(range(10))})
    else:
        remove_blocks(llama, [0, 2])
    cached, uncached = _generate(llama, ids, True), _generate(llama, ids, False)
    assert cached.shape == (2, 20)
    assert torch.equal(cached, uncached)


def test_uniform_shrink_saves_and_loads_with_plain_from_pretrained(tied_llama, ids, tmp_path):
    remove_heads(tied_llama, {i: [0] for i in range(3)}, unit="group")  # 3 heads: 48 / 3 = 16 != head_dim 8
    remove_channels(tied_llama, {i: [1, 2, 3] for i in range(3)})
    remove_blocks(tied_llama, [1])
    config = tied_llama.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (3, 1, 8)
    assert (config.intermediate_size, config.num_hidden_layers) == (61, 2)
    assert plain_loadable(config)
    tied_llama.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert close(logits(loaded, ids), logits(tied_llama, ids))
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert close(logits(load_shrunk(tmp_path), ids), logits(tied_llama, ids))


def test_non_uniform_shrink_loads_with_load_shrunk(tied_llama, ids, tmp_path):
    remove_heads(tied_llama, {0: [1]}, unit="group")
    remove_heads(tied_llama, {2: [2, 5]}, unit="query")
    remove_channels(tied_llama, {1: list(range(20))})
    widths = tied_llama.config.workbench_layer_widths
    assert widths == {"heads": [3, 6, 4], "kv_heads": [1, 2, 2], "intermediate": [64, 44, 64]}
    assert not plain_loadable(tied_llama.config)
    tied_llama.save_pretrained(tmp_path)
    loaded = load_shrunk(tmp_path)
    assert close(logits(loaded, ids), logits(tied_llama, ids))
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert model_layout(loaded).widths() == widths
    assert torch.equal(_generate(loaded, ids, True), _generate(tied_llama, ids, False))


def test_bert_with_heads_removed_loads_with_load_shrunk_and_channels_alone_plainly(bert, ids, tmp_path):
    remove_channels(bert, {0: [0, 1], 1: [3, 4]})
    assert plain_loadable(bert.config)
    bert.save_pretrained(tmp_path / "channels")
    plain = AutoModel.from_pretrained(tmp_path / "channels").eval()
    assert close(logits(plain, ids), logits(bert, ids))
    remove_heads(bert, {0: [0, 3]})
    assert bert.config.num_attention_heads == 4  # BERT derives head size from it: the global value stays
    assert not plain_loadable(bert.config)
    bert.save_pretrained(tmp_path / "heads")
    loaded = load_shrunk(tmp_path / "heads")
    assert loaded.pooler is None  # tiny-bert was saved without its pooling layer
    assert close(logits(loaded, ids), logits(bert, ids))


@pytest.mark.parametrize("surgery", ["none", "uniform", "non-uniform", "blocks"])
def test_parameter_count_equals_the_one_computed_from_the_config(tied_llama, surgery):
    if surgery == "uniform":
        remove_heads(tied_llama, {i: [0, 3] for i in range(3)})
        remove_channels(tied_llama, {i: [7] for i in range(3)})
    elif surgery == "non-uniform":
        remove_heads(tied_llama, {1: [1]}, unit="group")
        remove_channels(tied_llama, {2: list(range(30))})
    elif surgery == "blocks":
        remove_blocks(tied_llama, [0])
    assert config_parameter_count(tied_llama.config) == sum(p.numel() for p in tied_llama.parameters())


def test_bert_parameter_count_equals_the_one_computed_from_the_config(bert):
    remove_heads(bert, {1: [2]})
    remove_channels(bert, {0: [0, 9]})
    remove_blocks(bert, [0])
    assert config_parameter_count(bert.config) == sum(p.numel() for p in bert.parameters())


def test_tied_embeddings_stay_tied(tied_llama):
    embed = tied_llama.model.embed_tokens.weight
    pointer = embed.data_ptr()
    remove_heads(tied_llama, {0: [0]}, unit="group")
    remove_channels(tied_llama, {1: [3]})
    remove_blocks(tied_llama, [2])
    assert tied_llama.lm_head.weight is tied_llama.model.embed_tokens.weight is embed
    assert tied_llama.lm_head.weight.data_ptr() == pointer


def test_qwen2_block_removal_keeps_layer_types_in_step(ids):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=259, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    remove_blocks(model, [1])
    assert model.config.num_hidden_layers == 2 and len(model.config.layer_types) == 2
    assert torch.equal(_generate(model, ids, True), _generate(model, ids, False))
    assert config_parameter_count(model.config) == sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- refusals
def _refused(call, *words: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        call()
    message = str(info.value)
    assert info.value.fix and all(word in message for word in words), message
    return info.value


def test_removing_more_heads_than_exist_is_refused(llama):
    _refused(lambda: remove_heads(llama, {0: list(range(7))}), "only 6")
    _refused(lambda: remove_heads(llama, {0: [6]}), "does not exist")
    _refused(lambda: remove_heads(llama, {0: [2]}, unit="group"), "does not exist")
    _refused(lambda: remove_heads(llama, {5: [0]}), "layer 5")


def test_splitting_a_kv_group_unevenly_is_refused(llama):
    _refused(lambda: remove_heads(llama, {0: [0]}), "unevenly", "[2, 3]")
    _refused(lambda: shrink_heads(llama, {0: torch.tensor([True] * 3 + [True, False, False])}), "unevenly")
    assert model_layout(llama).attention(0).num_heads == 6  # nothing changed


def test_removing_everything_of_a_layer_or_the_model_is_refused(llama, bert):
    _refused(lambda: remove_heads(llama, {1: [0, 1]}, unit="group"), "every attention head")
    _refused(lambda: remove_heads(bert, {0: [0, 1, 2, 3]}), "every attention head")
    _refused(lambda: shrink_channels(llama, {0: torch.zeros(64, dtype=torch.bool)}), "every MLP channel")
    _refused(lambda: remove_blocks(llama, [0, 1, 2]), "every block")
    _refused(lambda: shrink_channels(llama, {0: torch.ones(65, dtype=torch.bool)}), "65 entries")
