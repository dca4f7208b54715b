"""The bench job: ceilings, then each backend's cases in a worker process of its own, then rows.

``prepare`` checks what the job needs (a GPU when it asks for one, the masks of the pruning run it
names) before the run is registered. ``execute`` measures the machine's ceilings, runs every
(dtype, backend) or latency variant in isolation, and turns the workers' records into
kernel_results rows with every methodology field (README, "Kernel benchmarks"): median, quartiles
and minimum, dense-equivalent TFLOP/s, bytes moved and GB/s, the roofline floor and the fraction of
it reached, the speedup over the dense baseline timed alternately in the same process, the relative
error against fp32, and the environment. One-time costs (first call, conversion, search) are rows of
their own phase, ``setup``.

A spec's ``timing.time_budget_s`` bounds the job: cases that would start after it are ``skipped`` rows,
and such a run carries the metric ``incomplete`` (``workbench.records.INCOMPLETE``), so that the
runner runs its key again instead of serving a cut-short run as a complete one.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from workbench.jobs import JobContext
from workbench.kernels.backends import make_backend
from workbench.kernels.latency import SHRUNK
from workbench.kernels.measure.ceilings import roofline_us
from workbench.kernels.measure.environment import device_info
from workbench.kernels.measure.harness import CaseSettings
from workbench.kernels.measure.isolation import run_isolated
from workbench.kernels.measure.stats import summarize
from workbench.kernels.report.selection import headline_metrics, mark_best
from workbench.kernels.spec import BenchError, BenchSpec, parse_shape
from workbench.progress import Bar
from workbench.records import INCOMPLETE, JobOutput, Metric
from workbench.store import Store


@dataclass
class PreparedBench:
    spec: BenchSpec
    masks_run: str | None = None
    masks: dict[str, torch.Tensor] | None = None


def prepare(spec: BenchSpec, job: JobContext | None = None) -> PreparedBench:
    if spec.device == "cuda" and not torch.cuda.is_available():
        raise BenchError("this spec asks for a CUDA GPU and there is none here", "run it on a GPU host, or use --device cpu")
    prepared = PreparedBench(spec)
    if spec.target == "latency" and spec.latency.masks_key:
        from workbench import queries

        store = (job and job.store) or Store()
        found = store.finished_run(spec.latency.masks_key)
        if found is None:
            raise BenchError(f"no finished pruning run with key {spec.latency.masks_key[:12]} in {store.path}",
                             "run the pruning job first, or drop --masks-run")
        prepared.masks_run = found["run_id"]
        prepared.masks = queries.load_masks(store, found["run_id"])
    if spec.target == "latency" and not spec.latency.random_weights:
        from workbench.models import check_model

        check_model(spec.latency.model)
    return prepared


def _deadline(spec: BenchSpec) -> float | None:
    """Epoch seconds after which cases are left out: the spec's time budget from now."""
    budget = spec.timing.time_budget_s
    return None if budget is None else time.time() + budget


