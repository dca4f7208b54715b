"""The prune job: model -> allocation -> method -> masks applied -> metrics.

``prepare`` loads and checks everything the job reads (model, corpus, widths, finite weights) before
the run is registered, so bad input leaves the store untouched; ``execute`` does the work and returns
the records the store writes in one transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from workbench.data import calibration_windows, evaluation_windows, load_corpus
from workbench.errors import PruningError, SpecError
from workbench.metrics.language import embedding_fidelity, perplexity, sentence_embeddings
from workbench.metrics.memory import PeakMemory
from workbench.metrics.sparsity import overall_sparsity, weight_sparsity
from workbench.models import LoadedModel, check_finite, load_model
from workbench.models.layers import block_index, prunable_layers
from workbench.pruning.allocation import resolve_allocation
from workbench.pruning.masks import check_pattern_fits, input_widths, nm_valid
from workbench.pruning.pipeline import heldout_count
from workbench.pruning.registry import PruneContext, PruneOutcome, resolve_method
from workbench.records import JobOutput, LayerStat, MaskRecord, Metric
from workbench.spec import PruneSpec
from workbench.jobs import JobContext


@dataclass
class PreparedPrune:
    spec: PruneSpec
    loaded: LoadedModel
    context: PruneContext


def prepare(spec: PruneSpec, job: JobContext | None = None) -> PreparedPrune:
    progress = bool(job and job.progress)
    method = resolve_method(spec.method)
    allocation = resolve_allocation(spec.allocation)
    load_corpus(spec.data)
    loaded = load_model(spec.model)
    check_finite(loaded.model)
    for window in (spec.calibration.seq_len, spec.evaluation.seq_len):
        if window > loaded.max_seq_len:
            raise SpecError(f"a window of {window} tokens exceeds {spec.model}'s {loaded.max_seq_len} positions",
                            f"set calibration.seq_len and evaluation.seq_len to at most {loaded.max_seq_len}")
    layers = prunable_layers(loaded.model, spec.prune_embeddings, spec.prune_head)
    check_pattern_fits(input_widths(layers), spec.pattern)
    calibration = heldout = None
    if method.needs_calibration or allocation.needs_calibration:
        samples = spec.calibration.samples
        # the windows drawn after the calibration ones stay out of the statistics: recon_error is measured on them
        windows = calibration_windows(spec.data, loaded.tokenizer, samples + heldout_count(samples),
                                      spec.calibration.seq_len, spec.calibration.seed)
        calibration, heldout = windows[:samples], windows[samples:]
    if loaded.family == "causal-lm":
        evaluation_windows(spec.data, loaded.tokenizer, 1, spec.evaluation.seq_len)  # fails early if too short
    context = PruneContext(model=loaded.model, layers=layers, targets={}, pattern=spec.pattern,
                           params=method.Params.model_validate(spec.params), seed=spec.calibration.seed,
                           calibration=calibration, heldout=heldout, family=loaded.family, progress=progress,
                           allocation_params=spec.allocation_params, precision=spec.calibration.precision)
    return PreparedPrune(spec, loaded, context)


def _evaluate(spec: PruneSpec, loaded: LoadedModel, dense_embeddings: torch.Tensor | None,
              sentences: list[str], progress: bool) -> dict[str, float]:
    if loaded.family == "causal-lm":
        windows = evaluation_windows(spec.data, loaded.tokenizer, spec.evaluation.windows, spec.evaluation.seq_len)
        return {"perplexity": perplexity(loaded.model, windows, progress=progress), "eval_windows": float(len(windows))}
    pruned = sentence_embeddings(loaded.model, loaded.tokenizer, sentences, max_length=spec.evaluation.seq_len)
    return {**embedding_fidelity(dense_embeddings, pruned), "eval_sentences": float(len(sentences))}


@dataclass
class PrunedModel:
    """The model with the method's masks applied (weights changed in place), and what the run records of it."""

    outcome: PruneOutcome
    prune_seconds: float
    peak: PeakMemory


def prune_model(prepared: PreparedPrune) -> PrunedModel:
    """Allocation -> method -> masks applied to the weights: everything of a run but its evaluation (an
    export of the run's model repeats exactly this step)."""
    spec, loaded, context = prepared.spec, prepared.loaded, prepared.context
    started = time.perf_counter()
    with PeakMemory() as peak:
        context.targets = resolve_allocation(spec.allocation).allocate(context, spec.sparsity)
        outcome = resolve_method(spec.method).prune(context)
        with torch.no_grad():
            for name, module in context.layers.items():
                mask = outcome.masks[name]
                if mask.shape != module.weight.shape:
                    raise PruningError(f"{spec.method} returned a mask of shape {tuple(mask.shape)} for {name} "
                                       f"({tuple(module.weight.shape)})", "report this as a bug in the method")
                module.weight.mul_(mask.to(module.weight.device))
    prune_seconds = time.perf_counter() - started
    check_finite(loaded.model)
    return PrunedModel(outcome, prune_seconds, peak)


def execute(prepared: PreparedPrune, job: JobContext | None = None) -> JobOutput:
    progress = bool(job and job.progress)
    spec, loaded, context = prepared.spec, prepared.loaded, prepared.context
    dense_embeddings, sentences = None, []
    if loaded.family == "encoder":
        sentences = load_corpus(spec.data).sentences(spec.evaluation.windows)
        dense_embeddings = sentence_embeddings(loaded.model, loaded.tokenizer, sentences, max_length=spec.evaluation.seq_len)

    pruned = prune_model(prepared)
    outcome, peak = pruned.outcome, pruned.peak

    layers, masks = [], []
    for name, module in context.layers.items():
        mask = outcome.masks[name].cpu()
        extras = {**context.extras.get(name, {}), **outcome.layer_extras.get(name, {})}
        layers.append(LayerStat(
            layer=name, block=block_index(name), shape=tuple(module.weight.shape),
            target_sparsity=context.targets.get(name), achieved_sparsity=weight_sparsity(module.weight),
            pattern=str(spec.pattern),
            nm_valid=nm_valid(mask, spec.pattern.keep, spec.pattern.group) if spec.pattern.is_nm else None,
            recon_error=extras.pop("recon_error", None), extra=extras))
        masks.append(MaskRecord(name, mask))

    started_eval = time.perf_counter()
    quality = _evaluate(spec, loaded, dense_embeddings, sentences, progress)
    metrics = {
        "sparsity": overall_sparsity(context.layers),
        **quality,
        "prune_seconds": pruned.prune_seconds,
        "eval_seconds": time.perf_counter() - started_eval,
        "peak_memory_mb": peak.rss_mb,
        **({"peak_gpu_memory_mb": peak.gpu_mb} if peak.gpu_mb is not None else {}),
        **outcome.metrics,
    }
    if spec.pattern.is_nm:
        metrics["nm_valid"] = float(all(layer.nm_valid for layer in layers))
    return JobOutput(metrics=[Metric(k, float(v)) for k, v in metrics.items()], layers=layers, masks=masks)
