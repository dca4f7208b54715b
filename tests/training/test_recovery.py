"""Structured recovery: a structured prune run's shrunk model fine-tuned with SquareHead from the dense model,
as a cached train job that names its pruned run by key."""

import copy

import pytest
import torch

from tests.structured.conftest import make_llama
from workbench import queries
from workbench.errors import SpecError, WorkbenchError
from workbench.jobs import JobContext
from workbench.jobs import train as train_job
from workbench.runner import run_job
from workbench.spec import job_key, parse_spec
from workbench.structured import shrink_blocks, structured_prune
from workbench.training.recovery import StructuredRecovery, kept_blocks
from workbench.training.registry import TrainContext
from workbench.values import Pattern

PRUNE = {"model": "tiny-llama", "data": "shakespeare", "calibration": {"samples": 4, "seq_len": 32, "seed": 0},
         "evaluation": {"windows": 2, "seq_len": 32}}
FLAP = {**PRUNE, "method": "flap", "structure": "heads+channels", "sparsity": 0.3}
DEPTH = {**PRUNE, "method": "block-influence", "structure": "blocks", "sparsity": 0.5}


def recovery(from_run: str, **changes) -> dict:
    return {"kind": "train", "model": "tiny-llama", "data": "shakespeare", "method": "structured-recovery",
            "params": {"from_run": from_run}, "steps": 12, "batch_size": 4, "seq_len": 32, "eval_every": 6,
            "log_every": 3, "device": "cpu", "optimizer": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.0},
            **changes}


def perplexities(store, run_id: str) -> list[float]:
    return queries.metrics(store, [run_id], ["perplexity"]).sort_values("step")["value"].tolist()


def test_kept_blocks_are_the_teacher_blocks_in_order():
    assert kept_blocks(torch.tensor([True, False, True, True]), 3) == (0, 2, 3)
    assert kept_blocks(None, 2) == (0, 1)  # heads or channels removed: every block its own
    with pytest.raises(SpecError, match="keeps 3 blocks"):
        kept_blocks(torch.tensor([True, False, True, True]), 2)


def _recovery_method(student, teacher, blocks, distill_weight=1.0):
    from workbench.models.layers import prunable_layers

    context = TrainContext(model=student, layers=prunable_layers(student), sparsity=0.0,
                           pattern=Pattern(name="unstructured"), density="uniform", total_steps=10, seed=0,
                           params=StructuredRecovery.Params(from_run="x", distill_weight=distill_weight),
                           family="causal-lm", teacher=teacher, teacher_blocks=blocks)
    method = StructuredRecovery(context)
    method.setup()
    return method


def _distill_loss(method, batch):
    run = lambda module: module(input_ids=batch).logits  # noqa: E731
    with method.watch():
        run(method.context.model)
        return method.extra_loss(0, run)["distill"]


def test_depth_pruned_student_blocks_are_compared_with_the_blocks_they_were():
    """Block 1 of the teacher is made an identity (no attention or MLP output), so removing it leaves a student
    whose blocks compute exactly the teacher's blocks 0, 2 and 3: SquareHead is zero under the kept-index
    mapping, and not under the identity mapping."""
    teacher = make_llama(layers=4)
    with torch.no_grad():
        teacher.model.layers[1].self_attn.o_proj.weight.zero_()
        teacher.model.layers[1].mlp.down_proj.weight.zero_()
    student = copy.deepcopy(teacher)
    keep = torch.tensor([True, False, True, True])
    shrink_blocks(student, keep)
    batch = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    method = _recovery_method(student, teacher, kept_blocks(keep, 3))
    assert method.teacher_feature_names == ["model.layers.0", "model.layers.2", "model.layers.3"]
    assert float(_distill_loss(method, batch).detach()) < 1e-10
    assert float(_distill_loss(_recovery_method(student, teacher, (0, 1, 2)), batch).detach()) > 1e-3


def test_squarehead_pulls_every_weight_of_the_shrunk_student_toward_the_teacher(calibration_ids):
    teacher = make_llama(layers=3)
    student = copy.deepcopy(teacher)
    structured_prune(student, calibration_ids, "wanda-sp", "heads+channels", 0.4)
    method = _recovery_method(student, teacher, (0, 1, 2))
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    before = {name: p.detach().clone() for name, p in student.named_parameters()}
    history = []
    for _ in range(15):
        loss = _distill_loss(method, calibration_ids)
        history.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert history[-1] < 0.5 * history[0]
    moved = {name for name, p in student.named_parameters() if not torch.equal(p, before[name])}
    assert {name for name in before if name.startswith("model.layers.")} <= moved  # no mask holds any back
    assert all(not p.requires_grad for p in teacher.parameters())


@pytest.fixture
def calibration_ids() -> torch.Tensor:
    return torch.randint(0, 256, (4, 24), generator=torch.Generator().manual_seed(1))


