"""The runner: cache lookup, lifecycle (running -> finished | failed), one job or a sweep.

A job whose key already finished in the store returns that run at once: the key is computed from
the spec and file hashes, so the model is never loaded. Otherwise the job is prepared (everything it
reads is loaded and checked: bad input fails here and leaves the store untouched), registered as
``running``, executed, and written in one transaction that flips it to ``finished``. An exception
marks it ``failed`` with the error text; a killed process leaves ``running``, which the next run of
the same key replaces. A finished run whose metric ``incomplete`` is set (it left work out: a time
budget ran out) is not served from the cache; its key runs again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from tqdm.auto import tqdm

from workbench.errors import WorkbenchError
from workbench.jobs import JobContext, executor_for
from workbench.records import INCOMPLETE
from workbench.results import describe
from workbench.spec import JobSpec, job_key, parse_spec
from workbench.store import Store


@dataclass
class RunResult:
    run_id: str
    key: str
    cached: bool
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    wall_s: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "key": self.key, "cached": self.cached, "status": self.status,
                "metrics": self.metrics, "wall_s": self.wall_s, "error": self.error}


def _final_metrics(store: Store, run_id: str) -> dict[str, float]:
    from workbench import queries

    frame = queries.metrics(store, [run_id])
    if frame.empty:
        return {}
    frame = frame.assign(order=frame["step"].fillna(-1)).sort_values("order")
    return {name: float(value) for name, value in frame.groupby("name")["value"].last().items()}


def run_job(spec: JobSpec | dict[str, Any], store: Store | None = None, force: bool = False,
            progress: bool = False) -> RunResult:
    """Run one job (or return its cached run). Raises WorkbenchError on bad input or a failed run."""
    spec = parse_spec(spec)
    store = store or Store()
    store.check_writable()
    key = job_key(spec)
    if not force:
        done = store.finished_run(key)
        metrics = _final_metrics(store, done["run_id"]) if done is not None else {}
        if done is not None and not metrics.get(INCOMPLETE):
            return RunResult(done["run_id"], key, True, "finished", metrics, done["wall_s"])

    executor = executor_for(spec.kind)
    context = JobContext(store=store, workdir=store.artifacts_dir / "checkpoints" / key, progress=progress)
    started = time.perf_counter()
    prepared = executor.prepare(spec, context)
    run_id = store.start_run(key, spec.kind, spec.canonical_json(), spec.summary(), spec.identity_parts(), spec.name)
    try:
        output = executor.execute(prepared, context)
    except BaseException as err:
        message = str(err) if isinstance(err, WorkbenchError) else f"{type(err).__name__}: {err}"
        store.fail_run(run_id, message)
        raise
    wall_s = time.perf_counter() - started
    store.finish_run(run_id, key, output, wall_s)
    return RunResult(run_id, key, False, "finished", output.metric_dict(), wall_s)


def run_sweep(specs: Iterable[JobSpec], store: Store | None = None, force: bool = False, progress: bool = True,
              on_result: Callable[[JobSpec, RunResult], None] | None = None,
              keep_going: bool = True) -> list[RunResult]:
    """Run every spec in order; finished keys are served from the store, so a re-run executes only
    what is missing. A failing job is recorded and, with ``keep_going``, the sweep goes on.

    Every job's key is computed before the first one runs, so a sweep naming an unknown model or data
    file fails at once, with nothing run and nothing stored."""
    store = store or Store()
    specs = list(specs)
    keys = [job_key(spec) for spec in specs]
    store.check_writable()
    results = []
    bar = tqdm(list(zip(specs, keys)), desc="sweep", unit="job", disable=not progress)
    for spec, key in bar:
        bar.set_postfix_str(describe(spec))
        try:
            result = run_job(spec, store, force=force, progress=progress)
        except Exception as err:
            if not keep_going:
                raise
            message = str(err) if isinstance(err, WorkbenchError) else f"{type(err).__name__}: {err}"
            result = RunResult("", key, False, "failed", error=message)
        results.append(result)
        if on_result:
            on_result(spec, result)
    return results


def spec_json(spec: JobSpec) -> str:
    return json.dumps(spec.canonical(), indent=2, sort_keys=True)
