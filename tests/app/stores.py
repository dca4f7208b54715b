"""Stores the app tests read: the default suite's baseline rows run for real on tiny-llama, plus rows written directly
through Store.start_run / finish_run (training, kernel benchmarks, OWL-style allocations, failures)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import torch

from tests.conftest import TINY_CALIBRATION, TINY_EVAL
from workbench.records import DivergenceRecord, JobOutput, LayerStat, MaskRecord, Metric
from workbench.store import Store
from workbench.suite import default_suite
from workbench.sweeps import run_sweep

TRAIN_LAYERS = ["model.layers.0.mlp.up_proj", "model.layers.1.mlp.up_proj"]
TRAIN_STEPS = [0, 20, 40, 60]


def suite_store(path: Path) -> Store:
    """The default suite's baseline rows (dense, random 50%, magnitude 50%, magnitude 2:4) on tiny-llama."""
    store = Store(path)
    specs = default_suite(kinds=["prune"], baseline=True, model="tiny-llama", calibration=TINY_CALIBRATION, evaluation=TINY_EVAL)
    results = run_sweep(specs, store, progress=False)
    assert all(r.status == "finished" for r in results), [r.error for r in results]
    return store


def _start(store: Store, key: str, kind: str, spec: dict, summary: dict) -> str:
    return store.start_run(key, kind, json.dumps(spec, sort_keys=True), summary, {"model": "synthetic"}, None)


def add_failed_runs(store: Store) -> list[str]:
    """One failed and one still-running run (what a crashed job and a live one leave behind)."""
    spec = {"kind": "prune", "model": "tiny-llama", "method": "magnitude", "sparsity": 0.9, "data": "shakespeare"}
    failed = _start(store, "f" * 64, "prune", spec,
                    {"model": "tiny-llama", "method": "magnitude", "pattern": "unstructured", "target_sparsity": 0.9})
    store.fail_run(failed, "PruningError: sparsity 0.9 leaves a layer with no weights. Fix: lower the sparsity.")
    running = _start(store, "e" * 64, "prune", {**spec, "sparsity": 0.8},
                     {"model": "tiny-llama", "method": "magnitude", "pattern": "unstructured", "target_sparsity": 0.8})
    return [failed, running]


def add_allocation_run(store: Store) -> str:
    """A run with per-layer targets that differ, reconstruction errors and OWL outlier ratios."""
    spec = {"kind": "prune", "model": "tiny-llama", "method": "wanda", "sparsity": 0.7, "allocation": "owl",
            "allocation_params": {"lambda_": 0.08, "outlier_threshold": 5.0}, "data": "shakespeare"}
    run_id = _start(store, "a" * 64, "prune", spec, {"model": "tiny-llama", "method": "wanda", "pattern": "unstructured",
                                                     "allocation": "owl", "target_sparsity": 0.7})
    layers = []
    for block in range(2):
        target = 0.7 + (0.05 if block == 0 else -0.05)
        for part in ("self_attn.q_proj", "mlp.up_proj"):
            layers.append(LayerStat(f"model.layers.{block}.{part}", block, (32, 32), target, target + 0.001,
                                    "unstructured", recon_error=0.1 * (block + 1),
                                    extra={"outlier_ratio": 0.02 + 0.03 * block}))
    store.finish_run(run_id, "a" * 64, JobOutput(metrics=[Metric("sparsity", 0.7), Metric("perplexity", 310.0)],
                                                 layers=layers), 1.0)
    return run_id


