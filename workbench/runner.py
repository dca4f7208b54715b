"""The runner: cache lookup, claims, lifecycle (running -> finished | failed), one job or a sweep.

A job whose key already finished in the store returns that run at once: the key is computed from
the spec and file hashes, so the model is never loaded. Otherwise the job is prepared (everything it
reads is loaded and checked: bad input fails here and leaves the store untouched), its key is claimed
(``workbench.store.claims``: one worker at a time per key, under a lease renewed while it runs),
registered as ``running``, executed, and written in one transaction that flips it to ``finished`` and
releases the claim. An exception marks it ``failed`` with the error text (and releases the claim); a
killed process leaves ``running`` and a claim that is taken over once its lease expires (at once on
the same machine, where the dead process is seen), and the next run of the key replaces the row.

A second worker of a key that is running elsewhere waits for that run and returns its result (or runs
the key itself when the other run failed or was stopped). A finished run whose metric ``incomplete``
is set (it left work out: a time budget ran out) is not served from the cache; its key runs again.

``run_sweep`` hands the jobs that are not finished to an executor (``workbench.executors``: in process,
a pool of worker processes, or a Ray cluster); every worker runs them through ``run_job``, so the cache
and the claims are the same everywhere.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from tqdm.auto import tqdm

from workbench.errors import WorkbenchError
from workbench.jobs import JobContext, executor_for
from workbench.records import INCOMPLETE
from workbench.spec import JobSpec, job_key, parse_spec
from workbench.store import Store, claims

if TYPE_CHECKING:
    from workbench.executors import Executor


@dataclass
class RunResult:
    run_id: str
    key: str
    cached: bool
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    wall_s: float | None = None
    error: str | None = None
    # the exception of a job run in this process (``run_sweep(keep_going=False)`` raises it again)
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "key": self.key, "cached": self.cached, "status": self.status,
                "metrics": self.metrics, "wall_s": self.wall_s, "error": self.error}

    def __getstate__(self) -> dict[str, Any]:  # results cross process boundaries; exceptions may not pickle
        return {**self.__dict__, "exception": None}


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a sweep: ``results`` holds the jobs that ended (None where a job did not run)."""

    def __init__(self, results: list[RunResult | None]):
        super().__init__("sweep interrupted")
        self.results = results


def error_text(err: BaseException) -> str:
    return str(err) if isinstance(err, WorkbenchError) else f"{type(err).__name__}: {err}"


def _final_metrics(store: Store, run_id: str) -> dict[str, float]:
    from workbench import queries

    frame = queries.metrics(store, [run_id])
    if frame.empty:
        return {}
    frame = frame.assign(order=frame["step"].fillna(-1)).sort_values("order")
    return {name: float(value) for name, value in frame.groupby("name")["value"].last().items()}


def cached_result(store: Store, key: str) -> RunResult | None:
    """The key's finished (and complete) run as a cached result, or None."""
    done = store.finished_run(key)
    if done is None:
        return None
    metrics = _final_metrics(store, done["run_id"])
    if metrics.get(INCOMPLETE):
        return None
    return RunResult(done["run_id"], key, True, "finished", metrics, done["wall_s"])


def _wait_for(store: Store, key: str, holder: claims.Claim, progress: bool) -> None:
    """Wait while another worker holds a live claim on ``key`` (until it ends, is released or expires)."""
    if progress:
        print(f"key {key[:12]} is running on {holder.host} (pid {holder.pid}); waiting for its result",
              file=sys.stderr)
    delay = 0.1
    while claims.holder(store, key) is not None:
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0, claims.lease_seconds() / 4)


def run_job(spec: JobSpec | dict[str, Any], store: Store | None = None, force: bool = False,
            progress: bool = False, owner: str | None = None) -> RunResult:
    """Run one job (or return its cached run, or wait for the worker that runs it now).
    Raises WorkbenchError on bad input or a failed run. ``owner`` tags the claim (the sweep it belongs to)."""
    spec = parse_spec(spec)
    store = store or Store()
    store.check_writable()
    key = job_key(spec)
    if not force and (done := cached_result(store, key)) is not None:
        return done
    running = claims.holder(store, key)  # a look before loading anything: wait for a running worker first
    if running is not None:
        _wait_for(store, key, running, progress)
        if not force and (done := cached_result(store, key)) is not None:
            return done

    executor = executor_for(spec.kind)
    context = JobContext(store=store, workdir=store.artifacts_dir / "checkpoints" / key, progress=progress)
    started = time.perf_counter()
    prepared = executor.prepare(spec, context)
    while True:
        mine, other = claims.try_claim(store, key, owner=owner)
        if mine is not None:
            break
        _wait_for(store, key, other, progress)
        if not force and (done := cached_result(store, key)) is not None:
            return done
    lease = claims.Lease(store, mine)
    settled = False  # the claim was released by the transaction that wrote the run
    try:
        if not force and (done := cached_result(store, key)) is not None:
            return done  # it finished between the first look and the claim
        run_id = store.start_run(key, spec.kind, spec.canonical_json(), spec.summary(), spec.identity_parts(),
                                 spec.name)
        try:
            output = executor.execute(prepared, context)
        except BaseException as err:
            lease.stop()
            store.fail_run(run_id, error_text(err), claim_id=mine.claim_id)
            settled = True
            raise
        wall_s = time.perf_counter() - started
        lease.stop()  # no renewal may touch the claim while the final transaction releases it
        try:
            store.finish_run(run_id, key, output, wall_s, claim_id=mine.claim_id)
        except claims.ClaimLostError as err:
            settled = True
            store.fail_run(run_id, str(err))
            raise
        settled = True
        return RunResult(run_id, key, False, "finished", output.metric_dict(), wall_s)
    finally:
        lease.stop()
        if not settled:
            claims.release(store, mine.claim_id)


