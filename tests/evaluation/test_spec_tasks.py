"""evaluation.tasks / limit / num_fewshot in prune specs: validated, and in the key only when set."""

import pytest

from workbench.errors import SpecError
from workbench.spec import job_key, parse_spec

BASE = {"model": "tiny-llama", "method": "magnitude", "sparsity": 0.5}


def _spec(**evaluation):
    return parse_spec({**BASE, "evaluation": evaluation})


def test_defaults_stay_out_of_the_canonical_spec_and_key():
    plain = parse_spec(BASE)
    assert plain.evaluation.tasks == () and plain.evaluation.limit is None and plain.evaluation.num_fewshot is None
    assert set(plain.canonical()["evaluation"]) == {"windows", "seq_len"}
    assert "tasks" not in plain.identity_parts()
    assert job_key(_spec(tasks=[])) == job_key(plain)


def test_a_changed_task_list_is_another_key():
    keys = {
        job_key(parse_spec(BASE)),
        job_key(_spec(tasks=["shakespeare-nextline"])),
        job_key(_spec(tasks=["shakespeare-nextline", "pydoc-nextline"])),
        job_key(_spec(tasks=["shakespeare-nextline"], limit=10)),
        job_key(_spec(tasks=["shakespeare-nextline"], limit=20)),
        job_key(_spec(tasks=["shakespeare-nextline"], num_fewshot=2)),
        job_key(_spec(tasks=["hellaswag"])),
    }
    assert len(keys) == 7


def test_order_duplicates_and_commas_do_not_change_the_key():
    one = _spec(tasks=["shakespeare-nextline", "pydoc-nextline"])
    assert one.evaluation.tasks == ("pydoc-nextline", "shakespeare-nextline")
    assert job_key(_spec(tasks=["pydoc-nextline", "shakespeare-nextline", "pydoc-nextline"])) == job_key(one)
    assert job_key(_spec(tasks="shakespeare-nextline, pydoc-nextline")) == job_key(one)


def test_local_task_identity_names_its_documents():
    parts = _spec(tasks=["shakespeare-lastword", "hellaswag"]).identity_parts()
    assert parts["tasks"].startswith("adapter@") and "lm_eval@0.4.13" in parts["tasks"]
    assert "hellaswag" in parts["tasks"].split(",")  # a harness task: its name (the harness version says the rest)
    local = [part for part in parts["tasks"].split(",") if part.startswith("shakespeare-lastword@")]
    assert len(local) == 1 and local[0].endswith(parts["data"])  # builder version, template, corpus identity


@pytest.mark.parametrize(("evaluation", "message"), [
    ({"limit": 5}, "limit applies to evaluation.tasks"),
    ({"num_fewshot": 1}, "num_fewshot applies to evaluation.tasks"),
    ({"tasks": ["shakespeare nextline"]}, "holds whitespace"),
    ({"tasks": ["x"], "limit": 0}, "evaluation.limit"),
    ({"tasks": ["x"], "shots": 1}, "unknown key"),
])
def test_invalid_evaluation_parts(evaluation, message):
    with pytest.raises(SpecError, match=message):
        _spec(**evaluation)
