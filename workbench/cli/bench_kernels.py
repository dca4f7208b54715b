"""What `workbench bench kernels|latency|suite|report|build-sm90` do (the typer wrappers live in workbench/cli.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def _use_store(store_path: Path | None) -> Any:
    """The store, also as the default one of this process: the latency job reads masks from it."""
    from workbench.store import Store

    if store_path is not None:
        os.environ["WORKBENCH_STORE"] = str(store_path)
    return Store(store_path)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_masks_key(store: Any, run: str | None) -> tuple[str | None, str | None]:
    """(key, run_id) of the pruning run a prefix names."""
    if not run:
        return None, None
    from workbench import queries

    record = queries.run(store, run)
    if record["kind"] != "prune" or record["status"] != "finished":
        from workbench.kernels.spec import BenchError

        raise BenchError(f"run {record['run_id']} is not a finished pruning run", "give a run listed by `workbench ls`")
    return record["key"], record["run_id"]


def incomplete(store: Any, spec: Any) -> bool:
    """A finished run of the spec's key that left cases out (a time budget): worth running again."""
    from workbench import queries
    from workbench.spec import job_key

    found = store.finished_run(job_key(spec))
    if found is None:
        return False
    return queries.run(store, found["run_id"])["metrics"].get("skipped", 0) > 0


def run_specs(specs: list, store: Any, force: bool, as_json: bool) -> list:
    from workbench.kernels.report import bench_rows, print_report
    from workbench.runner import run_sweep

    results = []
    for spec in specs:  # a run that a time budget cut short is not served from the cache
        results += run_sweep([spec], store, force=force or incomplete(store, spec), progress=not as_json)
    run_ids = [r.run_id for r in results if r.run_id]
    if as_json:
        rows = bench_rows(store, run_ids)
        print(json.dumps({"runs": [r.as_dict() for r in results],
                          "rows": json.loads(rows.to_json(orient="records"))}, default=str, indent=1))
    else:
        print_report(bench_rows(store, run_ids))
        for spec, result in zip(specs, results):
            state = "cached" if result.cached else result.status
            print(f"{spec.name or spec.target}: run {result.run_id or '-'} ({state})"
                  + (f": {result.error}" if result.error else ""))
    return results


def kernels_command(store_path: Path | None, device: str, backends: list[str], dtypes: list[str], shapes: list[str],
                    tokens: list[int], sparsity: float, block: int, budget_ms: float | None, model_shapes: bool,
                    force: bool, as_json: bool) -> list:
    from workbench.kernels.spec import BenchSpec
    from workbench.kernels.suites import store_shapes

    store = _use_store(store_path)
    device = resolve_device(device)
    if model_shapes:
        from workbench.kernels.spec import CPU_SHAPES, GPU_SHAPES

        shapes = list(dict.fromkeys([*(shapes or (GPU_SHAPES if device == "cuda" else CPU_SHAPES)),
                                     *store_shapes(store)]))
    spec = BenchSpec.model_validate({
        "kind": "bench", "device": device, "name": "kernels",
        "kernels": {"backends": backends, "dtypes": dtypes, "shapes": shapes, "tokens": tokens,
                    "sparsity": sparsity, "block": block},
        "timing": {"budget_ms": budget_ms}})
    return run_specs([spec], store, force, as_json)


def latency_command(store_path: Path | None, device: str, model: str, random_weights: bool, variants: list[str],
                    dtype: str | None, prefill: list[int], decode: list[int], context: int | None,
                    masks_run: str | None, force: bool, as_json: bool, fuse: bool = False,
                    compile_models: bool = False) -> list:
    from workbench.kernels.spec import BenchSpec

    store = _use_store(store_path)
    key, _ = resolve_masks_key(store, masks_run)
    spec = BenchSpec.model_validate({
        "kind": "bench", "target": "latency", "device": resolve_device(device), "name": f"{model} latency",
        "latency": {"model": model, "random_weights": random_weights, "variants": variants, "dtype": dtype,
                    "prefill_tokens": prefill, "decode_batches": decode, "decode_context": context,
                    "masks_key": key, "fuse": fuse, "compile": compile_models}})
    return run_specs([spec], store, force, as_json)


def suite_command(store_path: Path | None, device: str, masks_run: str | None, budget_s: float | None,
                  force: bool, as_json: bool, parts: list[str] | None = None) -> list:
    """The default suite of the device; with ``budget_s``, cases past the budget are left out (rows
    say so) so that the command ends in time and what was measured is stored; ``parts`` runs only the
    named parts (a host with a time limit per command runs the suite in pieces)."""
    from workbench.jobs.bench import DEADLINE_ENV
    from workbench.kernels.suites import cpu_suite, gpu_suite, latest_masks_run, store_shapes

    store = _use_store(store_path)
    device = resolve_device(device)
    if masks_run:
        key, _ = resolve_masks_key(store, masks_run)
    else:
        found = latest_masks_run(store)
        key = found["key"] if found is not None else None
    if budget_s is not None:
        os.environ[DEADLINE_ENV] = str(time.time() + budget_s)
    make = gpu_suite if device == "cuda" else cpu_suite
    return run_specs(select_parts(make(store_shapes(store), key), parts), store, force, as_json)


def select_parts(specs: list, parts: list[str] | None) -> list:
    """The suite's specs named in ``parts`` (all when none), in the suite's order."""
    if not parts:
        return specs
    names = [spec.name for spec in specs]
    unknown = [part for part in parts if part not in names]
    if unknown:
        from workbench.kernels.spec import BenchError

        raise BenchError(f"the suite has no part {unknown[0]!r}", "use one of: " + ", ".join(repr(n) for n in names))
    return [spec for spec in specs if spec.name in parts]


def build_sm90_command(jobs: int) -> Path:
    """Compile the semi24-sm90 backend's library (minutes per configuration, cached) and print its path."""
    from workbench.kernels.sm90_sparse.build import build

    path = build(jobs=jobs)
    print(path)
    return path


def report_command(store_path: Path | None, run_ids: list[str] | None, as_json: bool) -> None:
    from workbench import queries
    from workbench.kernels.report import bench_rows, print_report, targets

    store = _use_store(store_path)
    if not run_ids:
        runs = queries.runs(store, kind="bench", status="finished")
        run_ids = list(runs["run_id"]) if not runs.empty else []
    else:
        run_ids = [queries.run(store, r)["run_id"] for r in run_ids]
    rows = bench_rows(store, run_ids)
    if as_json:
        print(json.dumps({"targets": targets(rows), "rows": json.loads(rows.to_json(orient="records"))},
                         default=str, indent=1))
    elif rows.empty:
        print("no benchmark rows yet: run `workbench bench suite` or `workbench bench kernels`")
    else:
        print_report(rows)
