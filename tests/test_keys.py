"""Job keys of reference specs, computed before the code was reorganised: a move of code must not change
them, or every stored run of a user would be recomputed."""

import pytest

from workbench.spec import job_key, parse_spec

REFERENCE_KEYS = [
    ({"model": "tiny-llama", "method": "magnitude", "sparsity": 0.5},
     "36d3ad6dc26e4a1b2619e5fce0e7a7c5ab58393fbd71bc5de5a5185d46e33fd6"),
    ({"model": "tiny-llama", "method": "wanda", "pattern": "2:4", "calibration": {"samples": 4, "seq_len": 32}},
     "94c65acd16fcfc0fee94c4f9800f1104b619aae92ba516d4b98fe8e63a5d381c"),
    ({"model": "tiny-llama", "method": "sparsegpt", "sparsity": 0.7, "allocation": "owl",
      "calibration": {"samples": 4, "seq_len": 32, "precision": "bfloat16"}},
     "5c37f038ac9c69d6f0b53237e655644fe8826dcc15eb72d7dbbd91409df79e02"),
    ({"model": "tiny-bert", "method": "dense", "data": "pydoc"},
     "4db42f720479b6df88bf65049ec6f8c3eae0da60917b244748e5ea0ed9bf0f38"),
    ({"model": "tiny-llama", "method": "dsnot", "sparsity": 0.6, "name": "x", "tags": ["a"]},
     "2c29e755795b764187e567420bbd9a7c01c1c94669a87da74ff4ad2fc51423d3"),
    ({"kind": "train", "model": "tiny-llama", "data": "shakespeare", "method": "sparse-finetune", "sparsity": 0.5,
      "steps": 3, "params": {"prune_method": "wanda", "distill": "squarehead"}},
     "1d49a3867d5c3c978d157eba1050964b32c378cfad0f8cc662814d6b85a5b104"),
    ({"kind": "train", "model": "tiny-llama", "data": "shakespeare", "method": "sr-ste", "pattern": "2:4", "steps": 4},
     "b7f9bdcf03d35b955f2da0b77495defe7ba12954cc6a857ca0ba40eb323605be"),
]


@pytest.mark.parametrize(("spec", "key"), REFERENCE_KEYS)
def test_reference_spec_keeps_its_key(spec, key):
    assert job_key(parse_spec(spec)) == key
