"""SparseGPT (Frantar and Alistarh, 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned
in One-Shot"), Algorithm 1.

Per linear layer, with H = (2/n) sum_i X_i^T X_i over the calibration sequences (streamed by the pipeline):

- dead inputs (H_jj == 0) get H_jj = 1 and their weight column is zeroed;
- damping: H += dampening * mean(diag H) * I; when a Cholesky factorisation still fails, the damping is
  raised tenfold and the increase is recorded (``damping``, ``damping_steps`` in the layer stats);
- U = the upper Cholesky factor of H^-1 (section 3.3: its rows are the inverse Hessians of the
  successively shrinking column sets), computed without forming H^-1: with J the order-reversing
  permutation and J H J = L L^T, H^-1 = (J L^-T J)(J L^-1 J) and J L^-1 J is upper triangular, so
  U = J L^-1 J (one Cholesky and one triangular inverse instead of two factorisations and an inverse);
- columns are processed in blocks of ``blocksize`` (the lazy batch of section 3.4), which are also the
  mask-selection group: unstructured prunes, inside a block, the weights with the smallest
  w^2 / U_ii^2 over all rows x the block's columns (so per-block sparsity is exact); N:M picks at every
  M-th column, per row, the N weights to keep among the next M by the same score, on the weights as
  already updated;
- each column i: err = (w - q) / U_ii with q = w with the pruned entries zeroed; the later columns of the
  block get -err * U[i, i+1:]; (w - q)^2 / U_ii^2 / 2 adds to the predicted loss (eq. 3);
- after a block, its errors reach every later column in one matrix product.

Two implementation choices that do not change the algorithm: layers that read the same input (q/k/v,
gate/up) share H, so their rows are stacked and processed together (rows are independent given H and
the mask; the mask is still chosen per layer); and the column loop inside a block is itself batched in
sub-blocks of ``SUB_BLOCK`` columns, so that the rank-1 updates touch only a narrow strip and the rest of
the block is updated by one matrix product per sub-block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from workbench.errors import PruningError
from workbench.pruning.calibrated import CalibratedMethod
from workbench.pruning.registry import Needs, PruneContext
from workbench.values import Pattern

if TYPE_CHECKING:
    import torch
    from torch import nn

    from workbench.pruning.pipeline import GroupPruner, InputStatistics, LayerResult

SUB_BLOCK = 16
MAX_DAMPING_STEPS = 6  # dampening x 10 each time: 0.01 -> 1e4 times the mean diagonal


class SparseGPTParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    blocksize: int = Field(128, ge=1, le=65536, description="columns per lazy-update and mask-selection block")
    dampening: float = Field(0.01, gt=0, le=10, description="diagonal damping as a fraction of mean(diag H)")


class InverseHessianFactor:
    """U (upper Cholesky factor of the damped H^-1) with a record of what it took to get it."""

    def __init__(self, hessian: torch.Tensor, dampening: float):
        import torch

        H = hessian.clone()
        self.dead = torch.diag(H) == 0
        H[self.dead, self.dead] = 1
        diagonal = torch.arange(H.shape[0], device=H.device)
        mean_diag = torch.mean(torch.diag(H))
        self.damping = dampening
        for step in range(MAX_DAMPING_STEPS + 1):
            damped = H.clone()
            damped[diagonal, diagonal] += self.damping * mean_diag
            lower, info = torch.linalg.cholesky_ex(damped.flip(0, 1))
            if int(info) == 0:
                identity = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
                upper = torch.linalg.solve_triangular(lower, identity, upper=False).flip(0, 1)
                if bool(torch.isfinite(upper).all()):
                    self.upper, self.steps = upper, step
                    return
            self.damping *= 10
        raise PruningError(f"the Hessian stays singular even with damping {self.damping / 10:g} x mean(diag H)",
                           "check the calibration activations for NaN/Inf, or use more calibration windows")


def _prune_columns(block: torch.Tensor, Ub: torch.Tensor, pattern: Pattern, segments: list[tuple[int, int, float]],
                   sub_block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1's loop over the columns of one block, in place on ``block`` (transposed: columns x rows,
    so that each column is one contiguous vector). Returns (keep mask, errors), both columns x rows."""
    import torch

    from workbench.pruning.masks import topk_mask

    count = block.shape[0]
    d = torch.diag(Ub).unsqueeze(1)
    if pattern.is_nm:
        keep = torch.zeros_like(block, dtype=torch.bool)
        scale = torch.zeros_like(block)
    else:
        scores = (block / d) ** 2
        keep = torch.empty_like(block, dtype=torch.bool)
        for start, end, sparsity in segments:
            keep[:, start:end] = topk_mask(scores[:, start:end], sparsity)
        scale = (~keep) / d  # err_i = w_i * pruned / U_ii
    errors = torch.empty_like(block)
    for j1 in range(0, count, sub_block):
        j2 = min(j1 + sub_block, count)
        for i in range(j1, j2):
            if pattern.is_nm and i % pattern.group == 0:
                group = slice(i, i + pattern.group)
                chosen = _nm_choice(((block[group] / d[group]) ** 2).t(), pattern, segments).t()
                keep[group] = chosen
                scale[group] = (~chosen) / d[group]
            torch.mul(block[i], scale[i], out=errors[i])
            if i + 1 < j2:
                block[i + 1 : j2].addr_(Ub[i, i + 1 : j2], errors[i], alpha=-1)
        if j2 < count:
            block[j2:].addmm_(Ub[j1:j2, j2:].t(), errors[j1:j2], alpha=-1)
    return keep, errors


