"""The train job: model and data -> a sparse-training method's hooks around a small loop -> records.

``prepare`` loads and checks what the job reads (model, data, N:M widths; for a recovery the structured
prune run it starts from, rebuilt from the store) before the run is registered. ``execute`` runs the loop,
resuming from the job's newest checkpoint when a killed run of the same key left one (the runner's
``JobContext.workdir``, ``<store dir>/checkpoints/<key>``), and returns per-step metrics, mask snapshots and
the SAD between consecutive snapshots for the store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workbench.errors import SpecError
from workbench.jobs import JobContext
from workbench.metrics.memory import PeakMemory
from workbench.models.layers import block_index
from workbench.pruning.masks import check_pattern_fits
from workbench.records import JobOutput, LayerStat, Metric
from workbench.training.checkpoint import Checkpoints
from workbench.training.loop import TrainLoop
from workbench.training.registry import TrainContext, resolve_method
from workbench.training.sparsity import layer_nm_weight_valid, nm_width
from workbench.training.spec import TrainSpec
from workbench.training.tasks import ImageTask, Task, TextTask


@dataclass
class PreparedTrain:
    spec: TrainSpec
    model: nn.Module
    layers: dict[str, nn.Module]
    task: Task
    calibration: torch.Tensor | None = None
    teacher: nn.Module | None = None  # a recovery's dense model (``model`` is the pruned run's)
    teacher_blocks: tuple[int, ...] | None = None
    tokenizer: Any = None


@dataclass
class PrunedStart:
    """Where a recovery starts: a structured prune run's shrunk model, the teacher block under each of its
    blocks, and the run's evaluation windows."""

    model: nn.Module
    teacher_blocks: tuple[int, ...]
    eval_windows: torch.Tensor


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SpecError(f"device {name!r} asked for but no CUDA GPU is visible", "use device: auto or cpu")
    return torch.device(name)


def prepare(spec: TrainSpec, job: JobContext | None = None) -> PreparedTrain:
    device = resolve_device(spec.device)
    calibration = teacher = teacher_blocks = eval_windows = tokenizer = None
    if spec.is_image:
        from workbench.models.fashion_cnn import build_fashion_cnn, fashion_cnn_prunable

        task: Task = ImageTask.from_spec(spec, device)
        model = build_fashion_cnn(spec.seed).to(device)
        layers = fashion_cnn_prunable(model)
    else:
        from workbench.models import check_finite, load_model
        from workbench.models.layers import prunable_layers

        loaded = load_model(spec.model)
        if loaded.family != "causal-lm":
            raise SpecError(f"model {spec.model!r} is an encoder; sparse fine-tuning here trains causal LMs",
                            "use a causal LM such as smollm2-135m or tiny-llama")
        check_finite(loaded.model)
        if spec.seq_len > loaded.max_seq_len:
            raise SpecError(f"seq_len {spec.seq_len} exceeds {spec.model}'s {loaded.max_seq_len} positions",
                            f"set seq_len to at most {loaded.max_seq_len}")
        model, tokenizer = loaded.model.to(device), loaded.tokenizer
        params = resolve_method(spec.method).Params.model_validate(spec.params)
        if resolve_method(spec.method).starts_from_run:  # the student is the pruned run's; the dense model teaches
            start = pruned_start(spec, params.from_run, tokenizer, job)
            teacher, model = model, start.model.to(device)
            teacher_blocks, eval_windows = start.teacher_blocks, start.eval_windows
        layers = prunable_layers(model)
        _check_nm_widths(spec, layers)
        task = TextTask.from_spec(spec, tokenizer, device, eval_windows)
        if getattr(params, "prune_method", None):
            from workbench.data import calibration_windows
            from workbench.pruning.registry import resolve_method as resolve_prune

            if resolve_prune(params.prune_method).needs_calibration:
                calibration = calibration_windows(spec.data, loaded.tokenizer, params.calibration_samples,
                                                  spec.seq_len, spec.seed)
    _check_nm_widths(spec, layers)
    return PreparedTrain(spec, model, layers, task, calibration, teacher, teacher_blocks, tokenizer)


