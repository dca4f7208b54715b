"""The level database: exact counts per level, exact totals per candidate, storage and swapping."""

from __future__ import annotations

import random

import pytest
import torch

from workbench.data import calibration_windows
from workbench.models import load_model
from workbench.models.layers import prunable_layers
from workbench.pruning.masks import row_topk_mask, topk_mask
from workbench.search.evolution import mutate, random_candidate
from workbench.search.levels import (
    LevelSwapper,
    build_database,
    level_geometry,
    level_step,
    load_geometry,
    method_counter,
    sparsegpt_counter,
    wanda_count,
)

SMOLLM2_SHAPES = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]


def test_the_step_is_a_multiple_of_every_row_and_column_count():
    assert level_step(SMOLLM2_SHAPES, 0.1) == 13824  # 3 x lcm(576, 192, 1536); 12.5% of a k_proj
    assert level_step(SMOLLM2_SHAPES, 1e-6) == 4608
    assert level_step([(64, 64), (32, 64), (128, 64), (64, 128)], 0.1) == 256


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("sparsity", [0.5, 0.7, 0.3, 0.9])
def test_every_level_target_meets_its_count_exactly(method, sparsity):
    """The method's own count at each stored target is base + level x step (Wanda: whole rows per row;
    SparseGPT: per 128-column block), also for shapes where floating point lands near whole numbers."""
    shapes = [*SMOLLM2_SHAPES, (96, 200), (48, 320)]
    count = method_counter(method, {"blocksize": 128})
    geometry = level_geometry([f"l{i}" for i in range(len(shapes))], shapes, sparsity, 4, 0.1, count)
    for index, (rows, cols) in enumerate(shapes):
        assert geometry.low[index] <= 0 <= geometry.high[index]
        assert geometry.base[index] == count(rows, cols, sparsity)  # level 0 is the uniform allocation
        for level in range(geometry.low[index], geometry.high[index] + 1):
            target = geometry.target(index, level)
            assert count(rows, cols, target) == geometry.base[index] + level * geometry.step
            assert 0 <= geometry.count(index, level) <= rows * cols - max(rows, cols)


def test_the_counters_agree_with_the_methods_masks():
    torch.manual_seed(0)
    scores = torch.rand(96, 200)
    for target in (0.1, 0.5, 0.73, 0.9):
        assert int((~row_topk_mask(scores, target)).sum()) == wanda_count(96, 200, target)
        blocks = sum(int((~topk_mask(scores[:, start:start + 128], target)).sum()) for start in range(0, 200, 128))
        assert blocks == sparsegpt_counter(128)(96, 200, target)


@pytest.fixture(scope="module")
def tiny():
    loaded = load_model("tiny-llama")
    layers = prunable_layers(loaded.model)
    calibration = calibration_windows("shakespeare", loaded.tokenizer, 4, 64, 0)
    return loaded, layers, calibration


def _geometry(layers, method, sparsity=0.5):
    shapes = [tuple(m.weight.shape) for m in layers.values()]
    return level_geometry(list(layers), shapes, sparsity, 3, 0.1, method_counter(method, {}))


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_every_candidate_keeps_the_total_sparsity_exact(tiny, tmp_path, method):
    torch.set_num_threads(1)
    loaded, layers, calibration = tiny
    geometry = _geometry(layers, method)
    dense = {name: m.weight.detach().clone() for name, m in layers.items()}
    build_database(loaded.model, layers, calibration, geometry, method, {}, tmp_path / "db")
    assert all(torch.equal(m.weight, dense[name]) for name, m in layers.items())  # building leaves the model dense
    assert load_geometry(tmp_path / "db") == geometry

    swapper = LevelSwapper(layers, geometry, tmp_path / "db")
    uniform = (0,) * geometry.size
    swapper.apply(uniform)
    zeros = {name: int((m.weight == 0).sum()) for name, m in layers.items()}
    assert sum(zeros.values()) == geometry.pruned(uniform)
    assert [zeros[name] for name in geometry.names] == list(geometry.base)

    rng = random.Random(0)
    candidates = [random_candidate(geometry.space(), rng) for _ in range(6)]
    candidates += [mutate(candidates[0], geometry.space(), rng) for _ in range(6)]
    for candidate in candidates:
        swapper.apply(candidate)
        pruned = [int((layers[name].weight == 0).sum()) for name in geometry.names]
        assert pruned == [geometry.count(i, level) for i, level in enumerate(candidate)]
        assert sum(pruned) == geometry.pruned(uniform)
    swapper.restore()
    assert all(torch.equal(m.weight, dense[name]) for name, m in layers.items())


def test_sparsegpt_levels_hold_reconstructed_weights_and_wanda_levels_the_dense_ones(tiny, tmp_path):
    torch.set_num_threads(1)
    loaded, layers, calibration = tiny
    name = next(iter(layers))
    dense = layers[name].weight.detach().clone()
    for method in ("wanda", "sparsegpt"):
        geometry = _geometry(layers, method)
        build_database(loaded.model, layers, calibration, geometry, method, {}, tmp_path / method)
        swapper = LevelSwapper(layers, geometry, tmp_path / method)
        swapper.apply((0,) * geometry.size)
        kept = layers[name].weight != 0
        changed = not torch.equal(layers[name].weight[kept], dense[kept])
        assert changed == (method == "sparsegpt")
        swapper.restore()
