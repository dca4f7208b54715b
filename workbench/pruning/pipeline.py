"""The sequential calibration pipeline shared by every calibration-based method (Wanda, SparseGPT,
DSnoT, OWL).

It follows the layer-wise scheme of SparseGPT (Frantar and Alistarh, 2023, section 3) and Wanda (Sun et
al., 2023, section 3):

1. capture the inputs of the first transformer block for every calibration window;
2. for each block in order: run the still-dense block with hooks on its linear layers that stream
   statistics of their inputs (``InputStatistics``); prune the block's layers from those statistics;
   run the pruned block again, and its outputs become the next block's inputs.

Peak memory is the model, one block's activations for one batch of windows, the hidden states of all
windows at one depth (windows x tokens x hidden), and the statistics of one block: never the activations
of the whole model.

Layers that read the same tensor (q/k/v of attention, gate/up of a gated MLP) share one statistics object,
so that one Hessian serves three layers. The dense pass stops as soon as the block's last hooked layer has
seen its input, since its output is thrown away. Windows are run in batches (``tokens_per_batch``) and
stay on the device of the model.

A few held-out windows (not in the statistics) ride along: their inputs give each layer's relative output
error ``||WX - W'X|| / ||WX||`` (``recon_error`` in the layer stats).

The methods it runs subclass ``CalibratedMethod`` (``workbench/pruning/calibrated.py``).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import platform
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from workbench.errors import PruningError
from workbench.models.layers import transformer_blocks
from workbench.progress import Bar
from workbench.pruning.masks import pack_bits, unpack_bits
from workbench.pruning.registry import Needs, PruneOutcome


class InputStatistics:
    """Streaming statistics of one layer input, fed a batch of sequences at a time.

    ``sq_norm`` is the running mean over calibration sequences of each column's energy
    sum_t x_tj^2 (Wanda's ||X_j||^2 up to a constant); it is updated one sequence at a time, in float32,
    in the order the reference implementations use, so that the scores (and so the masks) agree bit for
    bit. ``hessian`` is the running mean H = (2/n) sum_i X_i^T X_i over the n sequences seen, in float32
    (SparseGPT eq. 2 with the factor 2 of the squared error). ``mean``/``var`` are per-column moments
    over all tokens (float64 sums). ``heldout`` keeps a subsample of held-out tokens for the
    reconstruction error.
    """

    def __init__(self, columns: int, needs: Needs, device: torch.device):
        self.columns = columns
        self.needs = needs
        self.sequences = 0
        self.sq_norm = torch.zeros(columns, dtype=torch.float32, device=device) if needs.sq_norm else None
        self.hessian = torch.zeros(columns, columns, dtype=torch.float32, device=device) if needs.hessian else None
        self._sum = torch.zeros(columns, dtype=torch.float64, device=device) if needs.moments else None
        self._sum_sq = torch.zeros(columns, dtype=torch.float64, device=device) if needs.moments else None
        self.tokens = 0
        self.heldout: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        """Add a batch of sequences, shape (batch, tokens, columns) or (tokens, columns)."""
        if x.dim() == 2:
            x = x.unsqueeze(0)
        x = x.reshape(x.shape[0], -1, self.columns)
        batch = x.shape[0]
        if self.sq_norm is not None:
            # one reduction over the tokens of every sequence; then the running mean, one sequence at a time
            column_norms = torch.linalg.vector_norm(x, dim=1, dtype=torch.float32)
            seen = self.sequences
            for column_norm in column_norms:
                self.sq_norm *= seen / (seen + 1)
                seen += 1
                self.sq_norm += column_norm**2 / seen
        if self.hessian is not None:
            flat = x.reshape(-1, self.columns)
            total = self.sequences + batch
            self.hessian *= self.sequences / total
            self.hessian.add_(gram(flat), alpha=2 / total)
        if self._sum is not None:
            flat = x.reshape(-1, self.columns).double()
            self._sum += flat.sum(0)
            self._sum_sq += (flat * flat).sum(0)
            self.tokens += flat.shape[0]
        self.sequences += batch

    def add_heldout(self, x: torch.Tensor, stride: int) -> None:
        """Keep every ``stride``-th held-out token (float32) for the reconstruction error."""
        flat = x.reshape(-1, self.columns)[::stride].float()
        self.heldout = flat if self.heldout is None else torch.cat([self.heldout, flat])

    @property
    def mean(self) -> torch.Tensor:
        return (self._sum / max(self.tokens, 1)).float()

    @property
    def var(self) -> torch.Tensor:
        mean = self._sum / max(self.tokens, 1)
        return (self._sum_sq / max(self.tokens, 1) - mean * mean).clamp_min(0).float()

    @property
    def norm(self) -> torch.Tensor:
        """Wanda's per-column activation norm, sqrt of ``sq_norm``."""
        return torch.sqrt(self.sq_norm)


def gram(x: torch.Tensor) -> torch.Tensor:
    """X^T X in float32. Half-precision inputs multiply on the tensor cores with float32 accumulation and
    a float32 result: products of two 16-bit values are exact in float32, so this equals upcasting first."""
    if x.is_cuda and x.dtype in (torch.bfloat16, torch.float16):
        try:
            return torch.mm(x.t(), x, out_dtype=torch.float32)
        except (TypeError, RuntimeError):  # a torch without mixed-precision mm: upcast instead
            pass
    x = x.float()
    return x.t() @ x


@dataclass
class LayerResult:
    """What a method decides for one layer: the mask (True = kept), the updated dense weight if the
    method changes weights (SparseGPT), and per-layer extras for the layer stats."""

    mask: torch.Tensor
    weight: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


# prune_group(layers that share one input, their statistics) -> results by layer name
GroupPruner = Callable[[dict[str, nn.Linear], InputStatistics], dict[str, LayerResult]]
# the statistics a method reads, the same for every layer or by layer name
LayerNeeds = Needs | Callable[[str], Needs]


@dataclass
class PipelineResult:
    results: dict[str, LayerResult]
    timings: dict[str, float]
    groups: list[list[str]]  # layers that shared one input (and one set of statistics)

    def outcome(self) -> PruneOutcome:
        """The job's view: masks, per-layer extras, and where the time went."""
        return PruneOutcome(masks={name: r.mask for name, r in self.results.items()},
                            layer_extras={name: r.extras for name, r in self.results.items()},
                            metrics={f"pipeline_{k}": v for k, v in self.timings.items()})


class _StopBlock(Exception):
    """Raised from a hook once the dense pass has seen every input it needs."""


class _Captured(Exception):
    """Raised from a block's pre-hook once the capture pass has what it needs."""


def _return_freed_memory(device: torch.device) -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise), so that the resident set of a
    long CPU run reflects what is in use: one block's temporaries at a time."""
    if device.type != "cpu" or platform.system() != "Linux":
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class _HostMasks:
    """Masks leave the accelerator while the next layers are computed.

    On a GPU each mask is packed to bits there, copied on a side stream and unpacked on the host by one
    worker thread: a pageable copy of one 7B-model layer's bool mask (45 MB) measured 33 ms on an H200 host,
    where Wanda's whole pruning step for the layer takes a few ms, and pinning a fresh buffer for it cost as
    much. On a CPU the mask is simply kept. ``collect`` waits for every copy.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="mask-to-host") if self.cuda else None
        self.masks: dict[str, torch.Tensor | Future] = {}

    def put(self, name: str, mask: torch.Tensor) -> None:
        if not self.cuda:
            self.masks[name] = mask.cpu()
            return
        packed = pack_bits(mask)
        ready = torch.cuda.Event()
        ready.record()
        self.masks[name] = self.pool.submit(self._copy, packed, ready, mask.shape)

    def _copy(self, packed: torch.Tensor, ready: torch.cuda.Event, shape: torch.Size) -> torch.Tensor:
        # ``packed`` stays referenced until its copy is done, so its memory cannot be reused before
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            self.stream.wait_event(ready)
            host = packed.cpu()  # waits in this thread only
        return unpack_bits(host, shape)

    def collect(self) -> dict[str, torch.Tensor]:
        return {name: mask.result() if isinstance(mask, Future) else mask for name, mask in self.masks.items()}

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def heldout_count(samples: int) -> int:
    """How many extra windows are held out for the reconstruction error (about 3%, 1 to 4)."""
    return max(1, min(4, samples // 32))


def _block_output(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _check_finite(tensor: torch.Tensor, where: str) -> None:
    if not torch.isfinite(tensor).all():
        raise PruningError(f"non-finite activations (NaN or Inf) {where}",
                           "check the model's weights and dtype (float16 overflows); try float32 or bfloat16")


def _check_statistics(stats: InputStatistics, layer: str) -> None:
    """A NaN in the statistics would make every score meaningless: refuse it with the layer's name."""
    for tensor in (stats.sq_norm, stats.hessian, stats._sum):
        if tensor is not None:
            _check_finite(tensor, f"reach {layer}")


