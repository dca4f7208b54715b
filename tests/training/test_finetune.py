import pytest
import torch

from workbench import queries
from workbench.runner import run_job
from workbench.training.distill import capture_features, squarehead_loss


def test_squarehead_by_hand():
    teacher = [torch.tensor([[1.0, -1.0], [2.0, 0.0]]), torch.tensor([[3.0, 4.0]])]
    assert float(squarehead_loss([t.clone() for t in teacher], teacher)) == 0.0
    # student = 2 x teacher: each layer's error equals the teacher's mean square, so each term is 1
    assert float(squarehead_loss([2 * t for t in teacher], teacher)) == pytest.approx(2.0)
    # the normalisation makes a layer's term independent of its scale
    scaled = [teacher[0] * 100, teacher[1]]
    student = [scaled[0] * 1.5, teacher[1] * 0.5]
    assert float(squarehead_loss(student, scaled)) == pytest.approx(0.25 + 0.25)


def test_capture_features_records_block_outputs():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    x = torch.randn(5, 3)
    with capture_features([model[0], model[2]]) as features:
        out = model(x)
    assert torch.equal(features[1], out) and torch.equal(features[0], model[0](x))
    assert not model[0]._forward_hooks  # removed on exit


@pytest.mark.parametrize("distill", ["none", "squarehead"])
def test_sparse_finetune_of_a_causal_lm_keeps_its_one_shot_mask(store, text_spec, distill):
    spec = {**text_spec, "params": {"prune_method": "magnitude", "distill": distill}}
    result = run_job(spec, store)
    index = queries.mask_index(store, result.run_id)
    assert sorted(index["step"].unique()) == [0, 3, 6]
    assert index.groupby("layer")["hash"].nunique().eq(1).all()  # fixed mask: one blob per layer
    assert result.metrics["total_sad"] == 0
    layers = queries.layer_stats(store, [result.run_id])
    assert len(layers) == 14 and layers["achieved_sparsity"].between(0.5, 0.51).all()
    names = set(queries.metrics(store, [result.run_id])["name"])
    assert ("loss_distill" in names) == (distill == "squarehead")
    ppl = queries.metrics(store, [result.run_id], ["perplexity"]).sort_values("step")
    assert ppl["step"].tolist() == [0, 3, 6]
    assert ppl["value"].iloc[-1] < ppl["value"].iloc[0]  # recovery: training lowers perplexity


def test_squarehead_loss_falls_during_recovery(store, text_spec):
    spec = {**text_spec, "steps": 8, "params": {"distill": "squarehead", "distill_weight": 1.0}}
    result = run_job(spec, store)
    distill = queries.metrics(store, [result.run_id], ["loss_distill"]).sort_values("step")["value"].tolist()
    assert distill[0] > 0
    assert distill[-1] < distill[0]


def test_the_smollm2_recovery_spec_validates_with_a_short_cpu_default():
    from workbench.spec import parse_spec

    spec = parse_spec({"kind": "train", "model": "smollm2-135m", "data": "shakespeare",
                       "method": "sparse-finetune", "sparsity": 0.5, "params": {"distill": "squarehead"}})
    assert spec.steps == 20 and spec.batch_size == 4 and spec.optimizer.name == "adamw"
