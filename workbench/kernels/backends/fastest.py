"""The faster of the tuned 2:4 paths (cuSPARSELt, CUTLASS sm90), chosen per weight and token count."""

from __future__ import annotations

import math
import time
from functools import partial
from typing import Callable

import torch

from workbench.kernels.backends import make_backend
from workbench.kernels.backends.base import Backend, PreparedWeight, TuneResult, is_unsupported_error, operands_beyond_l2
from workbench.kernels.backends.tuning import replay_seconds
from workbench.kernels.measure.environment import DeviceInfo


class Semi24Fastest(Backend):
    """The faster of the tuned 2:4 paths, chosen per weight and token count: each member (``semi24-tuned``,
    ``semi24-sm90``) searches its own configuration, then their choices are timed against each other the
    same way (graph replay over copies beyond the L2) and the faster one multiplies. Neither path wins
    everywhere on a Hopper GPU (cuSPARSELt in bf16 prefill, CUTLASS in fp16 prefill and bf16 decode,
    cuSPARSELt in fp16 decode), so a model converted with it gets each layer's faster one. A member that
    cannot run here (no sm90 library, not a Hopper GPU, a shape it refuses) is left out of that weight."""

    name = "semi24-fastest"
    pattern = "2:4"
    dtypes = {"cuda": frozenset({"bf16", "fp16"})}
    searches_configuration = True
    MEMBERS = ("semi24-tuned", "semi24-sm90")

    def __init__(self, block: int = 64, members: tuple[Backend, ...] | None = None,
                 timer: Callable[[Backend, PreparedWeight, torch.Tensor], float] | None = None):
        super().__init__(block)
        self.members = {member.name: member for member in (members or [make_backend(n, block) for n in self.MEMBERS])}
        self._timer = timer or _replay_seconds_beyond_l2

    def unsupported(self, device: DeviceInfo, dtype: str) -> str | None:
        reason = super().unsupported(device, dtype)
        if reason is None:
            reasons = [member.unsupported(device, dtype) for member in self.members.values()]
            if all(reasons):
                reason = "; ".join(reasons)
        return reason

    def token_multiple(self, dtype: str) -> int:
        return math.lcm(*(member.token_multiple(dtype) for member in self.members.values()))

    def math_fraction(self, density: float) -> float:
        return 0.5

    def prepare(self, weight: torch.Tensor, dtype: str) -> PreparedWeight:
        """``data``: each usable member's own prepared weight, by name."""
        from workbench.kernels.measure.environment import device_info

        device = device_info(weight.device.type)
        data, refused = {}, {}
        for name, member in self.members.items():
            reason = member.unsupported(device, dtype)
            if reason is None:
                try:
                    data[name] = member.prepare(weight, dtype)
                except ValueError as err:  # a shape this member cannot tile
                    if not is_unsupported_error(err):
                        raise
                    reason = str(err)
            if reason is not None:
                refused[name] = reason
        if not data:
            raise ValueError(f"semi24-fastest is unsupported for this weight: {refused}")
        first = next(iter(data.values()))
        return PreparedWeight(data, first.nbytes, dtype, first.shape)

    def tune(self, prepared: PreparedWeight, x: torch.Tensor) -> TuneResult:
        started = time.perf_counter()
        us, configs, cached = {}, {}, True
        for name, member_weight in prepared.data.items():
            member = self.members[name]
            tuned = member.tune(member_weight, x)
            if tuned is not None:
                configs[name], cached = tuned.config, cached and tuned.cached
            us[name] = round(self._timer(member, member_weight, x) * 1e6, 2)
        best = min(us, key=us.__getitem__)
        prepared.tuned[x.shape[0]] = best
        return TuneResult({"backend": best, "us": us, **configs}, time.perf_counter() - started, cached)

    def share_choices(self, tuned: PreparedWeight, other: PreparedWeight) -> None:
        super().share_choices(tuned, other)
        for name, member in self.members.items():
            if name in tuned.data and name in other.data:
                member.share_choices(tuned.data[name], other.data[name])

    def matmul(self, prepared: PreparedWeight, x: torch.Tensor) -> torch.Tensor:
        name = prepared.tuned.get(x.shape[0]) or next(iter(prepared.data))
        return self.members[name].matmul(prepared.data[name], x)


def _replay_seconds_beyond_l2(backend: Backend, prepared: PreparedWeight, x: torch.Tensor) -> float:
    """Seconds per call of ``backend``'s tuned product, replayed in a CUDA graph over copies of the operands
    beyond the L2, as the searches time their candidates."""
    return replay_seconds([partial(backend.matmul, weight, rhs) for weight, rhs in operands_beyond_l2(prepared, x)])