def kwargs_sources(model: nn.Module, count: int) -> list[int]:
    """For each block, the block whose keyword arguments it takes: blocks of one ``config.layer_types``
    entry take the same attention mask and rotary embeddings (Gemma-3's sliding-window and global layers
    differ in both), and a model that does not name layer types passes the same to every block."""
    types = getattr(getattr(model, "config", None), "layer_types", None)
    if not types or len(types) != count:
        return [0] * count
    first: dict[str, int] = {}
    return [first.setdefault(kind, index) for index, kind in enumerate(types)]


class _BlockInputs:
    """Hidden states of every window at the current depth, and the keyword arguments the blocks take
    (attention mask, rotary embeddings...), captured once per batch size and layer type. The first batch of
    each size runs the dense blocks up to the first of the last layer type; the others stop at block 0."""

    def __init__(self, model: nn.Module, blocks: nn.ModuleList, windows: torch.Tensor, batches: list[slice],
                 device: torch.device):
        self.windows = len(windows)
        self.sources = kwargs_sources(model, len(blocks))
        self.kwargs: dict[int, dict[int, dict[str, Any]]] = {}  # batch size -> source block -> kwargs
        self.hidden: torch.Tensor | None = None
        use_cache = getattr(model.config, "use_cache", None)
        if use_cache is not None:
            model.config.use_cache = False  # a key/value cache would grow with every call
        try:
            for batch in batches:
                ids = windows[batch].to(device)
                seen = ids.shape[0] in self.kwargs
                captured = self.kwargs.setdefault(ids.shape[0], {})
                last = 0 if seen else max(self.sources)
                handles = [blocks[index].register_forward_pre_hook(self._capture(index, last, batch, captured),
                                                                   with_kwargs=True)
                           for index in sorted(set(self.sources)) if index <= last]
                try:
                    model(input_ids=ids)
                except _Captured:
                    pass
                else:
                    raise PruningError("the model never called its transformer blocks",
                                       "add a block locator for this architecture in workbench/models/layers.py")
                finally:
                    for handle in handles:
                        handle.remove()
        finally:
            if use_cache is not None:
                model.config.use_cache = use_cache
        _check_finite(self.hidden, "after the embeddings")

    def _capture(self, index: int, last: int, batch: slice, captured: dict[int, dict[str, Any]]) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            kwargs = dict(kwargs)
            hidden = args[0] if args else kwargs.pop("hidden_states")
            kwargs.pop("hidden_states", None)
            if index == 0:
                if self.hidden is None:
                    self.hidden = torch.empty((self.windows, *hidden.shape[1:]), dtype=hidden.dtype,
                                              device=hidden.device)
                self.hidden[batch] = hidden
            captured.setdefault(index, kwargs)
            if index == last:
                raise _Captured()
        return hook

    def run(self, index: int, block: nn.Module, batch: slice) -> torch.Tensor:
        hidden = self.hidden[batch]
        return _block_output(block(hidden, **self.kwargs[hidden.shape[0]][self.sources[index]]))


