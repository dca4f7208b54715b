"""The prune job: model -> allocation -> method -> masks applied -> metrics.

``prepare`` loads and checks everything the job reads (model, corpus, widths, finite weights) before
the run is registered, so bad input leaves the store untouched; ``execute`` does the work and returns
the records the store writes in one transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from workbench.data import calibration_windows, evaluation_windows, load_corpus
from workbench.errors import PruningError, SpecError
from workbench.jobs import JobContext
from workbench.metrics.language import embedding_fidelity, perplexity, sentence_embeddings
from workbench.metrics.memory import PeakMemory
from workbench.metrics.sparsity import overall_sparsity, weight_sparsity
from workbench.models import LoadedModel, check_finite, load_model
from workbench.models.layers import block_index, prunable_layers
from workbench.progress import phase
from workbench.pruning.allocation import resolve_allocation
from workbench.pruning.masks import check_pattern_fits, input_widths, nm_kept, nm_valid
from workbench.pruning.pipeline import heldout_count
from workbench.pruning.registry import PruneContext, PruneOutcome, resolve_method
from workbench.records import SHORTFALL_METRIC, JobOutput, LayerStat, MaskRecord, Metric, sparsity_shortfall
from workbench.spec import PruneSpec, resolve_prune_method
from workbench.structured import ShrinkResult, check_request, structured_prune
from workbench.values import Pattern


@dataclass
class PreparedPrune:
    spec: PruneSpec
    loaded: LoadedModel
    context: PruneContext


def prepare(spec: PruneSpec, job: JobContext | None = None) -> PreparedPrune:
    progress = bool(job and job.progress)
    method = resolve_prune_method(spec.method, spec.structure)
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
    if spec.structure is not None and loaded.family != "causal-lm":
        raise SpecError(f"structured pruning of {spec.model} ({loaded.family}) is not offered by the prune job",
                        "prune a Llama-family causal LM, e.g. smollm2-135m or tiny-llama")
    if spec.structure is not None:
        check_request(loaded.model, spec.method, spec.structure, spec.sparsity, spec.params, spec.head_unit,
                      spec.channel_multiple)
    if _needs_calibration(method) or allocation.needs_calibration:
        samples = spec.calibration.samples
        # the windows drawn after the calibration ones stay out of the statistics: recon_error is measured on them
        windows = calibration_windows(spec.data, loaded.tokenizer, samples + heldout_count(samples),
                                      spec.calibration.seq_len, spec.calibration.seed)
        calibration, heldout = windows[:samples], windows[samples:]
    if loaded.family == "causal-lm":
        evaluation_windows(spec.data, loaded.tokenizer, 1, spec.evaluation.seq_len)  # fails early if too short
    if spec.evaluation.tasks:  # unknown tasks, or hub data without network, fail before the run is stored
        from workbench.evaluation import check_tasks

        check_tasks(spec.evaluation.tasks, loaded.family)
    context = PruneContext(model=loaded.model, layers=layers, targets={}, pattern=spec.pattern,
                           params=method.Params.model_validate(spec.params), seed=spec.calibration.seed,
                           calibration=calibration, heldout=heldout, family=loaded.family, progress=progress,
                           allocation_params=spec.allocation_params, precision=spec.calibration.precision)
    if spec.allocation == "search" and spec.structure == "blocks":  # a depth search's kept blocks, read here
        from workbench.jobs.search import search_blocks

        context.allocation_params = {**spec.allocation_params, "blocks_kept": search_blocks(spec, loaded.model, job)}
    elif spec.allocation == "search" and spec.structure is not None:  # a structured search's widths per block
        from workbench.jobs.search import search_widths

        context.allocation_params = {**spec.allocation_params, "removed_units": search_widths(spec, job)}
    elif spec.allocation == "search":  # a search run's per-layer targets, read here: pruning never reads the store
        from workbench.jobs.search import search_targets

        context.allocation_params = {**spec.allocation_params, "targets": search_targets(spec, layers, job)}
    return PreparedPrune(spec, loaded, context)


def _evaluate(spec: PruneSpec, loaded: LoadedModel, dense_embeddings: torch.Tensor | None,
              sentences: list[str], progress: bool) -> dict[str, float]:
    phase("evaluating")
    if loaded.family == "causal-lm":
        windows = evaluation_windows(spec.data, loaded.tokenizer, spec.evaluation.windows, spec.evaluation.seq_len)
        quality = {"perplexity": perplexity(loaded.model, windows, progress=progress), "eval_windows": float(len(windows))}
        if spec.evaluation.tasks:  # downstream accuracy of the same (pruned) weights: <task>/acc, <task>/acc_stderr...
            from workbench.evaluation import run_tasks

            quality.update(run_tasks(loaded.model, loaded.tokenizer, spec.evaluation.tasks, limit=spec.evaluation.limit,
                                     num_fewshot=spec.evaluation.num_fewshot, progress=progress))
        return quality
    pruned = sentence_embeddings(loaded.model, loaded.tokenizer, sentences, max_length=spec.evaluation.seq_len)
    return {**embedding_fidelity(dense_embeddings, pruned), "eval_sentences": float(len(sentences))}


def _needs_calibration(method: Any) -> bool:
    """A pruning method says so; a structured criterion reads input statistics or block similarities."""
    return bool(getattr(method, "needs_calibration", False) or getattr(method, "needs_inputs", False)
                or getattr(method, "needs_blocks", False))


@dataclass
class PrunedModel:
    """The model with the method's masks applied (weights changed in place), and what the run records of it."""

    outcome: PruneOutcome
    prune_seconds: float
    peak: PeakMemory
    shrink: ShrinkResult | None = None  # structured runs: what was removed, and the widths left