def add_training_run(store: Store) -> str:
    """SR-STE-like training: loss/accuracy per step, mask snapshots and SAD between consecutive snapshots."""
    spec = {"kind": "train", "model": "tiny-llama", "method": "sr_ste", "pattern": "2:4", "steps": 60, "lr": 0.001}
    run_id = _start(store, "b" * 64, "train", spec, {"model": "tiny-llama", "method": "sr_ste", "pattern": "2:4",
                                                     "target_sparsity": 0.5})
    generator = torch.Generator().manual_seed(0)
    metrics = []
    for step in range(0, 61, 10):
        metrics += [Metric("loss", 5.0 * math.exp(-step / 30), step), Metric("accuracy", 0.2 + step / 100, step)]
    masks, divergence, previous, previous_step = [], [], {}, None
    for step in TRAIN_STEPS:
        for layer in TRAIN_LAYERS:
            scores = torch.rand(16, 32, generator=generator).view(16, 8, 4)
            keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(2, scores.topk(2, dim=2).indices, True)
            mask = keep.view(16, 32)
            masks.append(MaskRecord(layer, mask, step))
            if layer in previous:
                before = previous[layer]
                differ = int((before ^ mask).sum())
                divergence.append(DivergenceRecord(layer, differ, mask.numel(),
                                                   int((before & mask).sum()) / int((before | mask).sum()),
                                                   step_a=previous_step, step_b=step))
            previous[layer] = mask
        previous_step = step
    layers = [LayerStat(layer, i, (16, 32), 0.5, 0.5, "2:4", nm_valid=True) for i, layer in enumerate(TRAIN_LAYERS)]
    store.finish_run(run_id, "b" * 64, JobOutput(metrics=metrics + [Metric("sparsity", 0.5)], layers=layers,
                                                 masks=masks, divergence=divergence), 2.0)
    return run_id


def add_kernel_run(store: Store, pruned_run: str) -> str:
    """A kernel benchmark: 2:4 and block-sparse backends over tokens, two shapes, one unsupported case,
    machine ceilings, and the latency of the model pruned by ``pruned_run`` (prefill and decode)."""
    run_id = _start(store, "c" * 64, "bench", {"kind": "bench", "backends": ["cusparselt", "bsr"]}, {})
    rows = []
    for out_features, in_features in ((2048, 2048), (4096, 1024)):
        for dtype in ("float16", "bfloat16"):
            for tokens in (1, 16, 256, 4096):
                for backend, gain in (("cusparselt", 1.6), ("bsr", 0.7)):
                    for timing, overhead in (("graph", 1.0), ("eager", 0.5)):  # eager: launch costs eat the gain
                        speedup = gain * overhead * (1 - 0.3 / (1 + tokens / 64))
                        rows.append({"case_id": f"{out_features}x{in_features}-t{tokens}", "phase": "kernel",
                                     "backend": backend, "dtype": dtype, "out_features": out_features,
                                     "in_features": in_features, "tokens": tokens, "pattern": "2:4", "sparsity": 0.5,
                                     "timing": timing, "median_us": 100 / speedup, "speedup": speedup,
                                     "roofline_fraction": min(0.95, 0.3 + tokens / 8192), "status": "ok",
                                     # cuSPARSELt's graph rows were also timed in steady blocks
                                     "extra": json.dumps({"speedup_steady": 0.9 * speedup,
                                                          "tuned": {"alg_id": 2, "split_k": 1,
                                                                    "transpose_result": True}}
                                                         if (backend, timing) == ("cusparselt", "graph") else {})})
    rows.append({"case_id": "2048x2048-1-float16-cutlass", "phase": "kernel", "backend": "cutlass",
                 "dtype": "float16", "out_features": 2048, "in_features": 2048, "tokens": 1, "pattern": "2:4",
                 "sparsity": 0.5, "status": "unsupported",
                 "error": "Supported only on GPUs with compute capability 8.x"})
    for phase, sizes in (("prefill", (128, 512)), ("decode", (1, 8))):
        for size in sizes:
            rows.append({"case_id": f"{phase}-{size}", "phase": phase, "model": "tiny-llama", "backend": "cusparselt",
                         "dtype": "float16", "tokens": size, "batch": size if phase == "decode" else 1,
                         "timing": "graph",
                         "median_us": 900.0 / size ** 0.5, "speedup": 1.1 + 0.05 * size ** 0.5,
                         "tokens_per_s": 1000.0 * size, "source_run": pruned_run, "status": "ok"})
    for size in (128, 512):  # the same prefill with both models compiled: another setup, another line
        rows.append({"case_id": f"prefill-{size}", "phase": "prefill", "model": "tiny-llama", "backend": "cusparselt",
                     "dtype": "float16", "tokens": size, "batch": 1, "timing": "graph", "median_us": 700.0 / size ** 0.5,
                     "speedup": 1.3 + 0.05 * size ** 0.5, "tokens_per_s": 1300.0 * size, "source_run": pruned_run,
                     "status": "ok", "extra": json.dumps({"compiled": True, "fused": False})})
    rows.append({"case_id": "ceiling-copy", "phase": "ceiling", "gbps": 3900.0, "status": "ok"})
    store.finish_run(run_id, "c" * 64, JobOutput(metrics=[Metric("model_latency_ms", 12.5), Metric("speedup", 1.3)],
                                                 kernel_results=rows), 3.0)
    return run_id


