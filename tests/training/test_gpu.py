"""The training job on a CUDA GPU (skipped without one): the same records as on the CPU."""

import pytest
import torch

from workbench import queries
from workbench.runner import run_job
from workbench.training.sparsity import layer_nm_weight_valid

pytestmark = pytest.mark.gpu


def test_sr_ste_on_the_gpu_keeps_two_four_and_learns(store, image_spec):
    spec = {**image_spec, "device": "cuda", "method": "sr-ste", "pattern": "2:4", "steps": 60,
            "train_subset": 4096, "eval_subset": 2000, "batch_size": 128, "eval_every": 30}
    result = run_job(spec, store)
    assert result.metrics["nm_valid"] == 1.0 and result.metrics["accuracy"] > 0.6
    assert result.metrics["peak_gpu_memory_mb"] > 0
    accuracy = queries.metrics(store, [result.run_id], ["accuracy"]).sort_values("step")["value"].tolist()
    assert accuracy[-1] > accuracy[0]


def test_rigl_on_the_gpu_keeps_layer_sparsity(store, image_spec):
    result = run_job({**image_spec, "device": "cuda", "method": "rigl", "sparsity": 0.9,
                      "params": {"every": 3}}, store)
    layers = queries.layer_stats(store, [result.run_id])
    masks = queries.load_masks(store, result.run_id)
    for row in layers.itertuples():
        assert float((~masks[row.layer]).float().mean()) == pytest.approx(0.9, abs=2e-3)
    assert result.metrics["total_sad"] > 0


def test_sparse_finetune_of_a_causal_lm_on_the_gpu(store, text_spec):
    result = run_job({**text_spec, "device": "cuda", "pattern": "2:4", "sparsity": None,
                      "params": {"distill": "squarehead"}}, store)
    assert result.metrics["nm_valid"] == 1.0
    ppl = queries.metrics(store, [result.run_id], ["perplexity"]).sort_values("step")["value"].tolist()
    assert ppl[-1] < ppl[0]
    assert torch.cuda.is_available()


def test_nm_weight_check_runs_on_gpu_tensors():
    weight = torch.tensor([[1.0, 0.0, 2.0, 0.0]], device="cuda")
    assert layer_nm_weight_valid(weight, 2, 4)
