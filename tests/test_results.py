"""The result vocabulary every reader shares: directions, metric names, labels, Pareto fronts (ties
included), SAD/IoU on bit-packed masks against the definition on unpacked ones."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench import results
from workbench.results import (
    HEADLINE_METRICS,
    LOWER_IS_BETTER,
    QUALITY_METRICS,
    Overlap,
    PackedMask,
    UnknownMetricError,
    front_positions,
    job_label,
    lower_is_better,
    mask_overlap,
    overlap,
    pairwise_overlap,
    pareto_front,
    quality_metric,
    quality_metrics,
    run_label,
    run_labels,
    task_scores,
)

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- directions and names

@pytest.mark.parametrize("metric, lower", [("perplexity", True), ("accuracy", False), ("embedding_cosine", False),
                                           ("neighbour_agreement", False), ("loss", True), ("loss_squarehead", True),
                                           ("speedup", False), ("median_us", True), ("achieved_sparsity", False)])
def test_direction_table(metric, lower):
    assert lower_is_better(metric) is lower
    assert results.better(metric) == ("lower" if lower else "higher")


def test_an_unknown_metric_has_no_direction():
    with pytest.raises(UnknownMetricError, match="no direction is known for metric 'top1'") as caught:
        lower_is_better("top1")
    assert "LOWER_IS_BETTER" in caught.value.fix
    with pytest.raises(UnknownMetricError):
        pareto_front(pd.DataFrame({"sparsity": [0.5], "bleu": [1.0]}), y="bleu")
    with pytest.raises(TypeError):
        LOWER_IS_BETTER["bleu"] = False  # one table, read-only


@pytest.mark.parametrize("metric, lower", [("shakespeare-lastword/acc", False), ("pydoc-nextline/acc_norm", False),
                                           ("gsm8k/exact_match/strict-match", False), ("shakespeare-lastword/perplexity", True),
                                           ("wikitext/word_perplexity", True), ("shakespeare-nextline/acc_vs_dense", False)])
def test_task_scores_point_the_way_the_harness_says(metric, lower):
    assert lower_is_better(metric) is lower


def test_every_local_task_metric_has_the_direction_its_task_declares():
    import yaml

    for path in sorted((ROOT / "workbench" / "evaluation" / "tasks").glob("*.yaml")):
        for entry in yaml.safe_load(path.read_text())["metric_list"]:
            assert lower_is_better(f"{path.stem}/{entry['metric']}") is not entry["higher_is_better"], (path, entry)


@pytest.mark.parametrize("spread", ["shakespeare-lastword/acc_stderr", "pydoc-nextline/acc_norm_stderr",
                                    "gsm8k/exact_match_stderr/strict-match"])
def test_a_standard_error_is_no_quality(spread):
    with pytest.raises(UnknownMetricError, match="standard error"):
        lower_is_better(spread)
    assert quality_metrics([spread, "perplexity"]) == ["perplexity"]


def test_task_names_without_a_known_score_stay_unknown():
    for name in ("shakespeare-lastword/documents", "task/top1", "a/b/c/d", "/acc", "task/"):
        with pytest.raises(UnknownMetricError, match="no direction"):
            lower_is_better(name)
        assert quality_metrics([name]) == []


def test_quality_metrics_offer_task_scores_after_the_built_in_ones():
    names = ["b-task/acc", "sparsity", "a-task/acc_stderr", "a-task/acc_norm", "a-task/acc", "a-task/documents",
             "accuracy", "perplexity"]
    assert quality_metrics(names) == ["perplexity", "accuracy", "a-task/acc", "a-task/acc_norm", "b-task/acc"]
    assert quality_metric(names) == "perplexity"
    assert quality_metric(["a-task/acc_stderr", "b-task/acc"]) == "b-task/acc"


def test_task_scores_pair_each_score_with_its_standard_error_and_documents():
    scores = task_scores({"perplexity": 30.0, "shakespeare-lastword/acc": 0.25, "shakespeare-lastword/acc_stderr": 0.05,
                          "shakespeare-lastword/perplexity": 90.0, "shakespeare-lastword/documents": 40.0,
                          "pydoc-nextline/acc": 0.5, "gsm8k/exact_match/strict-match": 0.1,
                          "gsm8k/exact_match_stderr/strict-match": 0.01})
    assert list(zip(scores["task"], scores["metric"])) == [
        ("gsm8k", "exact_match/strict-match"), ("pydoc-nextline", "acc"), ("shakespeare-lastword", "acc"),
        ("shakespeare-lastword", "perplexity")]
    assert scores["value"].tolist() == [0.1, 0.5, 0.25, 90.0]
    assert scores["stderr"].tolist()[0] == 0.01 and np.isnan(scores["stderr"].tolist()[1])
    assert scores["stderr"].tolist()[2] == 0.05
    assert scores["documents"].tolist()[2:] == [40, 40] and pd.isna(scores["documents"].tolist()[0])
    assert task_scores({"perplexity": 30.0}).empty


def test_the_pareto_front_of_a_task_accuracy_keeps_the_most_accurate_runs():
    # at 50% the run with the lower perplexity is the less accurate one: each metric has its own front
    frame = pd.DataFrame({"run": ["dense", "sparsegpt", "wanda", "magnitude"], "sparsity": [0.0, 0.5, 0.5, 0.7],
                          "perplexity": [20.0, 24.0, 25.0, 90.0], "task/acc": [0.5, 0.4, 0.42, 0.25]})
    assert pareto_front(frame, y="task/acc")["run"].tolist() == ["dense", "wanda", "magnitude"]
    assert pareto_front(frame, y="perplexity")["run"].tolist() == ["dense", "sparsegpt", "magnitude"]


def _emitted_names() -> set[str]:
    """Metric names the jobs write: string keys of dict literals and of item assignments, and first
    arguments of Metric(...), in workbench/jobs, training, metrics and kernels (what the jobs call)."""
    names: set[str] = set()
    for folder in ("jobs", "training", "metrics", "kernels"):
        for path in (ROOT / "workbench" / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store) \
                        and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                    names.add(node.slice.value)
                if isinstance(node, ast.Dict):
                    names |= {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Metric" and node.args \
                        and isinstance(node.args[0], ast.Constant):
                    names.add(node.args[0].value)
    return names


def test_quality_and_headline_metrics_are_names_jobs_emit():
    emitted = _emitted_names()
    assert set(QUALITY_METRICS) <= emitted and set(HEADLINE_METRICS) <= emitted
    assert set(QUALITY_METRICS) <= set(HEADLINE_METRICS)
    assert all(metric in LOWER_IS_BETTER for metric in QUALITY_METRICS)  # each has a direction
    assert quality_metric({"eval_windows": 4, "perplexity": 30.0}) == "perplexity"
    assert quality_metric({"neighbour_agreement": 0.9, "embedding_cosine": 0.98}) == "embedding_cosine"
    assert quality_metric({"loss": 1.0}) is None


def test_results_imports_no_torch_no_store_no_streamlit():
    code = ("import sys, workbench.results; "
            "print(sorted(m for m in ('torch', 'streamlit', 'duckdb', 'workbench.store', 'ipywidgets') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- labels

def test_job_labels():
    assert job_label("magnitude", "prune", 0.5) == "magnitude 50%"
    assert job_label("wanda", "prune", 0.5, "2:4", "owl") == "wanda 50% 2:4 owl"
    assert job_label("dense", "prune", 0.0, "unstructured", "uniform") == "dense"  # no sparsity for dense
    assert job_label(None, "bench", float("nan"), None, None) == "bench"
    assert job_label("magnitude", "prune", 0.7, name="baseline") == "baseline 70%"  # a name replaces the method


def test_run_labels_agree_with_run_label_and_describe():
    frame = pd.DataFrame({
        "run_id": ["aaaaaaaaaa-000001", "bbbbbbbbbb-000002", "cccccccccc-000003"],
        "kind": ["prune", "train", "bench"], "name": [None, "my run", None],
        "method": ["sparsegpt", "sr-ste", None], "target_sparsity": [np.nan, 0.8, np.nan],
        "pattern": ["2:4", "unstructured", None], "allocation": ["uniform", "uniform", None],
        "model": ["tiny-llama", "fashion-cnn", None]}, index=[7, 8, 9])
    labels = run_labels(frame)
    assert list(labels.index) == [7, 8, 9]
    assert list(labels) == ["sparsegpt 2:4 · tiny-llama · aaaaaaaa", "my run 80% · fashion-cnn · bbbbbbbb",
                            "bench · cccccccc"]
    assert [run_label(row) for row in frame.itertuples(index=False)] == list(labels)
    assert run_labels(frame.iloc[0:0]).empty

    from workbench.spec import parse_spec

    spec = parse_spec({"model": "tiny-llama", "method": "wanda", "sparsity": 0.6, "allocation": "owl"})
    assert results.describe(spec) == "wanda 60% owl"


# ---------------------------------------------------------------- Pareto fronts

def test_pareto_front_hand_case():
    # sparsity up, perplexity down: (0, 10) dense; (0.5, 12) and (0.5, 20) tie on sparsity; (0.7, 11) dominates both
    frame = pd.DataFrame({"run_id": list("abcdef"), "sparsity": [0.0, 0.5, 0.5, 0.7, 0.9, np.nan],
                          "perplexity": [10.0, 12.0, 20.0, 11.0, 50.0, 1.0]})
    assert list(pareto_front(frame)["run_id"]) == ["a", "d", "e"]
    # accuracy: higher is better
    frame["accuracy"] = [0.9, 0.8, 0.85, 0.5, 0.4, 0.1]
    assert list(pareto_front(frame, y="accuracy")["run_id"]) == ["a", "c", "d", "e"]
    assert list(pareto_front(frame, y="perplexity", lower_is_better=False)["run_id"]) == ["e"]  # sparsest and highest


def test_pareto_front_on_ties_within_the_tolerance():
    # a 2:4 mask measured over a model is 0.50000003 sparse; it must not beat Wanda 50% (0.5) on sparsity alone
    frame = pd.DataFrame({"run_id": ["dense", "wanda", "sparsegpt-2:4", "magnitude"],
                          "sparsity": [0.0, 0.5, 0.50000003, 0.7], "perplexity": [28.0, 111.0, 159.0, 900.0]})
    assert list(pareto_front(frame)["run_id"]) == ["dense", "wanda", "magnitude"]
    assert list(pareto_front(frame, tolerance=0.0)["run_id"]) == ["dense", "wanda", "sparsegpt-2:4", "magnitude"]
    # within the tolerance the better quality wins whichever side of it the sparsity falls
    frame.loc[1, "sparsity"] = 0.5009
    assert list(pareto_front(frame)["run_id"]) == ["dense", "wanda", "magnitude"]
    # equal runs (same sparsity, same quality) are both on the front: neither beats the other
    twins = pd.DataFrame({"run_id": ["a", "b"], "sparsity": [0.5, 0.5], "perplexity": [20.0, 20.0]})
    assert list(pareto_front(twins)["run_id"]) == ["a", "b"]


def _dominated(x: np.ndarray, y: np.ndarray, i: int, tolerance: float) -> bool:
    """The definition, by brute force (both axes: larger is better)."""
    return bool(np.any(((x >= x[i] - tolerance) & (y > y[i])) | ((x > x[i] + tolerance) & (y >= y[i]))))


@pytest.mark.parametrize("tolerance", [0.0, 1e-3, 0.05])
def test_front_positions_are_exactly_the_undominated_points(tolerance):
    rng = np.random.default_rng(0)
    x, y = rng.random(300).round(2), rng.random(300)  # rounding makes many exact ties in x
    front = set(front_positions(x, y, tolerance=tolerance).tolist())
    for i in range(len(x)):
        assert (i in front) == (not _dominated(x, y, i, tolerance))
    flipped = front_positions(-x, -y, higher_x=False, higher_y=False, tolerance=tolerance)
    assert set(flipped.tolist()) == front


# ---------------------------------------------------------------- SAD / IoU on packed masks

def _by_definition(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    return int((a != b).sum()), (a & b).sum() / (a | b).sum() if (a | b).any() else 1.0


def test_packed_overlap_equals_the_unpacked_definition_on_a_hand_built_case():
    a = np.array([[1, 1, 0, 0, 1], [0, 0, 0, 1, 1]], dtype=bool)  # 10 bits: 6 of padding in the second byte
    b = np.array([[1, 0, 1, 0, 1], [0, 0, 0, 0, 1]], dtype=bool)
    packed_a, packed_b = PackedMask.of(a), PackedMask.of(b)
    assert packed_a.bits.dtype == np.uint8 and len(packed_a.bits) == 2 and packed_a.kept == 5
    found = mask_overlap(packed_a, packed_b)
    assert (found.both, found.either, found.numel) == (3, 6, 10)  # by hand
    assert (found.sad, found.iou, found.sad_fraction) == (3, 0.5, 0.3)
    assert (found.sad, found.iou) == _by_definition(a, b)
    assert Overlap.of_counts(a.sum(), b.sum(), found.sad, 10) == found  # from the counts the store keeps


def test_packed_overlap_matches_the_store_encoding_and_the_tensor_metrics():
    import zlib

    import torch

    from workbench.metrics.divergence import iou, sad
    from workbench.store.masks import encode_mask

    rng = np.random.default_rng(1)
    a, b = rng.random((37, 53)) < 0.4, rng.random((37, 53)) < 0.6  # 1961 bits: padding in the last byte
    stored = [np.frombuffer(zlib.decompress(encode_mask(torch.from_numpy(m)).data), dtype=np.uint8) for m in (a, b)]
    found = mask_overlap(PackedMask(stored[0], a.shape), PackedMask(stored[1], b.shape))
    assert found.sad == _by_definition(a, b)[0] == sad(torch.from_numpy(a), torch.from_numpy(b))
    assert found.iou == pytest.approx(_by_definition(a, b)[1])
    assert found.iou == pytest.approx(iou(torch.from_numpy(a), torch.from_numpy(b)))
    with pytest.raises(ValueError, match="differ in shape"):
        mask_overlap(PackedMask.of(a), PackedMask.of(b.T))


def test_overlap_of_runs_skips_layers_of_another_shape_and_fills_matrices():
    a = {"l1": PackedMask.of(np.array([[1, 1, 0, 0]], dtype=bool)), "l2": PackedMask.of(np.ones((2, 2), bool)),
         "only_a": PackedMask.of(np.ones(3, bool))}
    b = {"l1": PackedMask.of(np.array([[1, 0, 1, 0]], dtype=bool)), "l2": PackedMask.of(np.ones((2, 3), bool))}
    assert overlap(a, b) == Overlap(1, 3, 4)  # l2 differs in shape, only_a is in one run only
    iou, sad = pairwise_overlap({"a": a, "b": b, "none": {}})
    assert iou.loc["a", "b"] == pytest.approx(1 / 3) and sad.loc["a", "b"] == pytest.approx(2 / 4)
    assert iou.loc["a", "a"] == 1.0 and sad.loc["b", "b"] == 0.0
    assert np.isnan(iou.loc["a", "none"]) and np.isnan(iou.loc["none", "none"])
    assert Overlap(0, 0, 0).iou == 1.0 and Overlap(0, 0, 0).sad_fraction == 0.0  # nothing kept anywhere: same
