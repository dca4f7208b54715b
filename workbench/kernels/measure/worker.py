"""The benchmark worker: ``python -m workbench.kernels.measure.worker TASK.json OUT.jsonl``.

Each backend runs in a worker process of its own (``isolation.py`` starts and watches it), because
some library faults poison the CUDA context for the rest of the process. The worker reads one task,
appends one JSON record per line to OUT as it goes (a case's ``start``, its result, its ``done``), and
exits 3 after a fault that poisoned the context, so that the parent restarts the remaining cases.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch

Emit = Callable[[dict[str, Any]], None]
EXIT_POISONED = 3


def _fault_hook(backend: str, case_id: str) -> None:
    """Test hook: WORKBENCH_KERNEL_FAULT=<backend>:<case_id>:crash|hang makes that case die or hang."""
    fault = os.environ.get("WORKBENCH_KERNEL_FAULT", "")
    if fault.count(":") != 2:
        return
    where, what = fault.rsplit(":", 1)
    if where == f"{backend}:{case_id}":
        if what == "crash":
            os._exit(139)
        time.sleep(3600)


def _first_call_seconds(backend: Any, dtype: str, device: str) -> float | None:
    """Seconds of the process's first prepare + matmul (library loading, handles): a one-time cost."""
    from workbench.kernels.measure.environment import DTYPES

    size = 256
    try:
        started = time.perf_counter()
        weight = torch.randn(size, size, device=device).to(DTYPES[dtype])
        if backend.pattern == "2:4":
            from workbench.kernels.backends.formats import semi24_mask

            weight = weight * semi24_mask(weight).to(weight.dtype)
        elif backend.pattern == "block":
            weight = weight.to_sparse_bsr((backend.block, backend.block)).to_dense()
        prepared = backend.prepare(weight, dtype)
        x = torch.randn(backend.padded_tokens(32, dtype), size, device=device).to(DTYPES[dtype])
        backend.matmul(prepared, x)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started
    except Exception:  # noqa: BLE001 - an unsupported backend: its cases record why
        return None


def run_kernels(task: dict[str, Any], emit: Emit) -> int:
    from workbench.kernels.backends import make_backend
    from workbench.kernels.backends.base import is_unsupported_error
    from workbench.kernels.measure.environment import device_info
    from workbench.kernels.measure.harness import SKIPPED, CaseSettings, KernelCase, is_fatal, measure_case, past_deadline

    device = task["device"]
    settings = CaseSettings(**task["settings"])
    backend = make_backend(task["backend"], block=settings.block)
    info = device_info(device)
    reason = backend.unsupported(info, settings.dtype)
    if reason is None:
        first = _first_call_seconds(backend, settings.dtype, device)
        if first is not None:
            emit({"kind": "setup", "what": "first_call", "seconds": first})
    for raw in task["cases"]:
        case = KernelCase(**raw)
        emit({"kind": "start", "case_id": case.case_id})
        _fault_hook(backend.name, case.case_id)
        record: dict[str, Any] = {"kind": "case", "case_id": case.case_id}
        if reason is not None:
            emit({**record, "status": "unsupported", "error": reason})
        elif past_deadline(task):
            emit({**record, "status": "skipped", "error": SKIPPED})
        else:
            try:
                result = measure_case(backend, case, settings, device)
                emit({**record, "status": "ok", "result": asdict(result)})
            except Exception as err:  # noqa: BLE001 - a failed case is a row with its error text
                status = "unsupported" if is_unsupported_error(err) else "failed"
                emit({**record, "status": status, "error": f"{type(err).__name__}: {err}"[:4000]})
                if is_fatal(err):
                    return EXIT_POISONED
            finally:
                if device == "cuda":
                    torch.cuda.empty_cache()
        emit({"kind": "done", "case_id": case.case_id})
    return 0


def run_ceilings(task: dict[str, Any], emit: Emit) -> int:
    from workbench.kernels.measure.ceilings import copy_bandwidth, matmul_rate
    from workbench.kernels.measure.environment import device_info, versions

    device = task["device"]
    info = device_info(device)
    emit({"kind": "device", "device": asdict(info), "label": info.label, "versions": versions(device)})
    for case in task["cases"]:  # "copy" | "matmul-<dtype>"
        what = case["case_id"]
        emit({"kind": "start", "case_id": what})
        try:
            ceiling = copy_bandwidth(device, task["copy_mb"]) if what == "copy" else \
                matmul_rate(device, what.removeprefix("matmul-"), task["matmul_size"])
            emit({"kind": "ceiling", "case_id": what, "status": "ok", "ceiling": asdict(ceiling)})
        except Exception as err:  # noqa: BLE001 - a dtype the device lacks: recorded, the others go on
            emit({"kind": "ceiling", "case_id": what, "status": "failed", "error": f"{type(err).__name__}: {err}"[:2000]})
        emit({"kind": "done", "case_id": what})
    return 0


def run_latency(task: dict[str, Any], emit: Emit) -> int:
    from workbench.kernels.latency import run_latency_task

    return run_latency_task(task, emit, _fault_hook)


MODES = {"kernels": run_kernels, "ceilings": run_ceilings, "latency": run_latency}


def main(argv: list[str]) -> int:
    task = json.loads(Path(argv[0]).read_text())
    with open(argv[1], "a") as out:
        def emit(record: dict[str, Any]) -> None:
            out.write(json.dumps(record, default=str) + "\n")
            out.flush()

        torch.manual_seed(task.get("seed", 0))
        return MODES[task["mode"]](task, emit)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
