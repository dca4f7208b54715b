"""semi24-fastest: per token count, the member path that times faster multiplies; members that cannot run
a weight are left out of it. CPU stand-ins for the two GPU paths, with a given timer."""

import pytest
import torch
import torch.nn.functional as F

from workbench.kernels.backends import make_backend
from workbench.kernels.backends.base import PreparedWeight, TuneResult, copy_prepared, is_unsupported_error
from workbench.kernels.backends.dense import Dense
from workbench.kernels.backends.fastest import Semi24Fastest
from workbench.kernels.measure.environment import DeviceInfo


class Member(Dense):
    """A stand-in path: its own choice per token count, its own time per token count, calls recorded."""

    def __init__(self, name: str, us: dict[int, float], reason: str | None = None, refuse_shape: bool = False):
        super().__init__()
        self.name, self.us, self.reason, self.refuse_shape = name, us, reason, refuse_shape
        self.calls: list[int] = []

    def unsupported(self, device, dtype):
        return self.reason

    def prepare(self, weight, dtype):
        if self.refuse_shape:
            raise ValueError(f"a {tuple(weight.shape)} weight is unsupported by {self.name}")
        return super().prepare(weight, dtype)

    def tune(self, prepared, x):
        prepared.tuned[x.shape[0]] = f"{self.name} config {x.shape[0]}"
        return TuneResult({"config": prepared.tuned[x.shape[0]]}, 0.25, x.shape[0] > 100)

    def matmul(self, prepared, x):
        self.calls.append(x.shape[0])
        assert prepared.tuned.get(x.shape[0]) == f"{self.name} config {x.shape[0]}"  # its own search was kept
        return F.linear(x, prepared.data)


def _fastest(*members: Member) -> Semi24Fastest:
    return Semi24Fastest(members=members, timer=lambda member, weight, x: member.us[x.shape[0]] / 1e6)


def test_each_token_count_multiplies_with_the_member_that_timed_faster():
    torch.manual_seed(0)
    cuslt, cutlass = Member("cusparselt", {16: 30.0, 2048: 250.0}), Member("cutlass", {16: 20.0, 2048: 260.0})
    backend = _fastest(cuslt, cutlass)
    weight = torch.randn(64, 32)
    prepared = backend.prepare(weight, "fp32")
    assert set(prepared.data) == {"cusparselt", "cutlass"} and prepared.shape == (64, 32)
    for tokens, winner in ((16, "cutlass"), (2048, "cusparselt")):
        x = torch.randn(tokens, 32)
        tuned = backend.tune(prepared, x)
        assert tuned.config["backend"] == winner and prepared.tuned[tokens] == winner
        assert tuned.config["us"] == {"cusparselt": cuslt.us[tokens], "cutlass": cutlass.us[tokens]}
        assert tuned.config["cutlass"] == {"config": f"cutlass config {tokens}"}  # each member's own choice
        assert tuned.cached is (tokens > 100) and tuned.seconds >= 0
        cuslt.calls.clear(), cutlass.calls.clear()
        torch.testing.assert_close(backend.matmul(prepared, x), F.linear(x, weight))
        assert (cuslt.calls, cutlass.calls) == (([tokens], []) if winner == "cusparselt" else ([], [tokens]))


def test_a_member_that_cannot_run_is_left_out_and_none_is_an_unsupported_case():
    backend = _fastest(Member("cusparselt", {8: 1.0}), Member("cutlass", {8: 0.5}, reason="no library here"))
    prepared = backend.prepare(torch.randn(16, 16), "fp32")
    assert list(prepared.data) == ["cusparselt"]
    assert backend.tune(prepared, torch.randn(8, 16)).config["backend"] == "cusparselt"
    backend = _fastest(Member("cusparselt", {}, refuse_shape=True), Member("cutlass", {}, reason="no library here"))
    with pytest.raises(ValueError) as err:
        backend.prepare(torch.randn(16, 16), "fp32")
    assert is_unsupported_error(err.value) and "no library here" in str(err.value)  # a row, not a fault


class Broken(Member):
    def prepare(self, weight, dtype):
        raise ValueError("the compressor faulted")


def test_a_member_that_faults_is_not_taken_for_a_refusal():
    with pytest.raises(ValueError, match="faulted"):
        _fastest(Member("cusparselt", {}), Broken("cutlass", {})).prepare(torch.randn(4, 4), "fp32")


def test_the_harness_copies_share_each_members_choices():
    backend = _fastest(Member("cusparselt", {8: 2.0}), Member("cutlass", {8: 1.0}))
    first, second = (backend.prepare(torch.randn(16, 16), "fp32") for _ in range(2))
    x = torch.randn(8, 16)
    backend.tune(first, x)
    backend.share_choices(first, second)
    assert second.tuned[8] == "cutlass" and second.data["cutlass"].tuned[8] == "cutlass config 8"
    torch.testing.assert_close(backend.matmul(second, x), F.linear(x, second.data["cutlass"].data))


def test_a_copy_of_a_prepared_weight_is_new_memory_with_the_same_choices():
    values, meta = torch.randn(8), torch.randn(2)
    nested = PreparedWeight({"sm90": PreparedWeight([(values, meta), (values, meta)], 40, "bf16", (4, 4), {16: 1})},
                            40, "bf16", (4, 4), {16: "sm90"})
    copy = copy_prepared(nested)
    inner = copy.data["sm90"]
    assert copy.tuned == {16: "sm90"} and inner.tuned == {16: 1} and inner.tuned is not nested.data["sm90"].tuned
    assert inner.data[0][0].data_ptr() != values.data_ptr() and torch.equal(inner.data[0][0], values)
    assert inner.data[0][0] is inner.data[1][0]  # one compression shared by two configurations stays one


def test_the_backend_runs_where_either_member_does():
    backend = make_backend("semi24-fastest")
    assert set(backend.members) == {"semi24-tuned", "semi24-sm90"} and backend.token_multiple("bf16") == 8
    assert "cuda" in backend.unsupported(DeviceInfo("cpu", "x86"), "bf16")
    assert "no fp8" in backend.unsupported(DeviceInfo("cuda", "NVIDIA H200", (9, 0)), "fp8")
    # an A100: cuSPARSELt runs, the sm90 kernels do not: still a usable backend
    assert backend.unsupported(DeviceInfo("cuda", "NVIDIA A100", (8, 0)), "bf16") is None


def test_search_operands_are_copied_until_one_round_exceeds_the_l2_working_set():
    from workbench.kernels.backends.base import operands_beyond_l2
    from workbench.kernels.backends.tuning import SEARCH_ROTATE_BYTES

    weight = PreparedWeight(torch.zeros(2**20, dtype=torch.uint8), 2**20, "bf16", (1024, 1024), {16: "choice"})
    x = torch.zeros(16, 1024, dtype=torch.bfloat16)
    operands = operands_beyond_l2(weight, x)
    assert operands[0] == (weight, x) and len(operands) == 128  # 1 MB each: capped at 128 copies
    assert len({w.data.data_ptr() for w, _ in operands}) == 128 and all(w.tuned == {16: "choice"} for w, _ in operands)
    big = PreparedWeight(torch.zeros(1), SEARCH_ROTATE_BYTES // 4, "bf16", (1, 1))
    assert len(operands_beyond_l2(big, x)) == 4  # the fewest copies whose bytes (x included) pass it
