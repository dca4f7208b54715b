"""How harness results become stored metric names."""

from workbench.evaluation.harness import metrics_of


def test_metric_names_per_task_filter_and_group():
    results = {
        "results": {
            "shakespeare-nextline": {"alias": "shakespeare-nextline", "acc,none": 0.5, "acc_stderr,none": 0.1,
                                     "acc_norm,none": 0.25, "acc_norm_stderr,none": 0.05},
            "gsm8k": {"exact_match,strict-match": 0.2, "exact_match_stderr,strict-match": 0.01,
                      "exact_match,flexible-extract": 0.3},
            "tiny": {"acc,none": 1.0, "acc_stderr,none": "N/A"},
        },
        "groups": {"mmlu": {"acc,none": 0.3, "acc_stderr,none": float("nan")}},
        "n-samples": {"shakespeare-nextline": {"original": 500, "effective": 20}},
    }
    assert metrics_of(results) == {
        "shakespeare-nextline/acc": 0.5, "shakespeare-nextline/acc_stderr": 0.1,
        "shakespeare-nextline/acc_norm": 0.25, "shakespeare-nextline/acc_norm_stderr": 0.05,
        "gsm8k/exact_match/strict-match": 0.2, "gsm8k/exact_match_stderr/strict-match": 0.01,
        "gsm8k/exact_match/flexible-extract": 0.3,
        "tiny/acc": 1.0, "mmlu/acc": 0.3,
        "shakespeare-nextline/documents": 20.0,
    }