class SweepProgress:
    """One bar for a sweep on any executor: jobs done, running, failed and cached."""

    def __init__(self, total: int, enabled: bool, desc: str = "sweep"):
        self.done = self.failed = self.cached = self.running = 0
        self.text = ""
        self.bar = tqdm(total=total, desc=desc, unit="job", disable=not enabled, dynamic_ncols=True)

    def record(self, result: RunResult) -> None:
        if result.status == "failed":
            self.failed += 1
        elif result.cached:
            self.cached += 1
        else:
            self.done += 1
        self.bar.update(1)
        self.show()

    def show(self, running: int | None = None) -> None:
        if running is not None:
            self.running = running
        text = f"done {self.done}, running {self.running}, failed {self.failed}, cached {self.cached}"
        if text != self.text:
            self.text = text
            self.bar.set_postfix_str(text)

    def write(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def run_sweep(specs: Iterable[JobSpec], store: Store | None = None, force: bool = False, progress: bool = True,
              on_result: Callable[[JobSpec, RunResult], None] | None = None,
              keep_going: bool = True, executor: Executor | None = None) -> list[RunResult]:
    """Run every spec; finished keys are served from the store, so a re-run executes only what is
    missing. A failing job is recorded and, with ``keep_going``, the sweep goes on.

    ``executor`` (default: in this process, one job at a time) runs the jobs that are not finished;
    every job goes through ``run_job`` in its worker, so a key that finished never runs again and two
    workers never run one key at once. Ctrl-C stops submitting and lets the running jobs finish (a
    second Ctrl-C stops them; their claims are released); ``SweepInterrupted`` then carries what ended.
    Running the same sweep again resumes it.

    Every job's key is computed before the first one runs, so a sweep naming an unknown model or data
    file fails at once, with nothing run and nothing stored."""
    from workbench.executors import InProcess, Task

    store = store or Store()
    specs = list(specs)
    keys = [job_key(spec) for spec in specs]
    store.check_writable()
    results: list[RunResult | None] = [None] * len(specs)
    bar = SweepProgress(len(specs), progress)

    def record(index: int, result: RunResult) -> None:
        results[index] = result
        bar.record(result)
        if on_result:
            on_result(specs[index], result)

    todo = deque()
    for index, key in enumerate(keys):
        done = None if force else cached_result(store, key)
        if done is not None:
            record(index, done)
        else:
            todo.append(index)
    executor = executor or InProcess()
    sweep_id = f"sweep-{uuid.uuid4().hex[:12]}"
    location = store.location if store.is_lake else str(store.path.resolve())
    in_process = executor.in_process
    tasks = deque(Task(i, specs[i], keys[i], location, str(store.data_path.resolve()), force,
                       f"{sweep_id}:{i}", progress=progress and in_process) for i in todo)
    stopping = interrupted = False
    failure: RunResult | None = None
    try:
        if tasks:
            executor.start(store)
        while (tasks and not stopping) or executor.running:
            try:
                while tasks and not stopping and len(executor.running) < executor.capacity:
                    executor.submit(tasks.popleft())
                    bar.show(len(executor.running))
                for task, result in executor.wait(0.5):
                    if result.status == "failed" and not in_process:  # a worker that died leaves its claim
                        claims.release_owned(store, task.owner, reason=f"its worker ended: {result.error}")
                    record(task.index, result)
                    if result.status == "failed" and not keep_going:
                        failure, stopping = result, True
                bar.show(len(executor.running))
            except KeyboardInterrupt:
                interrupted = True
                if stopping or not executor.running:
                    executor.cancel()
                    break
                stopping = True
                bar.write(f"interrupted: waiting for {len(executor.running)} running job(s) to finish; "
                          "Ctrl-C again stops them now")
    finally:
        bar.close()
        try:
            executor.close()
        finally:
            claims.release_owned(store, f"{sweep_id}:", prefix=True)  # what stopped or dead workers left
    if failure is not None:
        raise failure.exception or WorkbenchError(f"a job of the sweep failed: {failure.error}",
                                                  "fix it and run the sweep again (finished jobs are cached)")
    if interrupted:
        raise SweepInterrupted(results)
    return [r for r in results if r is not None]


def spec_json(spec: JobSpec) -> str:
    return json.dumps(spec.canonical(), indent=2, sort_keys=True)
