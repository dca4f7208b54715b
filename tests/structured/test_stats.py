"""The one-pass statistics equal what a hook that keeps every activation computes."""

from __future__ import annotations

import math

import torch

from workbench.structured import collect_statistics, model_layout


def _captured(model, calibration):
    """Every input of o_proj / down_proj and every block input and output, kept whole (the slow way)."""
    layout = model_layout(model)
    seen: dict[str, list[torch.Tensor]] = {"o": [], "down": [], "in": [], "out": []}

    def block_hook(module, args, kwargs, output) -> None:
        seen["in"].append(args[0] if args else kwargs["hidden_states"])
        seen["out"].append(output[0] if isinstance(output, tuple) else output)

    handles = [layout.attention(0).o.register_forward_pre_hook(lambda m, a: seen["o"].append(a[0])),
               layout.mlp(2).output.register_forward_pre_hook(lambda m, a: seen["down"].append(a[0])),
               layout.blocks[1].register_forward_hook(block_hook, with_kwargs=True)]
    with torch.no_grad():
        model(input_ids=calibration)
    for handle in handles:
        handle.remove()
    return {k: torch.cat(v) for k, v in seen.items()}


def test_statistics_equal_a_full_capture(llama, calibration):
    stats = collect_statistics(llama, calibration, tokens_per_batch=48)  # 2 windows per batch: streamed
    full = _captured(llama, calibration)
    o = full["o"].reshape(-1, 48).double()
    assert torch.allclose(stats.layers[0].heads_output.mean, o.mean(0).float(), atol=1e-6)
    assert torch.allclose(stats.layers[0].heads_output.var, o.var(0, unbiased=False).float(), rtol=1e-4, atol=1e-6)
    down = full["down"]
    assert torch.allclose(stats.layers[2].channels.sq_norm, down.pow(2).sum(1).mean(0), rtol=1e-5)
    cos = torch.nn.functional.cosine_similarity(full["in"], full["out"], dim=-1)
    assert stats.tokens == calibration.numel()
    assert math.isclose(float(stats.block_cosine[1]), float(cos.mean()), rel_tol=1e-5)
    assert math.isclose(float(stats.block_angular[1]), float((torch.arccos(cos.clamp(-1, 1)) / math.pi).mean()),
                        rel_tol=1e-4)


def test_bert_statistics_cover_every_block(bert, calibration):
    stats = collect_statistics(bert, calibration)
    assert len(stats.layers) == 2 and stats.layers[1].channels.columns == 128
    assert bool((stats.block_cosine < 1).all()) and not bert.training
