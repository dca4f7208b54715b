"""The search job: level database -> dense reference -> EvoPress or random search -> the winning allocation.

``prepare`` loads the model and the windows and lays out the level geometry (N:M levels for ``nm``, the
per-block widths for ``structured``), or for the depth space the number of blocks to drop (an impossible
step or count, or a model the search cannot prune, fails there, before the run is registered). ``execute``
builds the level
database or finds it built (``<store folder>/search-levels/<database key>/``: the key covers model, data,
method and its parameters, sparsity, levels and calibration, not the search's budget or seed, so every
search over the same levels shares one), measures the dense model once on the fitness windows, runs the
search with a checkpoint of its state after every generation in ``JobContext.workdir`` (a killed search
continues from there and ends where an uninterrupted one would), and returns:

- metrics: ``evaluations``, ``best_fitness`` (the winner's KL on the whole fitness pool),
  ``uniform_fitness``, ``fitness`` per generation (step 0: the uniform start), the spread of every
  last-stage measurement (``final_stage_min`` / ``_median`` / ``_max`` / ``_std`` / ``_count``), ``sparsity``
  (exact: the uniform allocation's), the perplexity of the winner and of the uniform allocation as built
  from the database (``candidate_perplexity``, ``uniform_perplexity``), ``level_step`` (weights),
  ``layers_moved``, ``levels_cached``, ``levels_seconds``, ``search_seconds``, ``resumed_from_generation``;
- layer_stats: per layer the winner's target sparsity (what a prune job hands its method), the sparsity
  it prunes exactly, and ``extra``: level, pruned count, admissible levels.

The depth space has no database: a candidate's blocks are taken out of the model's block list for each
fitness pass. Its metrics replace ``uniform_fitness`` with ``start_fitness`` (the best of the start round),
``uniform_perplexity``, ``level_step``, ``layers_moved`` and the database's with ``blocks_dropped``; its
layer_stats have one row per block (``model.layers.<i>``, target and achieved sparsity 1 when dropped, 0
when kept, ``extra.kept``), as a structured prune run of blocks has.

The structured space has no database either: the criterion ranks every block's units once from dense
calibration statistics (``statistics_seconds``) and a candidate's removed units are masked; its layer_stats
have one row per block and kind (``<blocks>.<i>.heads`` / ``.channels``, ``extra.removed`` units of
``extra.units``), as a structured prune run has.

``search_targets``, ``search_widths`` and ``search_blocks`` are the prune job's side: the per-layer targets,
the units each block loses, or the kept blocks, of a finished search run.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.data import calibration_windows, evaluation_windows, load_corpus
from workbench.errors import SpecError
from workbench.faults import faultpoint
from workbench.jobs import JobContext
from workbench.metrics.language import perplexity
from workbench.models import LoadedModel, check_finite, load_model, model_identity
from workbench.models.layers import block_index, prunable_layers
from workbench.progress import Bar
from workbench.records import JobOutput, LayerStat, Metric
from workbench.search.depth import BlockDropper, blocks_for_sparsity, depth_space, kept_mask
from workbench.search.evolution import Plan, SearchState, Space, search
from workbench.search.fitness import TOP_K, dense_reference, kl_fitness
from workbench.search.levels import (
    DATABASE_VERSION,
    LevelGeometry,
    LevelSwapper,
    build_database,
    level_geometry,
    load_geometry,
    method_counter,
    nm_geometry,
)
from workbench.search.spec import SearchSpec
from workbench.search.widths import WidthGeometry, WidthMasker, width_geometry
from workbench.structured.criteria import STRUCTURES
from workbench.structured.layout import model_layout
from workbench.structured.prune import width_units
from workbench.values import Pattern

STATE_FILE = "search-state.json"
NM_METHODS = ("wanda", "sparsegpt")  # the methods that keep a layer's own N where its target gives one


@dataclass
class PreparedSearch:
    spec: SearchSpec
    loaded: LoadedModel
    space: Space
    calibration: torch.Tensor
    fitness_windows: torch.Tensor
    layers: dict[str, nn.Module] | None = None  # the level spaces: prunable layers, geometry and database
    geometry: LevelGeometry | None = None
    database: Path | None = None
    widths: WidthGeometry | None = None  # the structured space


def database_key(spec: SearchSpec) -> str:
    """What the level database depends on (not the search's method, budget or seed)."""
    from workbench.data import data_identity
    from workbench.pruning.registry import resolve_method

    payload = {"version": DATABASE_VERSION, "model": model_identity(spec.model), "data": data_identity(spec.data),
               "method": f"{spec.prune_method}@{resolve_method(spec.prune_method).version}",
               "params": spec.prune_params, "sparsity": spec.sparsity, "levels": spec.levels.model_dump(mode="json"),
               "calibration": spec.calibration.model_dump(mode="json")}
    if spec.space == "nm":
        payload["pattern"] = str(spec.pattern)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _database_root(job: JobContext | None) -> Path:
    if job is not None and job.store is not None:
        return job.store.artifacts_dir / "search-levels"
    if job is not None and job.workdir is not None:
        return job.workdir / "search-levels"
    return Path(tempfile.gettempdir()) / "workbench-search-levels"


def prepare(spec: SearchSpec, job: JobContext | None = None) -> PreparedSearch:
    load_corpus(spec.data)
    loaded = load_model(spec.model)
    if loaded.family != "causal-lm":
        raise SpecError(f"the search measures next-token distributions; {spec.model} is a {loaded.family}",
                        "search a causal LM, e.g. smollm2-135m or tiny-llama")
    check_finite(loaded.model)
    for window in (spec.calibration.seq_len, spec.evaluation.seq_len):
        if window > loaded.max_seq_len:
            raise SpecError(f"a window of {window} tokens exceeds {spec.model}'s {loaded.max_seq_len} positions",
                            f"set calibration.seq_len and evaluation.seq_len to at most {loaded.max_seq_len}")
    samples = spec.calibration.samples
    windows = calibration_windows(spec.data, loaded.tokenizer, samples + spec.fitness_windows,
                                  spec.calibration.seq_len, spec.calibration.seed)
    evaluation_windows(spec.data, loaded.tokenizer, 1, spec.evaluation.seq_len)  # fails early if too short
    if spec.space == "depth":
        blocks = model_layout(loaded.model).block_parameters()
        dropped = spec.blocks if spec.blocks is not None else blocks_for_sparsity(blocks, spec.sparsity)
        return PreparedSearch(spec, loaded, depth_space(len(blocks), dropped), windows[:samples], windows[samples:])
    if spec.space == "structured":
        geometry = width_geometry(model_layout(loaded.model), STRUCTURES[spec.structure], spec.head_unit,
                                  spec.sparsity, spec.levels.max, spec.levels.step)
        return PreparedSearch(spec, loaded, geometry.space(), windows[:samples], windows[samples:], widths=geometry)
    layers = prunable_layers(loaded.model)
    shapes = [tuple(module.weight.shape) for module in layers.values()]
    if spec.space == "nm":
        geometry = nm_geometry(list(layers), shapes, spec.pattern, spec.levels.max)
    else:
        geometry = level_geometry(list(layers), shapes, spec.sparsity, spec.levels.max, spec.levels.step,
                                  method_counter(spec.prune_method, spec.prune_params))
    return PreparedSearch(spec, loaded, geometry.space(), windows[:samples], windows[samples:], layers, geometry,
                          _database_root(job) / database_key(spec))


def _load_state(workdir: Path | None, spec: SearchSpec, size: int) -> SearchState | None:
    if workdir is None or not (workdir / STATE_FILE).is_file():
        return None
    data = json.loads((workdir / STATE_FILE).read_text())
    if data.get("spec") != spec.canonical_json():
        return None
    state = SearchState.from_json(data["state"])
    return state if state.method == spec.method and len(state.parent) == size else None


def _save_state(workdir: Path | None, spec: SearchSpec, state: SearchState) -> None:
    if workdir is None:
        return
    workdir.mkdir(parents=True, exist_ok=True)
    partial = workdir / f"{STATE_FILE}.{os.getpid()}"
    partial.write_text(json.dumps({"spec": spec.canonical_json(), "state": state.to_json()}))
    os.replace(partial, workdir / STATE_FILE)
    faultpoint(f"search:generation={state.generation}")


def _open_levels(prepared: PreparedSearch, progress: bool) -> tuple[LevelSwapper, dict[str, float]]:
    """The level database, built unless found, and a swapper over it."""
    spec, geometry, model = prepared.spec, prepared.geometry, prepared.loaded.model
    started = time.perf_counter()
    cached = load_geometry(prepared.database) == geometry
    if not cached:
        build_database(model, prepared.layers, prepared.calibration, geometry, spec.prune_method, spec.prune_params,
                       prepared.database, spec.calibration.precision, progress)
    swapper = LevelSwapper(prepared.layers, geometry, prepared.database)
    return swapper, {"levels_cached": float(cached), "levels_seconds": time.perf_counter() - started}


def _open_widths(prepared: PreparedSearch) -> tuple[WidthMasker, dict[str, float]]:
    """The criterion's ranking of every block's units, from dense calibration statistics, and a masker."""
    from workbench.structured.criteria import resolve_criterion
    from workbench.structured.stats import collect_statistics

    spec, model = prepared.spec, prepared.loaded.model
    started = time.perf_counter()
    criterion = resolve_criterion(spec.prune_method)
    parsed = criterion.params(spec.prune_params)
    stats = None
    if criterion.needs_inputs or criterion.needs_blocks:
        stats = collect_statistics(model, prepared.calibration, inputs=criterion.needs_inputs,
                                   blocks=criterion.needs_blocks)
    entries = width_units(criterion, model_layout(model), stats, STRUCTURES[spec.structure], spec.head_unit, parsed)
    masker = WidthMasker(model, entries, prepared.widths, stats, bool(getattr(parsed, "compensate", False)))
    return masker, {"statistics_seconds": time.perf_counter() - started}


def execute(prepared: PreparedSearch, job: JobContext | None = None) -> JobOutput:
    spec, space, model = prepared.spec, prepared.space, prepared.loaded.model
    progress = bool(job and job.progress)
    workdir = job.workdir if job else None

    swapper: LevelSwapper | BlockDropper | WidthMasker
    if prepared.widths is not None:
        swapper, extra = _open_widths(prepared)
    elif prepared.geometry is None:
        swapper, extra = BlockDropper(model), {}
    else:
        swapper, extra = _open_levels(prepared, progress)

    started = time.perf_counter()
    reference = dense_reference(model, prepared.fitness_windows, TOP_K)

    def evaluate(candidate: tuple[int, ...], windows: Any) -> float:
        swapper.apply(candidate)
        return kl_fitness(model, reference, list(windows))

    budget, seq_len = spec.budget, spec.calibration.seq_len
    plan = Plan(budget.generations, budget.offspring, tuple(budget.survivors),
                tuple(tokens // seq_len for tokens in budget.tokens))
    state = _load_state(workdir, spec, space.size)
    resumed_from = state.generation if state is not None else 0
    bar = Bar(total=plan.generations, initial=resumed_from, desc=f"search ({spec.method})", unit="generation",
              enabled=progress, leave=False)

    def checkpoint(current: SearchState) -> None:
        bar.n = current.generation
        bar.set_postfix_str(f"kl={current.fitness:.4g}")
        _save_state(workdir, spec, current)

    try:
        state = search(spec.method, space, plan, evaluate, spec.seed, state, checkpoint)
    finally:
        bar.close()
    search_seconds = time.perf_counter() - started

    windows = evaluation_windows(spec.data, prepared.loaded.tokenizer, spec.evaluation.windows, spec.evaluation.seq_len)
    swapper.apply(state.parent)
    extra["candidate_perplexity"] = perplexity(model, windows, progress=progress)
    uniform = space.uniform()
    if uniform is not None:
        swapper.apply(uniform)
        extra["uniform_perplexity"] = perplexity(model, windows, progress=progress)
    swapper.restore()

    extra.update({"search_seconds": search_seconds, "resumed_from_generation": float(resumed_from)})
    if prepared.widths is not None:
        output = _width_records(prepared.widths, spec.structure, state, extra)
    elif prepared.geometry is None:
        output = _depth_records(model, state, extra)
    else:
        output = _level_records(prepared.geometry, state, extra)
    if workdir is not None:
        (workdir / STATE_FILE).unlink(missing_ok=True)  # the store now holds the result
    return output


def _search_metrics(state: SearchState, start: str, extra: dict[str, float]) -> list[Metric]:
    """What every space records: the budget spent, the fitness trace and the spread of the last stage."""
    measured = state.final_stage or [state.fitness]
    values = {
        "evaluations": float(state.evaluations),
        "best_fitness": state.fitness,
        f"{start}_fitness": state.history[0],
        "final_stage_count": float(len(state.final_stage)),
        "final_stage_min": min(measured),
        "final_stage_median": statistics.median(measured),
        "final_stage_max": max(measured),
        "final_stage_std": statistics.pstdev(measured),
        **extra,
    }
    metrics = [Metric(name, float(value)) for name, value in values.items()]
    return metrics + [Metric("fitness", value, step) for step, value in enumerate(state.history)]


def _level_records(geometry: LevelGeometry, state: SearchState, extra: dict[str, float]) -> JobOutput:
    winner = state.parent
    step = {"level_step": float(geometry.step)} if not geometry.group else {}  # N:M: numel / M, per layer
    metrics = _search_metrics(state, "uniform", {
        "sparsity": geometry.sparsity_of(winner), **step, "layers_moved": float(sum(level != 0 for level in winner)),
        **extra})
    layers = []
    for index, (name, level) in enumerate(zip(geometry.names, winner)):
        count = geometry.count(index, level)
        layers.append(LayerStat(
            layer=name, block=block_index(name), shape=geometry.shapes[index],
            target_sparsity=geometry.target(index, level), achieved_sparsity=count / geometry.numel(index),
            pattern=str(geometry.pattern(level)),
            extra={"level": level, "pruned": count, "low": geometry.low[index], "high": geometry.high[index]}))
    return JobOutput(metrics=metrics, layers=layers)


def _width_records(geometry: WidthGeometry, structure: str, state: SearchState, extra: dict[str, float]) -> JobOutput:
    """One row per block and kind, as a structured prune run records its heads and channels."""
    winner = state.parent
    metrics = _search_metrics(state, "uniform", {
        "sparsity": geometry.sparsity_of(winner), "layers_moved": float(sum(level != 0 for level in winner)), **extra})
    layers = []
    for index, (key, level) in enumerate(zip(geometry.keys, winner)):
        removed, units = geometry.removed(index, level), geometry.units[index]
        layers.append(LayerStat(
            layer=key, block=int(key.rsplit(".", 2)[1]), shape=(1, units), target_sparsity=removed / units,
            achieved_sparsity=removed / units, pattern=f"structured:{structure}",
            extra={"level": level, "removed": removed, "kept": units - removed, "units": units,
                   "low": geometry.low[index], "high": geometry.high[index]}))
    return JobOutput(metrics=metrics, layers=layers)


def _depth_records(model: nn.Module, state: SearchState, extra: dict[str, float]) -> JobOutput:
    """One row per block, as a structured prune run of blocks records them (1 = dropped)."""
    layout = model_layout(model)
    parameters = layout.block_parameters()
    dropped = sum(parameters[i] for i, level in enumerate(state.parent) if level)
    metrics = _search_metrics(state, "start", {
        "sparsity": dropped / sum(parameters), "blocks_dropped": float(sum(state.parent)), **extra})
    layers = [LayerStat(layer=f"{layout.prefix}.{block}", block=block, shape=(1, 1), target_sparsity=float(level),
                        achieved_sparsity=float(level), pattern="structured:blocks", extra={"kept": int(not level)})
              for block, level in enumerate(state.parent)]
    return JobOutput(metrics=metrics, layers=layers)


def _finished_search(spec: Any, space: str, job: JobContext | None) -> tuple[Any, dict[str, Any]]:
    """The finished search run that a prune spec names in ``allocation_params.run`` (a run id, a unique prefix
    of one, or a key), checked against the prune spec: the same model, and a search of ``space``."""
    from workbench import queries
    from workbench.store import Store

    store = (job.store if job is not None else None) or Store()
    reference = str(spec.allocation_params["run"]).strip()
    if len(reference) == 64 and all(c in "0123456789abcdef" for c in reference):
        found = store.finished_run(reference)
        if found is None:
            raise SpecError(f"no finished search run has key {reference[:12]}... in {store.location}",
                            "run the search spec first (workbench run), or name its run id")
        reference = found["run_id"]
    record = queries.run(store, reference)
    if record["kind"] != "search" or record["status"] != "finished":
        raise SpecError(f"run {record['run_id']} is a {record['status']} {record['kind']} run, not a finished search",
                        "name a finished run of kind search in allocation_params.run")
    searched = record["spec"]
    if searched["model"] != spec.model or record["identity"].get("model") != model_identity(spec.model):
        raise SpecError(f"search run {record['run_id']} searched model {searched['model']}, not {spec.model}",
                        f"prune model {searched['model']}, or search {spec.model}")
    searched_space = searched.get("space", "unstructured")
    if searched_space != space:
        fix = {"depth": "name it from a prune spec with structure: blocks",
               "nm": f"name it from a prune spec with pattern: {_searched_pattern(searched)}"}.get(
                   searched_space, f"name a search of space {space}")
        raise SpecError(f"search run {record['run_id']} searched space {searched_space}, which this prune spec "
                        f"cannot apply", fix)
    return store, record


def _searched_pattern(searched: dict[str, Any]) -> str:
    return str(Pattern.model_validate(searched["pattern"])) if searched.get("pattern") else "unstructured"


def search_targets(spec: Any, layers: dict[str, nn.Module], job: JobContext | None = None) -> dict[str, float]:
    """The per-layer targets of the finished unstructured (or, for an N:M prune spec, N:M) search run that a
    prune spec names, checked against it: same model, sparsity and pattern, the same layers."""
    from workbench import queries

    store, record = _finished_search(spec, "nm" if spec.pattern.is_nm else "unstructured", job)
    searched = record["spec"]
    if spec.pattern.is_nm and _searched_pattern(searched) != str(spec.pattern):
        raise SpecError(f"search run {record['run_id']} searched around pattern {_searched_pattern(searched)}, not "
                        f"{spec.pattern}", f"set pattern: {_searched_pattern(searched)}")
    if spec.pattern.is_nm and spec.method not in NM_METHODS:
        raise SpecError(f"method {spec.method!r} prunes every layer to the spec's own N:M, not a searched one per "
                        "layer", f"use method: {' or '.join(NM_METHODS)}")
    if abs(float(searched["sparsity"]) - float(spec.sparsity)) > 1e-12:
        raise SpecError(f"search run {record['run_id']} searched sparsity {searched['sparsity']:g}, "
                        f"not {spec.sparsity:g}", f"set sparsity: {searched['sparsity']:g}")
    frame = queries.layer_stats(store, [record["run_id"]])
    targets = {str(layer): float(target) for layer, target in zip(frame["layer"], frame["target_sparsity"])}
    if set(targets) != set(layers):
        odd = sorted(set(targets) ^ set(layers))[0]
        raise SpecError(f"search run {record['run_id']} and this prune spec differ in layer {odd}",
                        "prune the same layers the search searched (no prune_embeddings / prune_head)")
    return targets


def search_widths(spec: Any, job: JobContext | None = None) -> dict[str, int]:
    """The units each block loses (per structured mask key) in the finished structured search run that a
    structured prune spec names: the same structure, criterion and its parameters, head unit and sparsity."""
    from workbench import queries

    store, record = _finished_search(spec, "structured", job)
    searched = record["spec"]
    for field, ours in (("structure", spec.structure), ("prune_method", spec.method), ("prune_params", spec.params),
                        ("head_unit", spec.head_unit)):
        theirs = searched.get(field, "group" if field == "head_unit" else None)
        if theirs != ours:
            name = {"prune_method": "method", "prune_params": "params"}.get(field, field)
            raise SpecError(f"search run {record['run_id']} searched with {name} {theirs}, not {ours}",
                            f"set {name}: {theirs}")
    if abs(float(searched["sparsity"]) - float(spec.sparsity)) > 1e-12:
        raise SpecError(f"search run {record['run_id']} searched sparsity {searched['sparsity']:g}, "
                        f"not {spec.sparsity:g}", f"set sparsity: {searched['sparsity']:g}")
    if spec.channel_multiple != 1:
        raise SpecError("the searched widths are per channel; channel_multiple would round them",
                        "drop channel_multiple")
    frame = queries.layer_stats(store, [record["run_id"]])
    return {str(layer): int(json.loads(extra)["removed"]) for layer, extra in zip(frame["layer"], frame["extra"])}


def search_blocks(spec: Any, model: nn.Module, job: JobContext | None = None) -> torch.Tensor:
    """The blocks kept by the finished depth search run that a structured prune spec (``structure: blocks``)
    names: one bool per block, True = kept. The prune spec's sparsity must drop as many blocks."""
    from workbench import queries

    store, record = _finished_search(spec, "depth", job)
    frame = queries.layer_stats(store, [record["run_id"]]).sort_values("block")
    levels = [int(round(sparsity)) for sparsity in frame["achieved_sparsity"]]
    parameters = model_layout(model).block_parameters()
    if len(levels) != len(parameters):
        raise SpecError(f"search run {record['run_id']} searched {len(levels)} blocks; {spec.model} has "
                        f"{len(parameters)}", "prune the model the search searched")
    dropped, count = sum(levels), blocks_for_sparsity(parameters, spec.sparsity)
    if count != dropped:
        raise SpecError(f"search run {record['run_id']} dropped {dropped} of {len(levels)} blocks; sparsity "
                        f"{spec.sparsity:g} drops {count}", f"set sparsity: {dropped / len(levels):g}")
    return kept_mask(tuple(levels))
