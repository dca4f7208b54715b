"""The prune benchmark: both implementations in their own processes, figures and mask agreement."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from workbench.benchmarks.prune_speed import Case, format_summary, mask_agreement
from workbench.cli import app


def test_mask_agreement_counts_differing_bits(tmp_path):
    a = np.ones(20, dtype=bool)
    b = a.copy()
    b[[3, 17]] = False
    save_file({"x": torch.from_numpy(np.packbits(a)), "y": torch.from_numpy(np.packbits(a[:8]))}, str(tmp_path / "a"))
    save_file({"x": torch.from_numpy(np.packbits(b)), "y": torch.from_numpy(np.packbits(a[:8]))}, str(tmp_path / "b"))
    assert mask_agreement(tmp_path / "a", tmp_path / "b") == {"masks_differ_fraction": 2 / 32, "layers_equal": 1,
                                                              "layers": 2}


def test_tiny_benchmark_against_llmcompressor_prints_and_writes_figures(tmp_path):
    pytest.importorskip("llmcompressor", reason="install the dev extra: pip install -e '.[dev]'")
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "prune", "--model", "tiny-llama-random", "--method", "wanda",
                                      "--pattern", "2:4", "--samples", "4", "--seq-len", "32", "--eval-windows", "1",
                                      "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    [summary] = written["cases"]
    assert summary["masks_differ_fraction"] == 0 and summary["layers_equal"] == summary["layers"] == 14
    for impl in ("ours", "llmcompressor"):
        [run] = summary["runs"][impl]
        assert run["wall_s"] > 0 and run["cpu_s"] > 0 and run["peak_rss_mb"] > 100
        assert run["sparsity"] == pytest.approx(0.5) and 0 < run["quality"]["hidden_state_error"] < 10
    assert summary["hidden_state_error_relative_difference"] == pytest.approx(0, abs=1e-5)
    assert summary["wall_speedup"] > 0 and summary["peak_rss_ratio"] > 0
    assert "ref/ours wall" in result.output and format_summary(summary) in result.output
    assert f"wrote {out}" in result.output
    assert written["environment"]["device"] == "cpu" and summary["case"] == vars(Case(
        "tiny-llama-random", "wanda", "2:4", 0.5, 4, 32, 1, None, "cpu", "model"))


def test_the_summary_says_which_goals_a_case_meets():
    from workbench.benchmarks.prune_speed import target_line

    cpu = {"case": {"device": "cpu"}, "wall_speedup": 2.29, "peak_rss_ratio": 0.82,
           "perplexity_relative_difference": 0.0011}
    assert target_line(cpu) == ("  targets: wall 2.29x (goal >= 2x: met)  peak memory 0.82 of the reference's "
                                "(goal <= 1: met)  perplexity +0.11%")
    gpu = {"case": {"device": "cuda"}, "wall_speedup": 4.74, "peak_rss_ratio": 0.5}
    assert target_line(gpu) == "  targets: wall 4.74x (goal >= 5x: NOT met)"
    assert "NOT met" in target_line({**cpu, "peak_rss_ratio": 1.2})
