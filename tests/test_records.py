"""What a job's records say about it: a prune run that misses its target sparsity carries the miss."""

from __future__ import annotations

import pytest

from workbench.records import SHORTFALL_METRIC, shortfall_warning, sparsity_shortfall


def test_a_miss_of_more_than_half_a_point_is_kept_and_read_as_words():
    # Wanda at 70% on 64-input rows: int(0.7 * 64) = 44 of 64 pruned per row; with the 128-input
    # down_proj (89 of 128) the model reaches 0.6892
    missed = sparsity_shortfall(0.7, 0.6892)
    assert missed == pytest.approx(0.0108)
    assert shortfall_warning({"sparsity": 0.6892, SHORTFALL_METRIC: missed}) == (
        "achieved sparsity 0.6892 is 1.08 percentage points below the target 0.7")
    assert shortfall_warning({"sparsity": 0.7123, SHORTFALL_METRIC: -0.0123}) == (
        "achieved sparsity 0.7123 is 1.23 percentage points above the target 0.7")


@pytest.mark.parametrize("target, achieved", [(0.7, 0.69971), (0.5, 0.5), (0.5, 0.50000003), (0.7, 0.6951)])
def test_runs_within_half_a_point_of_their_target_carry_nothing(target, achieved):
    assert sparsity_shortfall(target, achieved) is None
    assert shortfall_warning({"sparsity": achieved}) is None