class _Context:
    """What every row of a run shares: device label, versions and the measured ceilings."""

    def __init__(self, device: str):
        self.device = device
        self.versions: dict[str, Any] = {}
        self.copy_gbps: float | None = None
        self.matmul_tflops: dict[str, float] = {}
        self.rows: list[dict[str, Any]] = []

    def absorb_device(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Take the device record a worker wrote first; the other records are returned."""
        for record in records:
            if record.get("kind") == "device":
                self.device, self.versions = record["label"], record["versions"]
        return [r for r in records if r.get("kind") != "device"]

    def absorb_ceilings(self, records: list[dict[str, Any]], timing: str) -> None:
        for record in self.absorb_device(records):
            ceiling = record.get("ceiling")
            if record.get("status") != "ok" or ceiling is None:
                self.rows.append(self.row(phase="ceiling", case_id=record.get("case_id"), status=record.get("status"),
                                          error=record.get("error")))
                continue
            stats = summarize(ceiling["samples_us"])
            row = self.row(phase="ceiling", case_id=record["case_id"], backend=ceiling["what"], dtype=ceiling["dtype"],
                           timing=timing, status="ok", **_stat_columns(stats))
            if ceiling["what"] == "copy":
                self.copy_gbps = ceiling["bytes_moved"] / stats.median_us / 1e3
                row.update(bytes_moved=ceiling["bytes_moved"], gbps=self.copy_gbps)
            else:
                self.matmul_tflops[ceiling["dtype"]] = ceiling["flops"] / stats.median_us / 1e6
                row.update(tflops=self.matmul_tflops[ceiling["dtype"]])
            self.rows.append(row)

    def row(self, **values: Any) -> dict[str, Any]:
        return {"device": self.device, "versions": self.versions, **values}


def _stat_columns(stats: Any) -> dict[str, Any]:
    return {"median_us": stats.median_us, "q1_us": stats.q1_us, "q3_us": stats.q3_us, "min_us": stats.min_us,
            "reps": stats.reps}


def _ceilings(spec: BenchSpec, dtypes: tuple[str, ...], deadline: float | None) -> _Context:
    cases = [{"case_id": "copy"}] + [{"case_id": f"matmul-{d}"} for d in dtypes]
    task = {"mode": "ceilings", "device": spec.device, "copy_mb": spec.timing.copy_mb,
            "matmul_size": spec.timing.matmul_size, "seed": spec.seed, "cases": cases}
    ctx = _Context(spec.device)
    ctx.absorb_ceilings(run_isolated(task, spec.timing.case_timeout_s, deadline),
                        "eager" if spec.device == "cuda" else "wall")
    return ctx


def _setup_row(ctx: _Context, what: str, seconds: float, **values: Any) -> dict[str, Any]:
    extra = {"what": what, **values.pop("extra", {})}
    return ctx.row(phase="setup", timing="once", median_us=seconds * 1e6, min_us=seconds * 1e6, reps=1,
                   status="ok", extra=extra, **values)


def _failure_row(ctx: _Context, record: dict[str, Any], **values: Any) -> dict[str, Any]:
    return ctx.row(status=record.get("status", "failed"), error=record.get("error"), **values)


def steady_figures(steady: dict[str, list[float]] | None, clocks: dict[str, Any] | None) -> dict[str, Any]:
    """The backend and the dense baseline each timed in steady blocks of its own (timing.measure_steady):
    medians and the speedup they give (the targets' figure), and the GPU's clocks in every block."""
    figures: dict[str, Any] = {"clocks": clocks} if clocks else {}
    if steady:
        backend, dense = summarize(steady["backend"]).median_us, summarize(steady["dense"]).median_us
        figures.update(steady_median_us=backend, dense_steady_median_us=dense, speedup_steady=dense / backend)
    return figures


# ---------------------------------------------------------------- kernels
def _kernel_rows(ctx: _Context, spec: BenchSpec, dtype: str, backend_name: str, records: list[dict[str, Any]],
                 cases: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    backend = make_backend(backend_name, spec.kernels.block)
    rows = []
    for record in records:
        if record.get("kind") == "setup":
            rows.append(_setup_row(ctx, record["what"], record["seconds"], backend=backend_name, dtype=dtype))
            continue
        case = cases[record["case_id"]]
        base = {"phase": "kernel", "case_id": record["case_id"], "backend": backend_name, "dtype": dtype,
                "out_features": case["out_features"], "in_features": case["in_features"], "tokens": case["tokens"],
                "pattern": backend.pattern}
        if record.get("status") != "ok":
            rows.append(_failure_row(ctx, record, **base))
            continue
        result = record["result"]
        base["sparsity"] = 1.0 - result["density"]
        tuned = result["extra"].get("tuned")
        for what, seconds in result["setup"].items():
            rows.append(_setup_row(ctx, what, seconds, **{k: v for k, v in base.items() if k != "phase"},
                                   extra={"tuned": tuned} if tuned else {}))
        flops = 2.0 * case["tokens"] * case["out_features"] * case["in_features"]
        for mode, samples in result["samples_us"].items():
            stats = summarize(samples)
            dense = result["dense_us"].get(mode)
            floor = roofline_us(flops, result["math_fraction"], result["bytes_moved"],
                                ctx.matmul_tflops.get(dtype), ctx.copy_gbps)
            extra = {**result["extra"], "padded_tokens": result["padded_tokens"]}
            if dense:
                dense_stats = summarize(dense)
                extra.update(dense_median_us=dense_stats.median_us, dense_q1_us=dense_stats.q1_us,
                             dense_q3_us=dense_stats.q3_us, **steady_figures(result["steady_us"].get(mode),
                                                                             result["clocks"].get(mode)))
            rows.append(ctx.row(
                **base, timing=mode, **_stat_columns(stats), tflops=flops / stats.median_us / 1e6,
                gbps=result["bytes_moved"] / stats.median_us / 1e3, bytes_moved=result["bytes_moved"],
                roofline_us=floor, roofline_fraction=floor / stats.median_us if floor else None,
                speedup=summarize(dense).median_us / stats.median_us if dense else (1.0 if backend_name == "dense" else None),
                rel_error=result["rel_error"], status="ok", extra=extra))
        for mode, error in result["errors"].items():
            rows.append(ctx.row(**base, timing=mode, status="failed", error=error[:4000]))
    return rows


def _run_kernels(spec: BenchSpec, ctx: _Context, deadline: float | None, progress: bool) -> list[dict[str, Any]]:
    grid, timing = spec.kernels, spec.timing
    cases = {}
    for shape in grid.shapes:
        out_features, in_features = parse_shape(shape)
        for tokens in grid.tokens:
            case_id = f"{out_features}x{in_features}-t{tokens}"
            cases[case_id] = {"case_id": case_id, "out_features": out_features, "in_features": in_features,
                              "tokens": tokens}
    rows = []
    info = device_info(spec.device)
    jobs = [(dtype, backend) for dtype in grid.dtypes for backend in grid.backends]
    for dtype, backend in Bar(jobs, desc="bench kernels", unit="backend", enabled=progress):
        reason = make_backend(backend, grid.block).unsupported(info, dtype)
        if reason is not None:  # known before any process starts: one row per case says why
            records = [{"kind": "case", "case_id": c, "status": "unsupported", "error": reason} for c in cases]
            rows += _kernel_rows(ctx, spec, dtype, backend, records, cases)
            continue
        settings = CaseSettings(dtype=dtype, sparsity=grid.sparsity, block=grid.block, budget_ms=timing.budget_ms,
                                steady_ms=timing.steady_ms, settle_ms=timing.settle_ms,
                                min_samples=timing.min_samples, max_samples=timing.max_samples,
                                rotate_mb=timing.rotate_mb, graphs=timing.graphs, eager=timing.eager, seed=spec.seed)
        task = {"mode": "kernels", "device": spec.device, "backend": backend, "seed": spec.seed,
                "settings": {f.name: getattr(settings, f.name) for f in fields(settings)},
                "cases": list(cases.values())}
        records = run_isolated(task, timing.case_timeout_s, deadline)
        rows += _kernel_rows(ctx, spec, dtype, backend, records, cases)
    return rows


# ---------------------------------------------------------------- latency
def _latency_rows(ctx: _Context, spec: BenchSpec, variant: str, records: list[dict[str, Any]],
                  source_run: str | None, dense_from_pairs: bool = False) -> list[dict[str, Any]]:
    """Rows of a variant's records; with ``dense_from_pairs``, rows of the dense model timed beside it."""
    grid = spec.latency
    name = "dense" if dense_from_pairs else variant
    pattern = f"structured:{grid.structure or 'run'}" if name == SHRUNK else make_backend(name).pattern
    common = {"backend": name, "dtype": grid.dtype, "model": grid.model, "pattern": pattern,
              "source_run": None if name == "dense" else source_run}
    rows = []
    for record in ctx.absorb_device(records):
        if record.get("kind") == "setup":
            if not dense_from_pairs:
                rows.append(_setup_row(ctx, record["what"], record["seconds"], extra=record.get("extra", {}), **common))
            continue
        phase, size = record["case_id"].split("-")
        batch, tokens = (1, int(size)) if phase == "prefill" else (int(size), int(size))
        base = {**common, "phase": phase, "case_id": record["case_id"], "tokens": tokens, "batch": batch}
        if record.get("status") != "ok":
            rows.append(_failure_row(ctx, record, **base))
            continue
        result = record["result"]
        samples_by_mode = result["dense_us"] if dense_from_pairs else result["samples_us"]
        weight_bytes = result["dense_weight_bytes"] if dense_from_pairs else result["weight_bytes"]
        extra = {"weight_bytes": weight_bytes, "random_weights": grid.random_weights, "fused": grid.fuse,
                 "compiled": grid.compile, **({"context": grid.decode_context} if phase == "decode" else {}),
                 **({} if dense_from_pairs else {"search_s": result["search_s"]}),
                 **{k: v.get("dense" if name == "dense" else "backend") for k, v in result.get("compile", {}).items()}}
        for mode, samples in samples_by_mode.items():
            stats = summarize(samples)
            dense = None if dense_from_pairs else result["dense_us"].get(mode)
            steady, clocks = result["steady_us"].get(mode), result["clocks"].get(mode)
            if dense_from_pairs:  # the dense model's own steady time
                figures = {"steady_median_us": summarize(steady["dense"]).median_us} if steady else {}
            else:
                figures = {"dense_median_us": summarize(dense).median_us,
                           **steady_figures(steady, clocks)} if dense else {}
            rows.append(ctx.row(
                **base, timing=mode, **_stat_columns(stats), bytes_moved=weight_bytes,
                tokens_per_s=tokens / (stats.median_us / 1e6),
                speedup=summarize(dense).median_us / stats.median_us if dense else (1.0 if name == "dense" else None),
                status="ok", extra={**extra, **figures}))
        for mode, error in result["errors"].items():
            rows.append(ctx.row(**base, timing=mode, status="failed", error=error[:4000]))
    return rows


def _run_latency(prepared: PreparedBench, ctx: _Context, deadline: float | None, progress: bool) -> list[dict[str, Any]]:
    """Each sparse variant in its own worker, timed alternately with the dense model; the dense rows
    come from the first variant's pairs (a dense-only spec runs the dense model alone)."""
    spec = prepared.spec
    grid, timing = spec.latency, spec.timing
    cases = [{"case_id": f"prefill-{t}"} for t in grid.prefill_tokens] + \
        [{"case_id": f"decode-{b}"} for b in grid.decode_batches]
    variants = [v for v in grid.variants if v != "dense"] or ["dense"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="workbench-masks-") as folder:
        masks_file = None
        if prepared.masks is not None:
            from safetensors.torch import save_file

            masks_file = str(Path(folder) / "masks.safetensors")
            save_file({k: v.to(torch.uint8).contiguous() for k, v in prepared.masks.items()}, masks_file)
        for index, variant in enumerate(Bar(variants, desc="bench latency", unit="variant", enabled=progress)):
            task = {"mode": "latency", "device": spec.device, "dtype": grid.dtype, "variant": variant,
                    "model": grid.model, "random_weights": grid.random_weights, "masks_file": masks_file,
                    "sparsity": grid.sparsity, "block": grid.block, "decode_context": grid.decode_context,
                    "budget_ms": timing.budget_ms, "steady_ms": timing.steady_ms, "settle_ms": timing.settle_ms,
                    "min_samples": timing.min_samples,
                    "max_samples": timing.max_samples, "graphs": timing.graphs, "eager": timing.eager,
                    "seed": spec.seed, "cases": cases, "fuse": grid.fuse, "structure": grid.structure,
                    "channel_multiple": grid.channel_multiple,
                    "compile": grid.compile}
            records = run_isolated(task, timing.case_timeout_s, deadline)
            if index == 0 and variant != "dense":
                rows += _latency_rows(ctx, spec, variant, records, prepared.masks_run, dense_from_pairs=True)
            rows += _latency_rows(ctx, spec, variant, records, prepared.masks_run)
    return rows


def execute(prepared: PreparedBench, job: JobContext | None = None) -> JobOutput:
    progress = bool(job and job.progress)
    spec = prepared.spec
    deadline = _deadline(spec)
    started = time.perf_counter()
    if spec.target == "kernels":
        ctx = _ceilings(spec, spec.kernels.dtypes, deadline)  # the roofline's ceilings, measured in this run
        rows = _run_kernels(spec, ctx, deadline, progress)
    else:
        ctx = _Context(spec.device)
        rows = _run_latency(prepared, ctx, deadline, progress)
    rows = ctx.rows + mark_best(rows)
    metrics = headline_metrics(rows)
    metrics["bench_seconds"] = time.perf_counter() - started
    if any(row.get("status") == "skipped" for row in rows):  # the time budget ran out: not a complete run
        metrics[INCOMPLETE] = 1.0
    return JobOutput(metrics=[Metric(name, float(value)) for name, value in metrics.items()], kernel_results=rows)