def pruned_start(spec: TrainSpec, reference: str, tokenizer: Any, job: JobContext | None) -> PrunedStart:
    """The finished structured prune run that ``reference`` names (key, run id or prefix), of the spec's model
    and data, rebuilt exactly as it was stored (``prune.rebuild_run``)."""
    from workbench import queries
    from workbench.data import evaluation_windows
    from workbench.jobs import prune as prune_job
    from workbench.jobs import run_key
    from workbench.models import model_identity
    from workbench.models.layers import transformer_blocks
    from workbench.store import Store
    from workbench.training.recovery import kept_blocks

    store = (job.store if job is not None else None) or Store()
    key = run_key(store, reference)
    found = store.finished_run(key)
    if found is None:
        raise SpecError(f"no finished run has key {key[:12]}... in {store.location}",
                        "run the structured prune spec first (workbench run), or name a finished run in params.from_run")
    record = queries.run(store, found["run_id"])
    pruned = record["spec"]
    if record["kind"] != "prune" or not pruned.get("structure"):
        raise SpecError(f"run {record['run_id']} is a {record['kind']} run without `structure:`, not a structured "
                        "prune run", "name a finished prune run with structure: heads, channels, blocks or "
                                     "heads+channels in params.from_run")
    if pruned["model"] != spec.model or record["identity"].get("model") != model_identity(spec.model):
        raise SpecError(f"run {record['run_id']} pruned model {pruned['model']}, not {spec.model}",
                        f"set model: {pruned['model']}")
    if pruned["data"] != spec.data:
        raise SpecError(f"run {record['run_id']} was pruned and evaluated on {pruned['data']}, not {spec.data}",
                        f"set data: {pruned['data']}")
    prepared, outcome = prune_job.rebuild_run(store, record)
    student = prepared.loaded.model
    prefix, blocks = transformer_blocks(student)
    windows = evaluation_windows(spec.data, tokenizer, pruned["evaluation"]["windows"], pruned["evaluation"]["seq_len"])
    return PrunedStart(student, kept_blocks(outcome.outcome.masks.get(prefix), len(blocks)), windows)


def _check_nm_widths(spec: TrainSpec, layers: dict[str, nn.Module]) -> None:
    check_pattern_fits({name: nm_width(module) for name, module in layers.items()}, spec.pattern)


def execute(prepared: PreparedTrain, job: JobContext | None = None) -> JobOutput:
    job = job or JobContext()
    spec = prepared.spec
    method_class = resolve_method(spec.method)
    context = TrainContext(
        model=prepared.model, layers=prepared.layers, sparsity=spec.sparsity, pattern=spec.pattern,
        density=spec.density, total_steps=spec.steps, seed=spec.seed,
        params=method_class.Params.model_validate(spec.params), calibration=prepared.calibration,
        family=prepared.task.family, teacher=prepared.teacher, teacher_blocks=prepared.teacher_blocks)
    loop = TrainLoop(spec, prepared.task, method_class(context), Checkpoints(job.workdir), job.progress)
    started = time.perf_counter()
    with PeakMemory() as peak:
        loop.run()
    train_seconds = time.perf_counter() - started
    output = _records(spec, prepared, loop, train_seconds, peak)
    loop.checkpoints.clear()  # the store now holds the result; a failed write retrains from scratch
    return output


def _records(spec: TrainSpec, prepared: PreparedTrain, loop: TrainLoop, train_seconds: float,
             peak: PeakMemory) -> JobOutput:
    from workbench.metrics.sparsity import overall_sparsity, weight_sparsity
    from workbench.training.density import layer_sparsities

    targets = (layer_sparsities(prepared.layers, spec.sparsity, spec.density)
               if spec.method != "dense" and not spec.pattern.is_nm else {n: spec.sparsity for n in prepared.layers})
    layers, nm_ok = [], []
    sad_by_layer: dict[str, int] = {}
    for record in loop.evolution.divergence:
        sad_by_layer[record.layer] = sad_by_layer.get(record.layer, 0) + record.sad
    for name, module in prepared.layers.items():
        valid = layer_nm_weight_valid(module.weight, spec.pattern.keep, spec.pattern.group) if spec.pattern.is_nm else None
        nm_ok.append(valid)
        layers.append(LayerStat(layer=name, block=block_index(name), shape=tuple(module.weight.shape),
                                target_sparsity=targets[name], achieved_sparsity=weight_sparsity(module.weight),
                                pattern=str(spec.pattern), nm_valid=valid,
                                extra={"total_sad": sad_by_layer.get(name, 0)}))
    final = {
        "sparsity": overall_sparsity(prepared.layers),
        "total_sad": float(loop.evolution.total_sad()),
        "steps": float(spec.steps),
        "resumed_from_step": float(loop.resumed_from),
        "train_seconds": train_seconds,
        "eval_seconds": loop.eval_seconds,
        "peak_memory_mb": peak.rss_mb,
        **({"peak_gpu_memory_mb": peak.gpu_mb} if peak.gpu_mb is not None else {}),
    }
    if spec.pattern.is_nm:
        final["nm_valid"] = float(all(nm_ok))
    if prepared.teacher is not None:  # a recovery: the shrunk model's size, beside its pruned run's
        final["parameters"] = float(sum(p.numel() for p in prepared.model.parameters()))
    metrics = loop.metrics + [Metric(name, float(value)) for name, value in final.items()]
    return JobOutput(metrics=metrics, layers=layers, masks=loop.evolution.mask_records(),
                     divergence=loop.evolution.divergence)