def prune_model(prepared: PreparedPrune) -> PrunedModel:
    """Allocation -> method -> masks applied to the weights: everything of a run but its evaluation (an
    export of the run's model repeats exactly this step)."""
    spec, loaded, context = prepared.spec, prepared.loaded, prepared.context
    if spec.structure is not None:
        return _shrink_model(prepared)
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


def _shrink_model(prepared: PreparedPrune) -> PrunedModel:
    """Structured pruning: whole heads, channels or blocks removed; masks are per structure (1 x units)."""
    spec, context = prepared.spec, prepared.context
    started = time.perf_counter()
    with PeakMemory() as peak:
        result = structured_prune(prepared.loaded.model, context.calibration, spec.method, spec.structure,
                                  spec.sparsity, params=spec.params, head_unit=spec.head_unit,
                                  channel_multiple=spec.channel_multiple,
                                  blocks_kept=context.allocation_params.get("blocks_kept"),
                                  removed_units=context.allocation_params.get("removed_units"))
    prune_seconds = time.perf_counter() - started
    check_finite(prepared.loaded.model)
    masks = {name: mask.reshape(1, -1).cpu() for name, mask in result.masks.items()}
    return PrunedModel(PruneOutcome(masks), prune_seconds, peak, result)


def rebuild_run(store: Any, record: dict[str, Any]) -> tuple[PreparedPrune, PrunedModel]:
    """The model of a finished prune run (``record`` as ``queries.run`` reads it), pruned again from its spec:
    the key proves the model, data and code are the run's, and every mask must equal the stored one bit for
    bit. The store keeps masks, not weights; this is exact where kept weights change too (SparseGPT's
    updates, FLAP's bias compensation), where applying stored masks to dense weights would not be."""
    from workbench import queries
    from workbench.errors import StoreError
    from workbench.jobs import stored_spec

    prepared = prepare(stored_spec(record), JobContext(store=store))  # a search allocation reads its run here
    pruned = prune_model(prepared)
    stored = queries.load_masks(store, record["run_id"])
    rebuilt = {name: mask.cpu() for name, mask in pruned.outcome.masks.items()}
    differing = sorted(name for name in stored if name not in rebuilt or not torch.equal(stored[name], rebuilt[name]))
    if differing or set(rebuilt) != set(stored):
        raise StoreError(f"pruning run {record['run_id']}'s spec again gave other masks than the stored ones "
                         f"({(differing or sorted(set(rebuilt) ^ set(stored)))[0]})",
                         "the installed code or libraries differ from the run's; re-run the spec and use that run")
    return prepared, pruned


