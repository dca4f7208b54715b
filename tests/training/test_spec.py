import pytest
import torch

from workbench.errors import SpecError
from workbench.spec import job_key, parse_spec


def _spec(**fields):
    return parse_spec({"kind": "train", **fields})


def test_defaults_are_filled_per_task():
    image = _spec(method="sr-ste", pattern="2:4")
    assert (image.steps, image.batch_size, image.optimizer.name, image.sparsity) == (1407, 128, "sgd", 0.5)
    assert _spec(epochs=1, train_subset=1000, batch_size=100).steps == 10
    text = _spec(model="tiny-llama", data="shakespeare", method="sparse-finetune")
    assert (text.steps, text.batch_size, text.optimizer.name, text.eval_subset) == (20, 4, "adamw", 16)
    assert _spec(method="dense").sparsity == 0.0


def test_key_ignores_where_and_how_often_to_checkpoint_but_not_what_changes_the_result():
    base = {"method": "rigl", "sparsity": 0.9}
    key = job_key(_spec(**base))
    assert job_key(_spec(**base, device="cpu", checkpoint_every=7, name="x")) == key
    assert job_key(_spec(**base, seed=1)) != key
    assert job_key(_spec(**base, snapshot_every=10)) != key
    assert job_key(_spec(**base, params={"drop_fraction": 0.5})) != key
    # epochs resolve to steps: the same training, the same key
    assert job_key(_spec(**base, epochs=3)) == key


@pytest.mark.parametrize("fields, message", [
    ({"method": "sr-ste"}, "N:M pattern"),
    ({"method": "gmp", "pattern": "2:4"}, "does not keep an N:M"),
    ({"method": "set", "pattern": "2:4"}, "does not keep an N:M"),
    ({"data": "shakespeare"}, "does not read data"),
    ({"model": "tiny-llama"}, "does not read data"),
    ({"method": "no-such"}, "unknown training method"),
    ({"epochs": 1, "steps": 5}, "either epochs or steps"),
    ({"method": "gmp", "params": {"start": 0.5, "end": 0.2}}, "bad parameter"),
    ({"method": "rigl", "params": {"drop_fraction": 2}}, "bad parameter"),
    ({"method": "sparse-finetune", "params": {"prune_method": "nope"}}, "unknown method"),
    ({"method": "rigl", "sparsity": 0.95, "density": "erk", "pattern": "2:4"}, "implies sparsity"),
    ({"unknown": 1}, "unknown key"),
])
def test_bad_specs_say_what_to_fix(fields, message):
    with pytest.raises(SpecError, match=message) as err:
        _spec(**fields)
    assert "Fix:" in str(err.value)


def test_bad_width_or_device_fails_before_the_store_changes(store, text_spec):
    from workbench.errors import PruningError
    from workbench.runner import run_job

    with pytest.raises(PruningError):
        run_job({**text_spec, "method": "sr-ste", "pattern": "2:6", "sparsity": None, "params": {}}, store)
    if not torch.cuda.is_available():
        with pytest.raises(SpecError, match="CUDA"):
            run_job({**text_spec, "device": "cuda"}, store)
    assert not store.path.exists()


def test_the_default_suite_trains_every_method_on_fashion_cnn():
    from workbench.suite import default_suite

    specs = default_suite(kinds=["train"])
    assert {(s.method, str(s.pattern), s.sparsity) for s in specs} >= {
        ("dense", "unstructured", 0.0), ("ste", "2:4", 0.5), ("sr-ste", "2:4", 0.5),
        ("gmp", "unstructured", 0.9), ("rigl", "unstructured", 0.9), ("set", "unstructured", 0.9)}
    assert all(s.model == "fashion-cnn" and s.steps == 1407 for s in specs)  # three epochs of 60k at 128