class _StatisticsHooks:
    """Forward pre-hooks on a block's layers: group layers by the tensor they read, stream statistics."""

    def __init__(self, layers: dict[str, nn.Linear], needs: LayerNeeds, device: torch.device, heldout_stride: int,
                 stop_early: bool):
        self.layers = layers
        self.stop_early = stop_early
        self.needs = needs
        self.device = device
        self.heldout_stride = heldout_stride
        self.leader: dict[str, str] = {}  # layer -> first layer that read the same tensor
        self.order: list[str] = []  # execution order, from the first batch
        self.stats: dict[str, InputStatistics] = {}
        self.heldout = False
        self.stop_after: str | None = None
        self._seen: list[tuple[torch.Tensor, str]] = []
        self._handles = [m.register_forward_pre_hook(self._hook(name)) for name, m in layers.items()]

    def _hook(self, name: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0]
            if name not in self.leader:
                self.order.append(name)
                self.leader[name] = next((leader for seen, leader in self._seen if seen is x), name)
            leader = self.leader[name]
            self._seen.append((x, leader))
            if leader == name:
                stats = self.stats.get(name)
                if stats is None:
                    # a group's statistics are made with what its first layer needs (siblings such as
                    # q/k/v or gate/up share one parent, and so one answer)
                    needs = self.needs(name) if callable(self.needs) else self.needs
                    stats = self.stats[name] = InputStatistics(x.shape[-1], needs, self.device)
                if self.heldout:
                    stats.add_heldout(x, self.heldout_stride)
                else:
                    stats.add(x)
            if name == self.stop_after:
                raise _StopBlock

        return hook

    def end_batch(self) -> None:
        self._seen.clear()  # references held only so that tensor identity is unambiguous within a batch
        if self.stop_early and len(self.order) == len(self.layers):
            self.stop_after = self.order[-1]

    def groups(self) -> list[list[str]]:
        groups: dict[str, list[str]] = {}
        for name in self.order:
            groups.setdefault(self.leader[name], []).append(name)
        return list(groups.values())

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def relative_output_error(dense: torch.Tensor, pruned: torch.Tensor, inputs: torch.Tensor) -> float:
    """||W X - W' X||_F / ||W X||_F over the given input tokens (rows of ``inputs``)."""
    dense = dense.float()
    reference = torch.linalg.matrix_norm(inputs @ dense.t())
    error = torch.linalg.matrix_norm(inputs @ (dense - pruned.float()).t())
    return float(error / reference) if reference > 0 else 0.0


