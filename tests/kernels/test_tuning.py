"""The cuSPARSELt configuration search's selection logic, with the library and the clock replaced."""

import pytest
import torch

from workbench.kernels.backends import tuning
from workbench.kernels.backends.tuning import AlgorithmCache
from workbench.kernels.backends.tuning import CusparseltAlgorithm as Alg


@pytest.fixture
def library(monkeypatch):
    """A fake library: its pick is id 2 with split-k 3 (transposed layout) or id 0 (plain); ids 0..4 exist."""
    picks = {True: (Alg(2, 3, 1, True), 4), False: (Alg(0, transpose_result=False), 4)}
    calls = []

    def choice(compressed, dense_t, out_dtype, transpose_result):
        calls.append(transpose_result)
        if transpose_result not in picks:
            raise RuntimeError("CUSPARSE_STATUS_NOT_SUPPORTED")
        return picks[transpose_result]

    monkeypatch.setattr(tuning, "library_choice", choice)
    return picks, calls


def test_candidates_are_the_library_pick_then_every_algorithm_id_once():
    pick = Alg(2, 3, 1, True)
    assert tuning.candidates(pick, 3) == [pick, Alg(0, transpose_result=True), Alg(1, transpose_result=True),
                                          Alg(2, transpose_result=True), Alg(3, transpose_result=True)]
    plain = Alg(1, transpose_result=False)
    assert tuning.candidates(plain, 2) == [plain, Alg(0), Alg(2)]  # the pick is not timed twice


def test_search_keeps_the_fastest_candidate_over_both_layouts(library):
    speeds = {Alg(3, transpose_result=False): 1.0, Alg(2, 3, 1, True): 2.0}
    timed = []

    def timer(algorithm):
        timed.append(algorithm)
        if algorithm == Alg(4, transpose_result=True):
            raise RuntimeError("CUSPARSE_STATUS_INVALID_VALUE")  # an id this problem rejects: skipped
        return speeds.get(algorithm, 5.0)

    best = tuning.search(None, None, None, (True, False), timer=timer)
    assert best == Alg(3, transpose_result=False)
    assert len(timed) == 6 + 5  # transposed: the pick + ids 0..4; plain: the pick is id 0, so ids 0..4


def test_search_prefers_the_library_pick_on_a_tie_and_skips_a_rejected_layout(library):
    picks, calls = library
    best = tuning.search(None, None, None, (True,), timer=lambda algorithm: 1.0)
    assert best == picks[True][0]
    assert tuning.search(None, None, None, ("unknown", False), timer=lambda a: 1.0) == picks[False][0]
    assert "unknown" in calls  # asked, refused, skipped


def test_search_without_any_working_candidate_raises(library):
    def timer(algorithm):
        raise RuntimeError("CUSPARSE_STATUS_NOT_SUPPORTED")

    with pytest.raises(RuntimeError, match="no cuSPARSELt algorithm ran"):
        tuning.search(None, None, None, (True, False), timer=timer)


def test_a_cached_choice_is_not_searched_again(tmp_path, monkeypatch):
    searched = []

    def search(compressed, dense_t, out_dtype, transposes):
        searched.append(transposes)
        return Alg(7, transpose_result=True)

    monkeypatch.setattr(tuning, "search", search)
    cache = AlgorithmCache(tmp_path / "choices.json")
    key = tuning.cache_key("gpu|torch", 4096, 4096, 2048, "bf16", (True, False))
    weight = torch.zeros(4)
    first = tuning.search_cached(cache, key, weight, weight, None, (True, False))
    again = tuning.search_cached(AlgorithmCache(tmp_path / "choices.json"), key, weight, weight, None, (True, False))
    assert first[0] == again[0] == Alg(7, transpose_result=True)
    assert (first[2], again[2]) == (False, True) and again[1] == 0.0 and len(searched) == 1
    # the key names the search method, the problem and the layouts searched
    assert key.startswith(f"v{tuning.SEARCH_VERSION}|") and key.endswith("|bf16|TN")
    assert key != tuning.cache_key("gpu|torch", 4096, 4096, 2048, "bf16", (False,))


def test_rotated_operands_exceed_the_working_set_and_keep_the_layout():
    weight = torch.randn(64, 32)
    rhs = torch.randn(16, 32).t()  # a transposed view, as the tuned backend passes its input
    operands = tuning.rotated_operands(weight, rhs, rotate_bytes=5 * (weight.nbytes + rhs.nbytes))
    assert len(operands) == 5 and operands[0][0] is weight
    assert len({w.data_ptr() for w, _ in operands}) == 5  # distinct memory, not five names for one tensor
    for copy_weight, copy_rhs in operands:
        assert torch.equal(copy_weight, weight) and torch.equal(copy_rhs, rhs) and copy_rhs.stride() == rhs.stride()


def test_tuned_backend_falls_back_to_the_plain_layout_only_when_every_asked_layout_is_refused(monkeypatch):
    from workbench.kernels.backends import cusparselt
    from workbench.kernels.backends.base import PreparedWeight
    from workbench.kernels.backends.cusparselt import Semi24Tuned
    from workbench.kernels.measure import environment

    asked, refused = [], {(True,)}  # a library without the fused transposed result for this dtype

    def search_cached(cache, key, compressed, dense_t, out_dtype, transposes):
        asked.append(transposes)
        if transposes in refused:
            raise RuntimeError("no algorithm")
        return Alg(alg_id=1, transpose_result=transposes[0]), 0.5, False

    monkeypatch.setattr(cusparselt, "search_cached", search_cached)
    monkeypatch.setattr(environment, "device_identity", lambda kind: "a GPU")
    backend = Semi24Tuned(cache=AlgorithmCache())
    x = torch.zeros(16, 32)
    for dtype, expected_tries, transposed in (("fp8", [(True,), (False,)], False), ("bf16", [(True, False)], True)):
        asked.clear()
        prepared = PreparedWeight(torch.zeros(1), 0, dtype, (64, 32))
        tuned = backend.tune(prepared, x)
        assert asked == expected_tries and prepared.tuned[16].transpose_result is transposed
        assert tuned.config["transpose_result"] is transposed
    asked.clear()
    refused.add((False,))
    with pytest.raises(RuntimeError, match="no algorithm"):  # fp16 asks for the plain layout alone
        backend.tune(PreparedWeight(torch.zeros(1), 0, "fp16", (64, 32)), x)
    assert asked == [(False,)]  # searched once, not again as the fallback