def _nm_choice(scores: torch.Tensor, pattern: Pattern, segments: list[tuple[int, int, float]]) -> torch.Tensor:
    """N:M keep mask of one group of columns (rows x M): each stacked layer keeps ``nm_kept`` of its target
    (the pattern's N, unless a searched allocation gives the layer its own)."""
    import torch

    from workbench.pruning.masks import nm_kept, nm_prune_mask

    kept = [nm_kept(pattern, sparsity) for _, _, sparsity in segments]
    if len(set(kept)) == 1:
        return nm_prune_mask(scores, kept[0], pattern.group)
    return torch.cat([nm_prune_mask(scores[start:end], keep, pattern.group)
                      for (start, end, _), keep in zip(segments, kept)])


class _CapturedColumns:
    """``_prune_columns`` for one block shape, captured once as a CUDA graph and replayed per block.

    The loop launches two small kernels per column and about ten per N:M group; on a GPU the Python
    and launch overhead of those dwarfs their arithmetic (a 12288 x 4096 q/k/v group: 191 ms eager, 51 ms
    replayed; 2:4: 350 ms, 91 ms on an H200). Replaying runs the same operations on the same values with one
    launch; masks and weights measured equal bit for bit on 7B shapes (cuBLAS may choose other algorithms
    for a captured product, so the last float32 bits are not guaranteed).
    """

    def __init__(self, count: int, rows: int, pattern: Pattern, segments: list[tuple[int, int, float]],
                 sub_block: int, device: torch.device):
        import torch

        self.block = torch.zeros(count, rows, dtype=torch.float32, device=device)
        self.Ub = torch.eye(count, dtype=torch.float32, device=device)  # warm-up values, overwritten per replay
        with torch.cuda.device(device):  # capture on the weight's GPU, whichever is current
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):  # the first call (allocations, kernel selection) stays out of the graph
                _prune_columns(self.block, self.Ub, pattern, segments, sub_block)
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.keep, self.errors = _prune_columns(self.block, self.Ub, pattern, segments, sub_block)

    def __call__(self, block: torch.Tensor, Ub: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        import torch

        self.block.copy_(block)
        self.Ub.copy_(Ub)
        with torch.cuda.device(self.block.device):
            self.graph.replay()
        return self.block, self.keep, self.errors


def sparsegpt_prune(weight: torch.Tensor, upper: torch.Tensor, segments: list[tuple[int, int, float]],
                    pattern: Pattern, blocksize: int = 128,
                    graphs: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Algorithm 1 on a float32 copy of ``weight`` (rows x columns).

    ``segments`` are (first row, end row, sparsity) of the layers stacked in ``weight``; unstructured
    masks are selected per segment. ``graphs``: replay each block's column loop as a CUDA graph
    (default: on a CUDA device). Returns (updated weight with pruned entries zeroed, keep mask,
    predicted loss per row).
    """
    import torch

    W = weight.float().clone()
    rows, columns = W.shape
    if pattern.is_nm and (blocksize % pattern.group or columns % pattern.group):
        raise PruningError(f"SparseGPT's blocksize {blocksize} and width {columns} must be multiples of M={pattern.group}",
                           f"set params.blocksize to a multiple of {pattern.group}")
    sub_block = SUB_BLOCK if not pattern.is_nm else pattern.group * max(1, SUB_BLOCK // pattern.group)
    graphs = W.is_cuda if graphs is None else graphs
    captured: dict[int, _CapturedColumns] = {}  # by block width (the last block may be narrower)
    mask = torch.ones_like(W, dtype=torch.bool)
    losses = torch.zeros(rows, dtype=torch.float32, device=W.device)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        Ub = upper[i1:i2, i1:i2]
        if graphs:
            if count not in captured:
                captured[count] = _CapturedColumns(count, rows, pattern, segments, sub_block, W.device)
            block, keep, errors = captured[count](W[:, i1:i2].t(), Ub)
        else:
            block = W[:, i1:i2].t().contiguous()
            keep, errors = _prune_columns(block, Ub, pattern, segments, sub_block)
        W[:, i1:i2] = (block * keep).t()
        mask[:, i1:i2] = keep.t()
        losses += (errors**2).sum(0) / 2
        if i2 < columns:
            W[:, i2:].addmm_(errors.t(), upper[i1:i2, i2:], alpha=-1)
    return W, mask, losses


def sparsegpt_pruner(targets: dict[str, float], pattern: Pattern, blocksize: int, dampening: float) -> GroupPruner:
    import torch

    from workbench.pruning.pipeline import LayerResult

    def prune(modules: dict[str, nn.Linear], stats: InputStatistics) -> dict[str, LayerResult]:
        factor = InverseHessianFactor(stats.hessian, dampening)
        stacked = torch.cat([m.weight.detach().float() for m in modules.values()])
        stacked[:, factor.dead] = 0
        segments, start = [], 0
        for name, module in modules.items():
            segments.append((start, start + module.weight.shape[0], targets[name]))
            start += module.weight.shape[0]
        weight, mask, losses = sparsegpt_prune(stacked, factor.upper, segments, pattern, blocksize)
        extras = {"damping": factor.damping}
        if factor.steps:
            extras["damping_steps"] = factor.steps
        if int(factor.dead.sum()):
            extras["dead_inputs"] = int(factor.dead.sum())
        results = {}
        for (name, _), (begin, end, _) in zip(modules.items(), segments):
            layer_mask = mask[begin:end]
            layer_extras = {**extras, "predicted_loss": float(losses[begin:end].sum())}
            empty_rows = int((~layer_mask).all(1).sum())
            if empty_rows:  # the comparison group spans all rows, so at extreme sparsity a row can empty
                layer_extras["empty_rows"] = empty_rows
            results[name] = LayerResult(layer_mask, weight[begin:end], layer_extras)
        return results

    return prune


class SparseGPT(CalibratedMethod):
    name = "sparsegpt"
    version = "1"
    Params = SparseGPTParams
    needs = Needs(hessian=True)

    def pruner(self, context: PruneContext) -> GroupPruner:
        return sparsegpt_pruner(context.targets, context.pattern, context.params.blocksize, context.params.dampening)


METHOD = SparseGPT()