def _structured_records(spec: PruneSpec, loaded: LoadedModel, pruned: PrunedModel) -> tuple[list, list, dict]:
    """Layer rows per structure mask (a block's heads or channels; one row per block for depth) and the masks."""
    result, pattern = pruned.shrink, f"structured:{spec.structure}"
    layers = []
    for name, mask in pruned.outcome.masks.items():
        flat = mask.reshape(-1)
        if name.endswith((".heads", ".channels")):
            layers.append(LayerStat(layer=name, block=int(name.rsplit(".", 2)[1]), shape=tuple(mask.shape),
                                    target_sparsity=spec.sparsity, achieved_sparsity=1 - float(flat.float().mean()),
                                    pattern=pattern, extra={"kept": int(flat.sum()), "units": flat.numel()}))
        elif not name.endswith(".kv_heads"):  # the block list itself: depth pruning
            layers += [LayerStat(layer=f"{name}.{block}", block=block, shape=(1, 1), target_sparsity=spec.sparsity,
                                 achieved_sparsity=0.0 if kept else 1.0, pattern=pattern, extra={"kept": int(kept)})
                       for block, kept in enumerate(flat.tolist())]
    masks = [MaskRecord(name, mask) for name, mask in pruned.outcome.masks.items()]
    metrics = {
        "sparsity": result.achieved,
        "parameters": float(sum(p.numel() for p in loaded.model.parameters())),
        "decoder_parameters_removed": float(result.removed_parameters),
        "blocks_kept": float(result.kept["blocks"]),
    }
    return layers, masks, metrics


def _output(spec: PruneSpec, metrics: dict[str, float], layers: list[LayerStat], masks: list[MaskRecord]) -> JobOutput:
    """The run's records; an achieved sparsity more than half a point off the target is stored as such
    (Wanda prunes int(sparsity * inputs) of every row: 44 of 64, 68.75%, at a 70% target)."""
    missed = sparsity_shortfall(spec.sparsity, metrics["sparsity"])
    if missed is not None:
        metrics[SHORTFALL_METRIC] = missed
    return JobOutput(metrics=[Metric(k, float(v)) for k, v in metrics.items()], layers=layers, masks=masks)


def _layer_pattern(pattern: Pattern, target: float | None) -> Pattern:
    """A layer's N:M pattern: its own N where a searched N:M allocation gives it one (``masks.nm_kept``)."""
    if not pattern.is_nm or target is None:
        return pattern
    return Pattern(name="nm", keep=nm_kept(pattern, target), group=pattern.group)


def execute(prepared: PreparedPrune, job: JobContext | None = None) -> JobOutput:
    progress = bool(job and job.progress)
    spec, loaded, context = prepared.spec, prepared.loaded, prepared.context
    dense_embeddings, sentences = None, []
    if loaded.family == "encoder":
        sentences = load_corpus(spec.data).sentences(spec.evaluation.windows)
        dense_embeddings = sentence_embeddings(loaded.model, loaded.tokenizer, sentences, max_length=spec.evaluation.seq_len)

    phase("pruning")
    pruned = prune_model(prepared)
    outcome, peak = pruned.outcome, pruned.peak
    if pruned.shrink is not None:
        layers, masks, shrink_metrics = _structured_records(spec, loaded, pruned)
        started_eval = time.perf_counter()
        quality = _evaluate(spec, loaded, dense_embeddings, sentences, progress)
        metrics = {**shrink_metrics, **quality, "prune_seconds": pruned.prune_seconds,
                   "eval_seconds": time.perf_counter() - started_eval, "peak_memory_mb": peak.rss_mb}
        return _output(spec, metrics, layers, masks)

    layers, masks = [], []
    for name, module in context.layers.items():
        mask = outcome.masks[name].cpu()
        extras = {**context.extras.get(name, {}), **outcome.layer_extras.get(name, {})}
        pattern = _layer_pattern(spec.pattern, context.targets.get(name))
        layers.append(LayerStat(
            layer=name, block=block_index(name), shape=tuple(module.weight.shape),
            target_sparsity=context.targets.get(name), achieved_sparsity=weight_sparsity(module.weight),
            pattern=str(pattern), nm_valid=nm_valid(mask, pattern.keep, pattern.group) if pattern.is_nm else None,
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
    return _output(spec, metrics, layers, masks)