def test_recovery_lowers_the_pruned_runs_perplexity_on_its_evaluation_and_keeps_its_shape(store):
    pruned = run_job(FLAP, store)
    result = run_job(recovery(pruned.run_id), store)
    curve = perplexities(store, result.run_id)
    # step 0 is the pruned model on the pruned run's own evaluation windows: its perplexity, exactly
    assert curve[0] == pytest.approx(pruned.metrics["perplexity"], rel=1e-6)
    assert curve[-1] < 0.8 * curve[0] and result.metrics["perplexity"] == curve[-1]
    assert result.metrics["parameters"] == pruned.metrics["parameters"]
    assert result.metrics["sparsity"] == 0.0 and queries.mask_index(store, result.run_id).empty  # no mask
    run = queries.run(store, result.run_id)
    assert run["spec"]["params"]["from_run"] == pruned.key  # the link: the pruned run's key, not its id


def test_recovered_model_exports_with_the_pruned_runs_shapes(store, tmp_path):
    from workbench.model_export import export_model
    from workbench.structured import load_shrunk

    pruned = run_job(FLAP, store)
    result = run_job(recovery(pruned.run_id, steps=4, eval_every=4), store)
    export_model(store, pruned.run_id, tmp_path / "pruned")
    exported = export_model(store, result.run_id, tmp_path / "recovered")
    before, after = load_shrunk(tmp_path / "pruned"), load_shrunk(tmp_path / "recovered")
    for field in ("num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
                  "workbench_layer_widths"):
        assert getattr(after.config, field) == getattr(before.config, field), field
    assert exported.parameters == result.metrics["parameters"]
    tokens = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.allclose(after(tokens).logits, before(tokens).logits)  # trained, not the pruned weights


def test_depth_recovery_maps_each_block_to_its_kept_index(store):
    pruned = run_job(DEPTH, store)
    kept = queries.load_masks(store, pruned.run_id)["model.layers"].reshape(-1)
    prepared = train_job.prepare(parse_spec(recovery(pruned.key)), JobContext(store=store))
    assert prepared.teacher_blocks == tuple(int(i) for i in kept.nonzero().flatten())
    assert len(prepared.model.model.layers) == len(prepared.teacher_blocks) == 1
    assert len(prepared.teacher.model.layers) == 2


def test_identical_specs_are_served_from_the_cache_whether_the_run_is_named_by_id_or_key(store):
    from typer.testing import CliRunner

    from workbench.cli import app
    from workbench.sweeps import run_sweep

    pruned = run_job(FLAP, store)
    first = run_job(recovery(pruned.run_id, steps=2, eval_every=2), store)
    again = run_job(recovery(pruned.key, steps=2, eval_every=2), store)
    assert again.cached and again.run_id == first.run_id
    assert first.key == job_key(parse_spec(recovery(pruned.key, steps=2, eval_every=2)))
    [swept] = run_sweep([parse_spec(recovery(pruned.run_id[:13], steps=2, eval_every=2))], store, progress=False)
    assert swept.cached and swept.run_id == first.run_id  # a sweep names runs by key too (here: an id's prefix)
    shown = CliRunner().invoke(app, ["show", first.run_id, "--store", str(store.path)])
    assert shown.exit_code == 0 and f"source_run: {pruned.run_id}" in shown.stdout


def test_the_key_follows_the_pruned_runs_key(store):
    other = run_job({**FLAP, "sparsity": 0.2}, store)
    pruned = run_job(FLAP, store)
    assert other.key != pruned.key
    keys = {job_key(parse_spec(recovery(run.key))) for run in (pruned, other)}
    assert len(keys) == 2


@pytest.mark.parametrize("target, message", [
    ("does-not-exist", "no run matches"),
    ("f" * 64, "no finished run has key"),
    ("unstructured", "not a structured prune run"),
])
def test_a_run_that_is_missing_or_not_structured_is_refused_and_nothing_is_stored(store, target, message):
    if target == "unstructured":
        target = run_job({**PRUNE, "method": "magnitude", "sparsity": 0.5}, store).run_id
    before = len(queries.runs(store))
    with pytest.raises(WorkbenchError, match=message) as err:
        run_job(recovery(target), store)
    assert "\n" not in str(err.value) and err.value.fix
    assert len(queries.runs(store)) == before


def test_a_run_of_another_model_is_refused(store):
    pruned = run_job(FLAP, store)
    with pytest.raises(SpecError, match="set data: shakespeare"):
        run_job(recovery(pruned.run_id, data="pydoc"), store)


@pytest.mark.parametrize("fields, message", [
    ({"params": {}}, "name the structured prune run"),
    ({"eval_subset": 4}, "drop eval_subset"),
    ({"pattern": "2:4"}, "does not keep an N:M"),
    ({"model": "fashion-cnn", "data": "fashion-mnist"}, "recovers a structurally pruned language model"),
])
def test_bad_recovery_specs_are_refused(fields, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({**recovery("abc"), **fields})