def rich_store(suite_path: Path, path: Path) -> tuple[Store, dict[str, object]]:
    """A copy of the suite store with every kind of row the pages show."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(suite_path, path)
    store = Store(path)
    from workbench import queries

    suite = queries.runs(store)
    nm_run = suite.loc[suite["pattern"] == "2:4", "run_id"].iloc[0]
    by_name = {(m if p == "unstructured" else p): r for m, p, r in zip(suite["method"], suite["pattern"], suite["run_id"])}
    ids = {"suite": by_name, "nm": nm_run, "failed": add_failed_runs(store),
           "owl": add_allocation_run(store), "train": add_training_run(store), "bench": add_kernel_run(store, nm_run)}
    return store, ids


# ---------------------------------------------------------------- several models, seeds, structured runs, a CPU bench

SMOL_BLOCKS = 30
SMOL_PARTS = {"self_attn.q_proj": (576, 576), "self_attn.k_proj": (192, 576), "self_attn.v_proj": (192, 576),
              "self_attn.o_proj": (576, 576), "mlp.gate_proj": (1536, 576), "mlp.up_proj": (1536, 576),
              "mlp.down_proj": (576, 1536)}
SMOL_HEADS, SMOL_CHANNELS = 9, 1536


def _prune_spec(model: str, method: str, sparsity: float | None, seed: int = 0, pattern: str = "unstructured",
                data: str = "shakespeare", **more) -> dict:
    keep, group = (int(v) for v in pattern.split(":")) if ":" in pattern else (None, None)
    spec = {"kind": "prune", "model": model, "data": data, "method": method, "params": {}, "sparsity": sparsity,
            "pattern": {"name": "nm" if keep else "unstructured", "keep": keep, "group": group},
            "allocation": "uniform", "allocation_params": {}, "calibration": {"samples": 64, "seq_len": 512, "seed": seed},
            "evaluation": {"windows": 64, "seq_len": 512}, "prune_embeddings": False, "prune_head": False}
    spec.update(more)
    return spec


def _write(store: Store, spec: dict, summary: dict, output: JobOutput, wall_s: float = 10.0) -> str:
    text = json.dumps(spec, sort_keys=True)
    key = hashlib.sha256(text.encode()).hexdigest()
    run_id = store.start_run(key, spec["kind"], text, summary, {"model": "synthetic"}, spec.get("name"))
    store.finish_run(run_id, key, output, wall_s)
    return run_id


def _smol_layers(sparsity: float, pattern: str, scale: float) -> list[LayerStat]:
    rows = []
    for block in range(SMOL_BLOCKS):
        for index, (part, shape) in enumerate(SMOL_PARTS.items()):
            # reconstruction errors over four decades: a log axis with ticks between the powers of ten
            error = scale * 10 ** (-2 + 4 * block / (SMOL_BLOCKS - 1)) * (1 + index / 10)
            rows.append(LayerStat(f"model.layers.{block}.{part}", block, shape, sparsity, sparsity + 1e-4 * (index - 3),
                                  pattern, recon_error=error if sparsity else None))
    return rows


def add_smollm2_runs(store: Store) -> dict[str, object]:
    """SmolLM2-135M: a dense baseline, Wanda at 50% over three calibration seeds and 70% over two, one
    magnitude run, a structured (heads and channels) run at two sparsities with parameter counts, each
    unstructured run with 210 layer rows (30 blocks x 7 linear layers) and reconstruction errors."""
    ids: dict[str, object] = {"wanda50": [], "wanda70": []}
    cases = [("dense", "dense", 0.0, 0, 20.0), ("magnitude50", "magnitude", 0.5, 0, 60.0)]
    cases += [("wanda50", "wanda", 0.5, seed, ppl) for seed, ppl in ((0, 24.0), (1, 25.0), (2, 26.0))]
    cases += [("wanda70", "wanda", 0.7, seed, ppl) for seed, ppl in ((0, 40.0), (1, 44.0))]
    for name, method, sparsity, seed, perplexity in cases:
        spec = _prune_spec("smollm2-135m", method, sparsity if method != "dense" else 0.0, seed,
                           **({"name": "smol baseline"} if method == "dense" else {}))
        summary = {"model": "smollm2-135m", "data": "shakespeare", "method": method, "pattern": "unstructured",
                   "allocation": "uniform", "target_sparsity": spec["sparsity"]}
        output = JobOutput(metrics=[Metric("sparsity", sparsity), Metric("perplexity", perplexity),
                                    Metric("prune_seconds", 5.0 + seed)],
                           layers=_smol_layers(sparsity, "unstructured", 1.0 + seed / 10))
        run_id = _write(store, spec, summary, output)
        if isinstance(ids.get(name), list):
            ids[name].append(run_id)
        else:
            ids[name] = run_id
    for name, sparsity, parameters, perplexity in (("structured30", 0.3, 1.1e8, 45.0), ("structured50", 0.5, 0.9e8, 90.0)):
        spec = _prune_spec("smollm2-135m", "wanda-structured", sparsity, structure="heads+channels")
        pattern = "structured:heads+channels"
        summary = {"model": "smollm2-135m", "data": "shakespeare", "method": "wanda-structured", "pattern": pattern,
                   "allocation": "uniform", "target_sparsity": sparsity}
        layers, masks = [], []
        for block in range(SMOL_BLOCKS):
            heads = SMOL_HEADS - (block % 4) - (2 if sparsity > 0.4 else 0)
            channels = int(SMOL_CHANNELS * (1 - sparsity)) - 8 * block
            for unit, kept, total in (("heads", heads, SMOL_HEADS), ("channels", channels, SMOL_CHANNELS)):
                mask = torch.zeros(1, total, dtype=torch.bool)
                mask[0, :kept] = True
                layer = f"model.layers.{block}.{unit}"
                layers.append(LayerStat(layer, block, (1, total), sparsity, 1 - kept / total, pattern,
                                        extra={"kept": kept, "units": total}))
                masks.append(MaskRecord(layer, mask))
        output = JobOutput(metrics=[Metric("sparsity", sparsity), Metric("perplexity", perplexity),
                                    Metric("parameters", parameters), Metric("blocks_kept", float(SMOL_BLOCKS))],
                           layers=layers, masks=masks)
        ids[name] = _write(store, spec, summary, output)
    return ids


def add_fashion_runs(store: Store) -> dict[str, str]:
    """fashion-cnn training runs (accuracy; seeds in the spec's own `seed` field), layers without blocks."""
    ids = {}
    for name, method, seed, accuracy in (("dense", "dense", 0, 0.91), ("srste0", "sr-ste", 0, 0.88),
                                         ("srste1", "sr-ste", 1, 0.86)):
        spec = {"kind": "train", "model": "fashion-cnn", "data": "fashion-mnist", "method": method, "seed": seed,
                "sparsity": 0.0 if method == "dense" else 0.5, "steps": 40}
        summary = {"model": "fashion-cnn", "data": "fashion-mnist", "method": method, "pattern": "unstructured",
                   "target_sparsity": spec["sparsity"]}
        metrics = [Metric("accuracy", accuracy), Metric("sparsity", spec["sparsity"])]
        metrics += [Metric("loss", 2.0 - step / 40, step) for step in (0, 20, 40)]
        layers = [LayerStat(layer, None, shape, spec["sparsity"], spec["sparsity"], "unstructured")
                  for layer, shape in (("conv1", (32, 9)), ("fc1", (128, 1568)))]
        ids[name] = _write(store, spec, summary, JobOutput(metrics=metrics, layers=layers))
    return ids


def add_cpu_bench_run(store: Store, timed_run: str) -> str:
    """A kernel benchmark on a CPU: wall-clock timing, one-time conversion costs (timing `once`), and the
    prefill latency of the model pruned by ``timed_run``."""
    spec = {"kind": "bench", "device": "cpu", "backends": ["csr"]}
    rows = []
    for tokens in (1, 16, 256, 4096):
        speedup = 0.4 + tokens / 8192
        rows.append({"case_id": f"576x1536-t{tokens}", "phase": "kernel", "backend": "csr", "dtype": "float32",
                     "out_features": 576, "in_features": 1536, "tokens": tokens, "pattern": "unstructured",
                     "sparsity": 0.5, "timing": "wall", "median_us": 50.0 / speedup, "speedup": speedup, "status": "ok"})
    rows.append({"case_id": "convert-csr", "phase": "setup", "backend": "csr", "dtype": "float32", "timing": "once",
                 "median_us": 2e5, "status": "ok"})
    for tokens in (128, 512):
        rows.append({"case_id": f"prefill-{tokens}", "phase": "prefill", "model": "smollm2-135m", "backend": "csr",
                     "dtype": "float32", "tokens": tokens, "batch": 1, "timing": "wall", "median_us": 9000.0,
                     "speedup": 1.2, "source_run": timed_run, "status": "ok"})
    return _write(store, spec, {}, JobOutput(kernel_results=rows), 30.0)


def multi_model_store(suite_path: Path, path: Path) -> tuple[Store, dict[str, object]]:
    """The suite's tiny-llama runs, then SmolLM2 runs (the most runs), fashion-cnn training runs and a CPU
    kernel benchmark; the newest prune or train run is a fashion-cnn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(suite_path, path)
    store = Store(path)
    smol = add_smollm2_runs(store)
    fashion = add_fashion_runs(store)
    bench = add_cpu_bench_run(store, smol["wanda50"][0])
    return store, {"smol": smol, "fashion": fashion, "bench": bench}


# ---------------------------------------------------------------- downstream task scores

TASKS = ["shakespeare-lastword", "shakespeare-nextline"]
TASK_ACC = "shakespeare-lastword/acc"


def task_store(path: Path) -> tuple[Store, dict[str, str]]:
    """SmolLM2 prune runs scored on two local tasks (``<task>/acc`` with its ``_stderr``, ``acc_norm``,
    ``documents``), chosen so that perplexity and accuracy have different Pareto fronts: at 50% SparseGPT
    has the lower perplexity and Wanda the higher accuracy, at 70% Wanda the lower perplexity and magnitude
    the higher accuracy. Beside them a tiny-llama model without task scores and an encoder run."""
    store = Store(path)
    ids: dict[str, str] = {}
    cases = [("dense", "dense", 0.0, 20.0, 0.50), ("sparsegpt50", "sparsegpt", 0.5, 24.0, 0.40),
             ("wanda50", "wanda", 0.5, 25.0, 0.42), ("magnitude50", "magnitude", 0.5, 60.0, 0.30),
             ("wanda70", "wanda", 0.7, 40.0, 0.20), ("magnitude70", "magnitude", 0.7, 90.0, 0.25)]
    for name, method, sparsity, perplexity, accuracy in cases:
        spec = _prune_spec("smollm2-135m", method, sparsity, evaluation={"windows": 64, "seq_len": 512, "tasks": TASKS})
        summary = {"model": "smollm2-135m", "data": "shakespeare", "method": method, "pattern": "unstructured",
                   "allocation": "uniform", "target_sparsity": sparsity}
        metrics = [Metric("sparsity", sparsity), Metric("perplexity", perplexity),
                   Metric(TASK_ACC, accuracy), Metric(f"{TASK_ACC}_stderr", 0.05),
                   Metric("shakespeare-lastword/documents", 40.0),
                   Metric("shakespeare-nextline/acc", accuracy + 0.1), Metric("shakespeare-nextline/acc_stderr", 0.04),
                   Metric("shakespeare-nextline/acc_norm", accuracy + 0.2),
                   Metric("shakespeare-nextline/acc_norm_stderr", 0.04), Metric("shakespeare-nextline/documents", 50.0)]
        ids[name] = _write(store, spec, summary, JobOutput(metrics=metrics))
    for method, sparsity, perplexity in (("dense", 0.0, 300.0), ("magnitude", 0.5, 900.0)):
        summary = {"model": "tiny-llama", "data": "shakespeare", "method": method, "pattern": "unstructured",
                   "allocation": "uniform", "target_sparsity": sparsity}
        ids[f"tiny-{method}"] = _write(store, _prune_spec("tiny-llama", method, sparsity), summary,
                                       JobOutput(metrics=[Metric("sparsity", sparsity), Metric("perplexity", perplexity)]))
    summary = {"model": "minilm-l6", "data": "shakespeare", "method": "magnitude", "pattern": "unstructured",
               "allocation": "uniform", "target_sparsity": 0.5}
    ids["encoder"] = _write(store, _prune_spec("minilm-l6", "magnitude", 0.5), summary,
                            JobOutput(metrics=[Metric("sparsity", 0.5), Metric("embedding_cosine", 0.9)]))
    return store, ids


# ---------------------------------------------------------------- tags, notes and deletions

def notes_store(path: Path) -> tuple[Store, dict[str, object]]:
    """SmolLM2 prune runs to annotate and delete: a dense run whose spec gave the tag ``baseline``, Wanda at
    50% over two calibration seeds (one point on the Compare chart), magnitude at 50% with layer stats and a
    mask it shares with no other run, and a run still running."""
    store = Store(path)
    ids: dict[str, object] = {"wanda": []}
    for name, method, sparsity, seed, perplexity in (("dense", "dense", 0.0, 0, 20.0), ("wanda", "wanda", 0.5, 0, 24.0),
                                                     ("wanda", "wanda", 0.5, 1, 26.0),
                                                     ("magnitude", "magnitude", 0.5, 0, 60.0)):
        spec = _prune_spec("smollm2-135m", method, sparsity, seed)
        text = json.dumps(spec, sort_keys=True)
        key = hashlib.sha256(text.encode()).hexdigest()
        summary = {"model": "smollm2-135m", "data": "shakespeare", "method": method, "pattern": "unstructured",
                   "allocation": "uniform", "target_sparsity": sparsity}
        run_id = store.start_run(key, "prune", text, summary, {"model": "synthetic"}, None,
                                 ("baseline",) if method == "dense" else ())
        mask = torch.arange(64).view(8, 8) % (seed + 3) != 0
        output = JobOutput(metrics=[Metric("sparsity", sparsity), Metric("perplexity", perplexity)],
                           layers=[LayerStat("model.layers.0.mlp.up_proj", 0, (8, 8), sparsity, sparsity, "unstructured")],
                           masks=[MaskRecord("model.layers.0.mlp.up_proj", mask)] if method == "magnitude" else [])
        store.finish_run(run_id, key, output, 10.0)
        if name == "wanda":
            ids["wanda"].append(run_id)
        else:
            ids[name] = run_id
    ids["running"] = _start(store, "r" * 64, "prune", _prune_spec("smollm2-135m", "sparsegpt", 0.5),
                            {"model": "smollm2-135m", "data": "shakespeare", "method": "sparsegpt",
                             "pattern": "unstructured", "target_sparsity": 0.5})
    return store, ids
