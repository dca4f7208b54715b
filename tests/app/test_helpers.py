"""The app's pure helpers: the query box, spec diffs, mask pictures, forms, progress parsing (Pareto
fronts and mask overlaps are workbench.results', tested in tests/test_results.py). Hand-checkable cases
first, then invariants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from workbench_app import filters, forms
from workbench_app.launcher import parse_progress
from workbench_app.maskview import column_sparsity, density_image, mask_image, row_sparsity
from workbench_app.specs import flatten, numeric_fields, spec_diff

from workbench.errors import SpecError
from workbench.figures import grouped_traces

RUNS = pd.DataFrame({
    "run_id": ["a1", "b2", "c3", "d4"],
    "method": ["magnitude", "wanda", "random", "magnitude"],
    "pattern": ["unstructured", "2:4", "unstructured", "unstructured"],
    "achieved_sparsity": [0.5, 0.5, 0.7, np.nan],
    "perplexity": [40.0, 31.0, 900.0, np.nan],
    "status": ["finished", "finished", "finished", "failed"],
    "error": [None, None, None, "PruningError: hamlet is too short"],
    "nm_valid": pd.array([None, True, None, None], dtype="boolean"),
    "created_at": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]),
})


@pytest.mark.parametrize("query, expected", [
    ("", ["a1", "b2", "c3", "d4"]),
    ("method=magnitude", ["a1", "d4"]),
    ("METHOD = Magnitude", ["a1", "d4"]),
    ("method=wanda|random", ["b2", "c3"]),
    ("method!=magnitude", ["b2", "c3"]),
    ("perplexity<100", ["a1", "b2"]),
    ("ppl>=40 and sparsity>0.6", ["c3"]),
    ("achieved>=50%", ["a1", "b2", "c3"]),
    ("pattern~2:", ["b2"]),
    ("hamlet", ["d4"]),  # a bare word searches the text columns, the error text included
    ('error~"too short"', ["d4"]),
    ("nm_valid=true", ["b2"]),
    ("created_at>=2026-01-03", ["c3", "d4"]),
    ("method=magnitude, status=failed", ["d4"]),
])
def test_query_box_filters_rows(query, expected):
    assert list(filters.apply(RUNS, query)["run_id"]) == expected


@pytest.mark.parametrize("query, problem", [
    ("colour=red", "unknown field 'colour'"),
    ("perplexity<low", "not a number"),
    ("perplexity<10|20", "alternatives"),
    ("created_at>yesterday-ish", "not a time"),
])
def test_query_box_errors_name_the_problem_and_the_fix(query, problem):
    with pytest.raises(filters.FilterError) as caught:
        filters.apply(RUNS, query)
    assert problem in caught.value.problem and caught.value.fix


def test_query_text_never_reaches_sql_or_eval():
    # text that would be an injection in SQL or code is only ever compared as a value
    hostile = "method='; DROP TABLE runs; --  name=__import__('os')"
    assert filters.apply(RUNS.assign(name="x"), hostile).empty


def test_flatten_uses_dotted_names_and_keeps_lists_as_text():
    spec = {"model": "m", "calibration": {"samples": 8, "seed": 0}, "params": {}, "tags": ["a", "b"],
            "pattern": {"name": "nm", "keep": 2, "group": 4}}
    assert flatten(spec) == {"model": "m", "calibration.samples": 8, "calibration.seed": 0, "tags": '["a", "b"]',
                             "pattern.name": "nm", "pattern.keep": 2, "pattern.group": 4}


def test_spec_diff_shows_only_fields_that_differ():
    specs = {"r1": {"model": "m", "method": "magnitude", "sparsity": 0.5, "calibration": {"samples": 8, "seed": 0}},
             "r2": {"model": "m", "method": "wanda", "sparsity": 0.5, "calibration": {"samples": 8, "seed": 1},
                    "params": {"alpha": 5}}}
    diff = spec_diff(specs, {"r1": "first", "r2": "second"})
    assert list(diff.index) == ["calibration.seed", "method", "params.alpha"]
    assert diff.loc["method"].tolist() == ["magnitude", "wanda"]
    assert diff.loc["params.alpha"].tolist() == ["—", "5"]
    assert list(diff.columns) == ["first", "second"]
    assert spec_diff({"a": specs["r1"], "b": dict(specs["r1"])}).empty


def test_numeric_fields_are_varying_numbers_only():
    table = pd.DataFrame({"sparsity": [0.5, 0.7], "seed": [0, 0], "flag": [True, False], "method": ["a", "b"],
                          "samples": [8, 16]})
    assert numeric_fields(table) == ["sparsity", "samples"]


def test_mask_image_shades_alternate_nm_groups():
    mask = np.array([[1, 1, 0, 0, 0, 1, 1, 0]], dtype=bool)  # 2:4, two groups of four
    image = mask_image(mask, group=4)
    assert image.shape == (1, 8, 3)
    kept_even, kept_odd, pruned_even, pruned_odd = image[0, 0], image[0, 5], image[0, 2], image[0, 4]
    assert len({tuple(kept_even), tuple(kept_odd), tuple(pruned_even), tuple(pruned_odd)}) == 4
    assert (mask_image(mask)[0, 0] == mask_image(mask)[0, 5]).all()  # no group: one shade per state


def test_density_image_averages_blocks_and_keeps_the_kept_fraction():
    mask = np.zeros((10, 10), dtype=bool)
    mask[:5, :5] = True
    density, side = density_image(mask, max_pixels=25)
    assert side == 2 and density.shape == (5, 5)
    assert density[0, 0] == 1.0 and density[4, 4] == 0.0
    assert density[2, 2] == pytest.approx(0.25)  # rows 4-5 x columns 4-5: only (4, 4) kept
    assert density[2, 0] == pytest.approx(0.5)  # rows 4-5 x columns 0-1: row 4 kept
    odd, side = density_image(np.ones((9, 9), dtype=bool), max_pixels=25)
    assert side == 2 and odd.shape == (5, 5) and (odd == 1.0).all()  # edge blocks average their real cells only


def test_row_and_column_sparsity():
    mask = np.array([[1, 0, 0, 0], [1, 1, 0, 0]], dtype=bool)
    assert row_sparsity(mask).tolist() == [0.75, 0.5]
    assert column_sparsity(mask).tolist() == [0.0, 0.5, 1.0, 1.0]


def test_grouped_traces_split_by_columns_and_break_lines_between_series():
    frame = pd.DataFrame({"tokens": [1, 8, 1, 8, 1], "speedup": [1.1, 1.5, 0.6, 0.7, 1.2],
                          "backend": ["24", "24", "bsr", "bsr", "24"], "run": ["r1", "r1", "r1", "r1", "r2"],
                          "label": ["one", "one", "one", "one", "two"]})
    traces = grouped_traces(frame, "tokens", "speedup", color="backend", line_group="run", mode="lines")
    assert [t["name"] for t in traces] == ["24", "bsr"]
    x = traces[0]["x"]  # run r1's line, a break, run r2's point
    assert x.dtype == float and x[:2].tolist() == [1, 8] and np.isnan(x[2]) and x[3] == 1
    assert traces[0]["line"]["color"] != traces[1]["line"]["color"]
    assert list(traces[0]["text"]) == ["one", "one", None, "two"]


def test_sweep_form_pairs_nm_patterns_with_no_sparsity():
    sweep = forms.build_sweep({"model": "tiny-llama"}, ["magnitude", "random"], ["unstructured", "2:4"],
                              [0.5, 0.7], [0])
    assert sweep["base"] == {"model": "tiny-llama"}
    assert len(sweep["include"]) == 2 * (2 + 1)
    assert {"method": "random", "pattern": "2:4", "calibration.seed": 0} in sweep["include"]
    specs = forms.expand({**sweep, "base": {"model": "tiny-llama", "evaluation": {"windows": 2, "seq_len": 32}}})
    assert sorted((s.method, str(s.pattern), s.sparsity) for s in specs)[:3] == [
        ("magnitude", "2:4", 0.5), ("magnitude", "unstructured", 0.5), ("magnitude", "unstructured", 0.7)]


@pytest.mark.parametrize("text, problem", [("0.5, half", "'half' is not a number"), ("", "no sparsities")])
def test_form_lists_are_checked(text, problem):
    with pytest.raises(SpecError, match=problem):
        forms.numbers(text, "sparsities")


def test_yaml_form_tells_spec_from_sweep_and_reports_bad_yaml():
    assert forms.from_yaml("model: tiny-llama\nmethod: random") == {"base": {"model": "tiny-llama", "method": "random"}}
    assert "grid" in forms.from_yaml("base: {}\ngrid: {method: [random]}")
    with pytest.raises(SpecError, match="line 2"):
        forms.from_yaml("model: a\n  bad: [")


def test_progress_is_read_from_the_sweeps_latest_line():
    log = ("wanda: block 2/2 (100%), 00:01 elapsed\n"
           "sweep: job 1/3 (33%), 00:02 elapsed, about 00:04 left [done 1, running 0, failed 0, cached 0]\n"
           "perplexity: batch 4/4 (100%)\n"
           "sweep: job 2/3 (66%), 00:04 elapsed, about 00:02 left [done 2, running 0, failed 0, cached 0]\n"
           "warning: run 1fce4adc32-601964: achieved sparsity 0.6892 is 1.08 percentage points below the target 0.7\n")
    progress = parse_progress(log, total=3)
    assert (progress.done, progress.total) == (2, 3)
    assert progress.fraction == pytest.approx(2 / 3)
    assert progress.summary() == "2 of 3 jobs · 00:04 elapsed, about 00:02 left · done 2, running 0, failed 0, cached 0"
    assert progress.detail.startswith("warning: run 1fce4adc32")
    assert parse_progress("", total=4).done == 0
    assert parse_progress("loading model\n", total=2).summary() == "0 of 2 jobs"
    assert parse_progress("sweep: job 1/1 (100%)\n", total=1).summary() == "1 of 1 job"


def test_the_time_estimate_follows_the_stores_pace_per_token():
    runs = pd.DataFrame({"run_id": ["a", "b", "c", "d"], "status": ["finished", "finished", "failed", "finished"],
                         "kind": ["prune", "prune", "prune", "train"], "model": ["m", "m", "m", "m"],
                         "wall_s": [10.0, 30.0, 1.0, 99.0]})
    specs = pd.DataFrame({"calibration.samples": [8, 8, 8, None], "calibration.seq_len": [64, 64, 64, None],
                          "evaluation.windows": [8, 8, 8, None], "evaluation.seq_len": [64, 64, 64, None]},
                         index=pd.Index(["a", "b", "c", "d"], name="run_id"))
    pace = forms.seconds_per_token(runs, specs, "m")
    assert pace == (pytest.approx(20.0 / 1024), 2)  # the median of the two finished prune runs, per token
    line = forms.estimate_line("m", 3, 16, 64, 8, 64, pace)  # 1,536 tokens: 1.5 times those runs
    assert "16 × 64 calibration tokens" in line and "1,536 tokens" in line
    assert "Roughly 30 s per job, 3 jobs about 90 s" in line.replace("2 min", "90 s")
    assert forms.seconds_per_token(runs, specs, "other") is None
    assert "No finished prune run of other" in forms.estimate_line("other", 1, 64, 512, 64, 512, None)
