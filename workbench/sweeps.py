"""Sweeps: many jobs through an executor, with one progress bar, resumable and interruptible.

``run_sweep`` computes every job's key first (a bad job anywhere stops the sweep before anything runs),
serves finished keys from the store and hands the rest to an executor (``workbench.executors``: in this
process, a pool of worker processes, or a Ray cluster), whose workers run each job through
``runner.run_job``, so the cache and the claims are the same everywhere.
"""

from __future__ import annotations

import sys
import uuid
from collections import deque
from typing import Callable, Iterable

from workbench.errors import WorkbenchError
from workbench.executors import Executor, InProcess, Task
from workbench.progress import Bar
from workbench.records import shortfall_warning
from workbench.runner import RunResult, cached_result, with_run_keys
from workbench.spec import JobSpec, job_key
from workbench.store import Store, claims


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a sweep: ``results`` holds the jobs that ended (None where a job did not run)."""

    def __init__(self, results: list[RunResult | None]):
        super().__init__("sweep interrupted")
        self.results = results


class SweepProgress:
    """One bar for a sweep on any executor: jobs done, running, failed and cached."""

    def __init__(self, total: int, enabled: bool, desc: str = "sweep"):
        self.done = self.failed = self.cached = self.running = 0
        self.text = ""
        self.bar = Bar(total=total, desc=desc, unit="job", enabled=enabled, every=0)  # plain logs: a line per job

    def record(self, result: RunResult) -> None:
        if result.status == "failed":
            self.failed += 1
        elif result.cached:
            self.cached += 1
        else:
            self.done += 1
        self.show(max(0, self.running - 1))  # first: a plain line printed by the update carries the counts
        self.bar.update(1)

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
    store = store or Store()
    specs = [with_run_keys(spec, store) for spec in specs]
    keys = [job_key(spec) for spec in specs]
    store.check_writable()
    results: list[RunResult | None] = [None] * len(specs)
    bar = SweepProgress(len(specs), progress)

    def record(index: int, result: RunResult) -> None:
        results[index] = result
        bar.record(result)
        if warning := shortfall_warning(result.metrics):
            bar.write(f"warning: run {result.run_id}: {warning}")
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
            try:
                executor.start(store)
            except KeyboardInterrupt:  # Ctrl-C while the workers start: nothing was submitted
                interrupted = stopping = True
                tasks.clear()
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
            try:
                executor.close()
            except KeyboardInterrupt:  # Ctrl-C while the workers shut down: stop them now
                interrupted = True
                executor.cancel()
                executor.close()
        finally:
            claims.release_owned(store, f"{sweep_id}:", prefix=True)  # what stopped or dead workers left
    if failure is not None:
        raise failure.exception or WorkbenchError(f"a job of the sweep failed: {failure.error}",
                                                  "fix it and run the sweep again (finished jobs are cached)")
    if interrupted:
        raise SweepInterrupted(results)
    return [r for r in results if r is not None]
