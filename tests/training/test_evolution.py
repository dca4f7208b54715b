import numpy as np
import pytest
import torch

from workbench import queries
from workbench.api import compare
from workbench.metrics.divergence import iou, sad
from workbench.runner import run_job
from workbench.training.evolution import MaskEvolution


def _popcount_xor(a: torch.Tensor, b: torch.Tensor) -> int:
    """SAD the hardware way: XOR of the bit-packed masks, then count the set bits."""
    packed_a = np.packbits(a.reshape(-1).numpy())
    packed_b = np.packbits(b.reshape(-1).numpy())
    return int(np.unpackbits(np.bitwise_xor(packed_a, packed_b)).sum())


def test_sad_equals_popcount_of_xor_on_hand_built_masks():
    a = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]], dtype=torch.bool)
    b = torch.tensor([[1, 0, 1, 0], [1, 0, 1, 0]], dtype=torch.bool)
    assert sad(a, b) == 2 == _popcount_xor(a, b)
    assert iou(a, b) == pytest.approx(3 / 5)  # kept in both: 3; kept in either: 5
    assert sad(a, a) == 0 and iou(a, a) == 1.0
    torch.manual_seed(0)
    c, d = torch.rand(37, 29) > 0.5, torch.rand(37, 29) > 0.3
    assert sad(c, d) == _popcount_xor(c, d)


def test_evolution_records_consecutive_sad_and_shares_unchanged_masks():
    evolution = MaskEvolution()
    first = {"w": torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)}
    assert evolution.snapshot(0, first) == []
    metrics = evolution.snapshot(10, {"w": torch.tensor([[0, 1, 1, 0]], dtype=torch.bool)})
    assert {m.name: m.value for m in metrics} == {"sad": 2.0, "sad_fraction": 0.5}
    evolution.snapshot(20, {"w": torch.tensor([[0, 1, 1, 0]], dtype=torch.bool)})
    assert [(d.step_a, d.step_b, d.sad) for d in evolution.divergence] == [(0, 10, 2), (10, 20, 0)]
    assert evolution.snapshots[2][1]["w"] is evolution.snapshots[1][1]["w"]  # unchanged: the same tensor
    assert evolution.total_sad() == 2


def test_training_run_stores_mask_evolution(store, image_spec):
    spec = {**image_spec, "method": "set", "sparsity": 0.9, "params": {"every": 2, "end": 0.5}}
    result = run_job(spec, store)
    index = queries.mask_index(store, result.run_id)
    assert sorted(index["step"].unique()) == [0, 3, 6, 9, 12]
    assert set(index["layer"]) == {"conv2", "fc1", "fc2"}
    rows = queries.divergence(store, [result.run_id])
    own = rows[(rows.run_a == result.run_id) & (rows.run_b == result.run_id)]
    assert sorted(set(zip(own.step_a, own.step_b))) == [(0, 3), (3, 6), (6, 9), (9, 12)]
    assert own["sad"].sum() == result.metrics["total_sad"] > 0
    # topology updates stop at T_end = 6 steps: no change between the last snapshots
    assert own[own.step_a >= 6]["sad"].sum() == 0
    # the SAD rows agree with the stored masks themselves
    for (step_a, step_b), group in own.groupby(["step_a", "step_b"]):
        masks_a = queries.load_masks(store, result.run_id, step=int(step_a))
        masks_b = queries.load_masks(store, result.run_id, step=int(step_b))
        for row in group.itertuples():
            assert row.sad == sad(masks_a[row.layer], masks_b[row.layer])
    # content-addressed: the unchanged masks after T_end add no blob
    assert index[index.step >= 6].groupby("layer")["hash"].nunique().eq(1).all()
    per_step = queries.metrics(store, [result.run_id], ["sad", "accuracy", "loss"])
    assert set(per_step["name"]) == {"sad", "accuracy", "loss"}
    assert sorted(per_step[per_step.name == "accuracy"]["step"]) == [0, 6, 12]


def test_sad_and_iou_between_two_runs_final_masks_are_cached(store, image_spec):
    gmp = run_job({**image_spec, "method": "gmp", "sparsity": 0.8, "params": {"every": 2, "start": 0.0, "end": 0.5}}, store)
    rigl = run_job({**image_spec, "method": "rigl", "sparsity": 0.8, "params": {"every": 2}}, store)
    frame = compare(gmp.run_id, rigl.run_id, store=store)
    final_a, final_b = queries.load_masks(store, gmp.run_id), queries.load_masks(store, rigl.run_id)
    assert set(frame["layer"]) == {"conv2", "fc1", "fc2"}
    for row in frame.itertuples():
        assert row.sad == sad(final_a[row.layer], final_b[row.layer])
        assert row.iou == pytest.approx(iou(final_a[row.layer], final_b[row.layer]))
    before = len(queries.divergence(store))
    again = compare(gmp.run_id, rigl.run_id, store=store)
    assert len(queries.divergence(store)) == before  # served from the store, not recomputed
    assert again["sad"].tolist() == frame["sad"].tolist()
