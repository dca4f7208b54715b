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


def test_sparse_finetune_of_a_causal_lm_keeps_its_one_shot_mask(store, text_spec):
    result = run_job({**text_spec, "params": {"prune_method": "magnitude"}}, store)
    index = queries.mask_index(store, result.run_id)
    assert sorted(index["step"].unique()) == [0, 3, 6]
    assert index.groupby("layer")["hash"].nunique().eq(1).all()  # fixed mask: one blob per layer
    assert result.metrics["total_sad"] == 0
    layers = queries.layer_stats(store, [result.run_id])
    assert len(layers) == 14 and layers["achieved_sparsity"].between(0.5, 0.51).all()
    assert "loss_distill" not in set(queries.metrics(store, [result.run_id])["name"])
    ppl = queries.metrics(store, [result.run_id], ["perplexity"]).sort_values("step")
    assert ppl["step"].tolist() == [0, 3, 6]
    assert ppl["value"].iloc[-1] < ppl["value"].iloc[0]  # recovery: training lowers perplexity


def test_squarehead_distillation_is_logged_in_a_recovery_run(store, text_spec):
    result = run_job({**text_spec, "steps": 3, "params": {"distill": "squarehead", "distill_weight": 2.0}}, store)
    metrics = queries.metrics(store, [result.run_id])
    assert {"loss_distill", "loss_task", "loss"} <= set(metrics["name"])
    losses = metrics[metrics.name.isin(["loss", "loss_task", "loss_distill"])]
    by_step = losses.pivot(index="step", columns="name", values="value")
    assert (by_step["loss_distill"] > 0).all()
    assert by_step["loss"].to_numpy() == pytest.approx((by_step["loss_task"] + by_step["loss_distill"]).to_numpy(), rel=1e-5)


def test_squarehead_gradients_pull_the_pruned_student_toward_the_dense_teacher():
    from workbench.models import load_model
    from workbench.models.layers import prunable_layers
    from workbench.spec import Pattern
    from workbench.training.finetune import SparseFinetune
    from workbench.training.registry import TrainContext

    model = load_model("tiny-llama").model
    layers = prunable_layers(model)
    context = TrainContext(model=model, layers=layers, sparsity=0.6, pattern=Pattern(name="unstructured"),
                           density="uniform", total_steps=12, seed=0,
                           params=SparseFinetune.Params(distill="squarehead"), family="causal-lm")
    method = SparseFinetune(context)
    method.setup()
    optimizer = context.optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    run = lambda module: module(input_ids=batch).logits  # noqa: E731
    model.train()
    history = []
    for step in range(12):
        with method.watch():
            run(model)
            loss = method.extra_loss(step, run)["distill"]
        history.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        method.before_optimizer_step(step)
        optimizer.step()
        method.after_optimizer_step(step)
    assert history[0] > 0 and history[-1] < 0.5 * history[0]
    for name, module in layers.items():  # the mask held throughout
        assert (module.weight[~method.mask[name]] == 0).all()


def test_the_smollm2_recovery_spec_validates_with_a_short_cpu_default():
    from workbench.spec import parse_spec

    spec = parse_spec({"kind": "train", "model": "smollm2-135m", "data": "shakespeare",
                       "method": "sparse-finetune", "sparsity": 0.5, "params": {"distill": "squarehead"}})
    assert spec.steps == 20 and spec.batch_size == 4 and spec.optimizer.name == "adamw"