def block_layers(model: nn.Module, layers: dict[str, nn.Module]) -> list[dict[str, nn.Linear]]:
    """The requested layers, split by transformer block; layers outside every block are refused."""
    _, blocks = transformer_blocks(model)
    owner = {id(module): index for index, block in enumerate(blocks) for module in block.modules()}
    per_block: list[dict[str, nn.Linear]] = [{} for _ in blocks]
    for name, module in layers.items():
        if id(module) not in owner or not isinstance(module, nn.Linear):
            raise PruningError(f"{name} is not a linear layer inside a transformer block, which calibration-based "
                               "methods need", "drop prune_embeddings / prune_head, or use magnitude for them")
        per_block[owner[id(module)]][name] = module
    return per_block


@torch.no_grad()
def run_pipeline(model: nn.Module, layers: dict[str, nn.Module], calibration: torch.Tensor, needs: LayerNeeds,
                 prune_group: GroupPruner, heldout: torch.Tensor | None = None, observe_only: bool = False,
                 tokens_per_batch: int | None = None, heldout_tokens: int = 512, progress: bool = False,
                 desc: str = "prune", precision: str = "model") -> PipelineResult:
    """Walk the blocks in order: statistics on the dense block, ``prune_group`` per input group, pruned
    weights written in place, outputs of the pruned block passed on.

    ``observe_only``: the callback only reads statistics (OWL); weights stay dense, so the dense pass's
    outputs are the next block's inputs and no second pass is run. ``tokens_per_batch``: tokens per
    forward pass (default: 2048 on a CPU, where larger batches add memory for little speed; 16384 on a GPU).
    ``precision``: "bfloat16" runs the blocks' forward passes under bfloat16 autocast (matrix products on
    AMX or tensor cores); the hooks still accumulate statistics in float32 and weights stay in their dtype.
    """
    if calibration is None or calibration.numel() == 0:
        raise PruningError("this method needs calibration windows and got none",
                           "set calibration.samples >= 1 (the job draws them from the corpus)")
    _, blocks = transformer_blocks(model)
    per_block = block_layers(model, layers)
    device = next(model.parameters()).device
    tokens_per_batch = tokens_per_batch or (16384 if device.type == "cuda" else 2048)
    windows = calibration if heldout is None or observe_only else torch.cat([calibration, heldout])
    seq_len = windows.shape[1]
    per_batch = max(1, tokens_per_batch // seq_len)
    samples = len(calibration)
    batches = [slice(start, min(start + per_batch, samples)) for start in range(0, samples, per_batch)]
    heldout_batches = [slice(start, min(start + per_batch, len(windows))) for start in range(samples, len(windows), per_batch)]
    heldout_stride = max(1, math.ceil((len(windows) - samples) * seq_len / heldout_tokens))

    walk = _Walk(device, _forward_precision(precision, device), batches, heldout_batches, samples, heldout_stride,
                 observe_only)
    _return_freed_memory(device)
    with walk.timed("capture_s"):
        walk.inputs = _BlockInputs(model, blocks, windows, batches + heldout_batches, device)

    host_masks = _HostMasks(device)
    try:
        extras: dict[str, dict[str, Any]] = {}
        all_groups: list[list[str]] = []
        for index in Bar(range(len(blocks)), desc=desc, unit="block", enabled=progress, leave=False):
            with walk.timed("statistics_s"):
                hooks = walk.statistics(blocks[index], per_block[index], needs, index)
            with walk.timed("prune_s"):
                all_groups += walk.prune(hooks, per_block[index], prune_group, host_masks, extras)
                del hooks  # the block's statistics (Hessians) go before the next forward passes
            with walk.timed("propagate_s"):
                walk.propagate(blocks[index], index, last=index == len(blocks) - 1)
        masks = host_masks.collect()
    finally:
        host_masks.close()
    results = {name: LayerResult(masks[name], None, extras[name]) for name in extras}
    return PipelineResult(results, walk.timings, all_groups)


@dataclass
class _Walk:
    """The three steps of one block (statistics, prune, propagate) over the windows at the current depth."""

    device: torch.device
    forward_precision: contextlib.AbstractContextManager
    batches: list[slice]
    heldout_batches: list[slice]
    samples: int
    heldout_stride: int
    observe_only: bool
    inputs: _BlockInputs | None = None
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("capture_s", "statistics_s", "prune_s", "propagate_s"), 0.0))

    @contextlib.contextmanager
    def timed(self, phase: str):
        started = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.current_stream().synchronize()  # not the side stream's mask copies
        self.timings[phase] += time.perf_counter() - started

    def statistics(self, block: nn.Module, layers: dict[str, nn.Linear], needs: LayerNeeds,
                   index: int) -> _StatisticsHooks:
        """The dense block over every window, its layers' inputs streamed into statistics (and, observing
        only, its outputs kept as the next block's inputs)."""
        hooks = _StatisticsHooks(layers, needs, self.device, self.heldout_stride, stop_early=not self.observe_only)
        try:
            for batch in self.batches + self.heldout_batches:
                hooks.heldout = batch.start >= self.samples
                try:
                    with self.forward_precision:
                        output = self.inputs.run(index, block, batch)
                    if self.observe_only:
                        self.inputs.hidden[batch] = output
                except _StopBlock:
                    pass
                hooks.end_batch()
        finally:
            hooks.remove()
        if layers and len(hooks.order) != len(layers):
            missing = sorted(set(layers) - set(hooks.order))
            raise PruningError(f"block {index} never called {missing[0]} during its forward pass",
                               "prune only layers that the model's forward pass uses")
        return hooks

    def prune(self, hooks: _StatisticsHooks, layers: dict[str, nn.Linear], prune_group: GroupPruner,
              host_masks: _HostMasks, extras: dict[str, dict[str, Any]]) -> list[list[str]]:
        """``prune_group`` per group of layers that read one input; new weights written in place."""
        groups = hooks.groups()
        for group in groups:
            stats = hooks.stats[group[0]]
            _check_statistics(stats, group[0])
            modules = {name: layers[name] for name in group}
            dense = {name: m.weight.detach().clone() for name, m in modules.items()} if not self.observe_only else {}
            for name, result in prune_group(modules, stats).items():
                module = modules[name]
                if result.weight is not None:
                    module.weight.copy_(result.weight.to(module.weight.dtype))
                module.weight.mul_(result.mask.to(module.weight.device))
                if stats.heldout is not None and not self.observe_only:
                    result.extras["recon_error"] = relative_output_error(dense[name], module.weight, stats.heldout)
                # the layer holds its new weights now; keep only the mask, off the accelerator
                host_masks.put(name, result.mask)
                extras[name] = result.extras
            del dense  # before the next group's copies are made
        return groups

    def propagate(self, block: nn.Module, index: int, last: bool) -> None:
        """The pruned block's outputs become the next block's inputs."""
        if not last:
            if not self.observe_only:
                for batch in self.batches + self.heldout_batches:
                    with self.forward_precision:
                        self.inputs.hidden[batch] = self.inputs.run(index, block, batch)
            _check_finite(self.inputs.hidden, f"after block {index}")
        _return_freed_memory(self.device)


def _forward_precision(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context the calibration forward passes run in (one object, re-entered for every batch)."""
    if precision == "model":
        return contextlib.nullcontext()
    if precision == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise PruningError(f"unknown calibration precision {precision!r}", "use calibration.precision: model or bfloat16")
