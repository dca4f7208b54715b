"""What `workbench bench kernels|latency|suite|report|build-sm90` do (the typer wrappers live in
``workbench/cli/bench.py``), and the store reads they need (shapes of pruned models, masks, rows):
the kernel code itself never reads the store.

Imported when the command line starts: everything that imports torch or pandas loads inside the
functions."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence


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


def bench_rows(store: Any = None, run_ids: Iterable[str] | None = None) -> Any:
    """The kernel_results rows of bench runs, as the report's tables take them (a DataFrame)."""
    import pandas as pd

    from workbench import queries

    frame = queries.kernel_results(store, run_ids)
    if frame.empty or "phase" not in frame:
        return pd.DataFrame(columns=["run_id", "phase", "backend", "dtype", "status"])
    return frame


def store_shapes(store: Any = None) -> tuple[str, ...]:
    """Weight shapes (OUTxIN) of the layers of every model pruned in the store."""
    from workbench import queries

    layers = queries.layer_stats(store)
    if layers.empty:
        return ()
    shapes = [s for s in layers["shape"].dropna().unique() if isinstance(s, str) and s.count("x") == 1]
    return tuple(sorted(shapes, key=lambda s: [int(v) for v in s.split("x")]))


def latest_masks_run(store: Any = None, model: str = "smollm2-135m", pattern: str | None = "2:4") -> Any:
    """The newest finished pruning run of ``model`` (with ``pattern``), a row of ``queries.runs`` or
    None: its masks feed the latency."""
    from workbench import queries

    runs = queries.runs(store, status="finished", kind="prune", model=model)
    if pattern is not None and not runs.empty:
        runs = runs[runs["pattern"] == pattern]
    return None if runs.empty else runs.iloc[0]


def with_time_budget(spec: Any, seconds: float) -> Any:
    """The spec with ``timing.time_budget_s`` set (a spec of its own key)."""
    return spec.model_copy(update={"timing": spec.timing.model_copy(update={"time_budget_s": seconds})})


def run_specs(specs: list, store: Any, force: bool, as_json: bool, budget_s: float | None = None) -> list:
    """Run the specs in order and print their rows. With ``budget_s``, the specs share it: each gets what
    is left of it when it starts (in whole seconds, so that the first, and a spec after cached ones,
    gets the budget itself and keeps one key from one invocation to the next)."""
    from workbench.kernels.report.tables import print_report
    from workbench.records import INCOMPLETE
    from workbench.sweeps import run_sweep

    results, ran = [], []
    started = time.monotonic()
    for spec in specs:
        if budget_s is not None:
            spec = with_time_budget(spec, max(0.0, budget_s - int(time.monotonic() - started)))
        ran.append(spec)
        results += run_sweep([spec], store, force=force, progress=not as_json)
    run_ids = [r.run_id for r in results if r.run_id]
    if as_json:
        rows = bench_rows(store, run_ids)
        print(json.dumps({"runs": [r.as_dict() for r in results],
                          "rows": json.loads(rows.to_json(orient="records"))}, default=str, indent=1))
    else:
        print_report(bench_rows(store, run_ids))
        for spec, result in zip(ran, results):
            state = "cached" if result.cached else result.status
            if result.metrics.get(INCOMPLETE):
                state += ", incomplete: the time budget ran out; the next run measures it again"
            print(f"{spec.name or spec.target}: run {result.run_id or '-'} ({state})"
                  + (f": {result.error}" if result.error else ""))
    return results


def kernels_command(*, store_path: Path | None = None, device: str = "auto", backends: Sequence[str] = (),
                    dtypes: Sequence[str] = (), shapes: Sequence[str] = (), tokens: Sequence[int] = (),
                    sparsity: float = 0.9, block: int = 64, budget_ms: float | None = None,
                    model_shapes: bool = True, force: bool = False, as_json: bool = False) -> list:
    """Time the kernel grid (empty lists: the device's defaults), plus the shapes of every model pruned
    in the store with ``model_shapes``."""
    from workbench.kernels.spec import BenchSpec

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


def latency_command(*, store_path: Path | None = None, device: str = "auto", model: str = "smollm2-135m",
                    random_weights: bool = True, variants: Sequence[str] = (), dtype: str | None = None,
                    prefill: Sequence[int] = (), decode: Sequence[int] = (), context: int | None = None,
                    masks_run: str | None = None, fuse: bool = False, compile_models: bool = False,
                    structure: str | None = None, sparsity: float | None = None, channel_multiple: int = 1,
                    force: bool = False, as_json: bool = False) -> list:
    """The latency of ``model`` with its linear layers behind each variant, against dense (empty lists:
    the device's defaults)."""
    from workbench.kernels.spec import BenchSpec

    store = _use_store(store_path)
    key, _ = resolve_masks_key(store, masks_run)
    spec = BenchSpec.model_validate({
        "kind": "bench", "target": "latency", "device": resolve_device(device), "name": f"{model} latency",
        "latency": {"model": model, "random_weights": random_weights, "variants": variants, "dtype": dtype,
                    "prefill_tokens": prefill, "decode_batches": decode, "decode_context": context,
                    "masks_key": key, "fuse": fuse, "compile": compile_models, "structure": structure,
                    "channel_multiple": channel_multiple, **({"sparsity": sparsity} if sparsity is not None else {})}})
    return run_specs([spec], store, force, as_json)


def suite_command(store_path: Path | None, device: str, masks_run: str | None, budget_s: float | None,
                  force: bool, as_json: bool, parts: list[str] | None = None) -> list:
    """The default suite of the device; with ``budget_s``, cases past the budget are left out (rows
    say so) so that the command ends in time and what was measured is stored: the parts share the
    budget, each a spec with the budget left when it starts (``timing.time_budget_s``), and a part cut
    short is stored as incomplete and measured again by the next run. ``parts`` runs only the named
    parts (a host with a time limit per command runs the suite in pieces)."""
    from workbench.kernels.suites import cpu_suite, gpu_suite

    store = _use_store(store_path)
    device = resolve_device(device)
    if masks_run:
        key, _ = resolve_masks_key(store, masks_run)
    else:
        found = latest_masks_run(store)
        key = found["key"] if found is not None else None
    make = gpu_suite if device == "cuda" else cpu_suite
    return run_specs(select_parts(make(store_shapes(store), key), parts), store, force, as_json, budget_s)


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
    from workbench.kernels.backends.sm90_sparse.build import build

    path = build(jobs=jobs)
    print(path)
    return path


def report_command(store_path: Path | None, run_ids: list[str] | None, as_json: bool) -> None:
    from workbench import queries
    from workbench.kernels.report.tables import print_report, targets

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
