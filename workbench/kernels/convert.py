"""Put a model's pruned linear layers into a sparse format, behind the kernel backends.

``SparseLinear`` replaces an ``nn.Linear``: its pruned weight is prepared once by a backend of
``backends/`` and every forward multiplies through that backend, so a model's latency and a
kernel's figure come from the same code. Masks come from a pruning run in the store (the run the
latency is linked to) or, for random-weight models, from the backend's own pattern.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from workbench.errors import WorkbenchError
from workbench.kernels.backends import make_backend
from workbench.kernels.backends.base import Backend
from workbench.kernels.backends.formats import SEMI24_GROUP, SEMI24_KEEP, pattern_mask
from workbench.kernels.measure.environment import DTYPES
from workbench.models.layers import prunable_layers
from workbench.pruning.masks import nm_weight_valid


class ConversionError(WorkbenchError):
    """Masks that do not fit the model or the chosen sparse format."""


class SparseLinear(nn.Module):
    """``y = x W^T + b`` with W held by a backend in its sparse format."""

    def __init__(self, backend: Backend, weight: torch.Tensor, bias: torch.Tensor | None, dtype: str):
        super().__init__()
        self.backend, self.dtype = backend, dtype
        self.out_features, self.in_features = weight.shape
        self.prepared = backend.prepare(weight, dtype)
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        self.search_s = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        rows = x.reshape(-1, self.in_features)
        tokens = rows.shape[0]
        padded = self.backend.padded_tokens(tokens, self.dtype)
        if padded != tokens:
            rows = F.pad(rows, (0, 0, 0, padded - tokens))
        if padded not in self.prepared.tuned:
            tuned = self.backend.tune(self.prepared, rows)  # searched once per token count, before capture
            self.search_s += tuned.seconds if tuned is not None else 0.0
        y = self.backend.matmul(self.prepared, rows)[:tokens]
        if self.bias is not None:
            y = y + self.bias
        # attention reshapes q/k/v with .view: a transposed result must become contiguous (a real cost)
        return y.contiguous().reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, {self.backend.name}, {self.prepared.nbytes} bytes"


class SharedInput(nn.Module):
    """Layers that read one tensor (q/k/v, gate/up) computed as one matmul over their stacked weights.

    The first member called with an input computes every member's output; the others slice it. Larger
    matmuls run closer to the GPU's peak, for dense and 2:4 kernels alike.
    """

    def __init__(self, fused: nn.Module, members: int):
        super().__init__()
        self.fused, self.members = fused, members
        self._input: torch.Tensor | None = None
        self._output: torch.Tensor | None = None
        self._reads = 0

    def output_for(self, x: torch.Tensor) -> torch.Tensor:
        if x is not self._input:  # a new forward pass (the held reference keeps identity unambiguous)
            self._input, self._output, self._reads = x, self.fused(x), 0
        output = self._output
        self._reads += 1
        if self._reads == self.members:  # every member has its slice: hold no activations between passes
            self._input = self._output = None
        return output


class SharedInputSlice(nn.Module):
    """One member of a ``SharedInput``: its columns of the stacked output."""

    def __init__(self, group: SharedInput, start: int, end: int):
        super().__init__()
        self.group, self.start, self.end = group, start, end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.group.output_for(x)[..., self.start : self.end]


def shared_input_groups(model: nn.Module, layers: dict[str, nn.Linear]) -> list[list[str]]:
    """The layers grouped by the tensor they read, found in one forward pass over four tokens."""
    seen: list[tuple[torch.Tensor, list[str]]] = []

    def hook(name: str):
        def record(module: nn.Module, args: tuple) -> None:
            for tensor, names in seen:
                if tensor is args[0]:
                    names.append(name)
                    return
            seen.append((args[0], [name]))
        return record

    handles = [layer.register_forward_pre_hook(hook(name)) for name, layer in layers.items()]
    try:
        with torch.no_grad():
            model(input_ids=torch.zeros((1, 4), dtype=torch.long, device=next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    groups = [names for _, names in seen]
    missing = set(layers) - {name for names in groups for name in names}
    return groups + [[name] for name in layers if name in missing]


@dataclass
class ConversionReport:
    layers: int = 0
    seconds: float = 0.0
    dense_bytes: int = 0
    sparse_bytes: int = 0
    sparsity: float = 0.0
    from_run: bool = False


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def convert_model(model: nn.Module, backend_name: str, dtype: str, masks: dict[str, torch.Tensor] | None = None,
                  sparsity: float = 0.9, block: int = 64, seed: int = 0, fuse: bool = False) -> ConversionReport:
    """Replace the prunable linear layers by ``SparseLinear``s of ``backend_name`` (in place); with
    ``fuse``, layers that read one tensor become one ``SharedInput`` matmul (the dense backend too)."""
    report = ConversionReport(from_run=masks is not None)
    if backend_name == "dense" and not fuse:
        return report
    backend = make_backend(backend_name, block=block)
    layers = prunable_layers(model)
    if masks is not None:
        missing = sorted(set(layers) - set(masks))
        if missing:
            raise ConversionError(f"the masks lack {len(missing)} of the model's layers (first: {missing[0]})",
                                  "take masks from a pruning run of this model")
    groups = shared_input_groups(model, layers) if fuse else [[name] for name in layers]
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    kept = total = 0
    started = time.perf_counter()
    with torch.no_grad():
        for group in groups:
            pruned_weights = []
            for name in group:
                weight = layers[name].weight
                mask = masks[name].to(weight.device) if masks is not None else \
                    pattern_mask(weight, backend.pattern, sparsity, block, generator)
                if mask is None:
                    mask = torch.ones_like(weight, dtype=torch.bool)  # a dense backend, fused
                if mask.shape != weight.shape:
                    raise ConversionError(f"the mask of {name} is {tuple(mask.shape)}, the weight {tuple(weight.shape)}",
                                          "take masks from a pruning run of this model")
                pruned = (weight * mask).to(DTYPES[dtype])
                if backend.pattern == "2:4" and not nm_weight_valid(pruned, SEMI24_KEEP, SEMI24_GROUP):
                    raise ConversionError(f"layer {name} is not 2:4 sparse, which {backend_name} needs",
                                          "use masks from a run pruned with pattern 2:4, or a bsr/csr backend")
                kept += int(mask.sum())
                total += mask.numel()
                report.dense_bytes += weight.numel() * pruned.element_size()
                pruned_weights.append(pruned)
            sparse = SparseLinear(backend, torch.cat(pruned_weights), _stacked_bias([layers[n] for n in group]), dtype)
            report.sparse_bytes += sparse.prepared.nbytes
            if len(group) == 1:
                _set_module(model, group[0], sparse)
            else:
                shared, start = SharedInput(sparse, len(group)), 0
                for name, weight in zip(group, pruned_weights):
                    _set_module(model, name, SharedInputSlice(shared, start, start + weight.shape[0]))
                    start += weight.shape[0]
            report.layers += len(group)
    if next(model.parameters()).is_cuda:
        torch.cuda.synchronize()
    report.seconds = time.perf_counter() - started
    report.sparsity = 1 - kept / total if total else 0.0
    return report


def _stacked_bias(members: list[nn.Linear]) -> torch.Tensor | None:
    if all(m.bias is None for m in members):
        return None
    return torch.cat([m.bias if m.bias is not None else torch.zeros(m.out_features, dtype=m.weight.dtype,
                                                                    device=m.weight.device) for m in members])


def search_seconds(model: nn.Module) -> float:
    return sum(m.search_s for m in model.modules() if isinstance(m, SparseLinear))
