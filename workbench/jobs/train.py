"""The train job: model and data -> a sparse-training method's hooks around a small loop -> records.

``prepare`` loads and checks what the job reads (model, data, N:M widths) before the run is
registered. ``execute`` runs the loop, resuming from the job's newest checkpoint when a killed run of
the same key left one (the runner's ``JobContext.workdir``, ``<store dir>/checkpoints/<key>``), and returns
per-step metrics, mask snapshots and the SAD between consecutive snapshots for the store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SpecError(f"device {name!r} asked for but no CUDA GPU is visible", "use device: auto or cpu")
    return torch.device(name)


def prepare(spec: TrainSpec, job: JobContext | None = None) -> PreparedTrain:
    device = resolve_device(spec.device)
    calibration = None
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
        model = loaded.model.to(device)
        layers = prunable_layers(model)
        _check_nm_widths(spec, layers)
        task = TextTask.from_spec(spec, loaded.tokenizer, device)
        params = resolve_method(spec.method).Params.model_validate(spec.params)
        if getattr(params, "prune_method", None):
            from workbench.data import calibration_windows
            from workbench.pruning.registry import resolve_method as resolve_prune

            if resolve_prune(params.prune_method).needs_calibration:
                calibration = calibration_windows(spec.data, loaded.tokenizer, params.calibration_samples,
                                                  spec.seq_len, spec.seed)
    _check_nm_widths(spec, layers)
    return PreparedTrain(spec, model, layers, task, calibration)


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
        family=prepared.task.family)
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
    metrics = loop.metrics + [Metric(name, float(value)) for name, value in final.items()]
    return JobOutput(metrics=metrics, layers=layers, masks=loop.evolution.mask_records(),
                     divergence=loop.evolution.divergence)

