"""The runner: cache lookup, claims, lifecycle (running -> finished | failed) of one job.

A job whose key already finished in the store returns that run at once: the key is computed from
the spec and file hashes, so the model is never loaded (nor torch imported: a job's executor is
imported only when the job runs). Otherwise the job is prepared (everything it
reads is loaded and checked: bad input fails here and leaves the store untouched), its key is claimed
(``workbench.store.claims``: one worker at a time per key, under a lease renewed while it runs),
registered as ``running``, executed, and written in one transaction that flips it to ``finished`` and
releases the claim. An exception marks it ``failed`` with the error text (and releases the claim); a
killed process leaves ``running`` and a claim that is taken over once its lease expires (at once on
the same machine, where the dead process is seen), and the next run of the key replaces the row.

A second worker of a key that is running elsewhere waits for that run and returns its result (or runs
the key itself when the other run failed or was stopped). A finished run whose metric ``incomplete``
is set (it left work out: a time budget ran out) is not served from the cache; its key runs again.

Sweeps (``workbench.sweeps.run_sweep``) hand the jobs that are not finished to an executor
(``workbench.executors``), whose workers run each through ``run_job``: the cache and the claims are the
same everywhere.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from workbench.errors import WorkbenchError
from workbench.faults import faultpoint
from workbench.jobs import JobContext, executor_for, run_key
from workbench.progress import phase, publish
from workbench.records import INCOMPLETE
from workbench.spec import JobSpec, job_key, parse_spec
from workbench.store import Store, claims


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


def error_text(err: BaseException) -> str:
    return str(err) if isinstance(err, WorkbenchError) else f"{type(err).__name__}: {err}"


def cached_result(store: Store, key: str) -> RunResult | None:
    """The key's finished (and complete) run as a cached result, or None."""
    done = store.finished_run(key)
    if done is None:
        return None
    metrics = store.final_metrics(done["run_id"])
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


def with_run_keys(spec: JobSpec, store: Store) -> JobSpec:
    """``spec`` with the earlier runs it builds on named by their keys, looked up in ``store`` (a run id is
    one store's; the key, and with it this job's key, is the same in every store)."""
    return spec.with_run_keys(lambda reference: run_key(store, reference))


def run_job(spec: JobSpec | dict[str, Any], store: Store | None = None, force: bool = False,
            progress: bool = False, owner: str | None = None) -> RunResult:
    """Run one job (or return its cached run, or wait for the worker that runs it now).
    Raises WorkbenchError on bad input or a failed run. ``owner`` tags the claim (the sweep it belongs to)."""
    spec = parse_spec(spec)
    store = store or Store()
    store.check_writable()
    spec = with_run_keys(spec, store)
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
    run_id = publisher = None
    try:
        if not force and (done := cached_result(store, key)) is not None:
            return done  # it finished between the first look and the claim
        run_id = store.start_run(key, spec.kind, spec.canonical_json(), spec.summary(), spec.identity_parts(),
                                 spec.name, spec.tags)
        publisher = publish(store.artifacts_dir, run_id, key, spec.kind)  # what it does now, for readers
        try:
            faultpoint("run:started")
            output = executor.execute(prepared, context)
        except BaseException as err:
            store.fail_run(run_id, error_text(err), claim_id=mine.claim_id)
            settled = True
            raise
        wall_s = time.perf_counter() - started
        # the lease is renewed until the final transaction has released the claim: on a busy shared store
        # that transaction may be retried for longer than the lease (a renewal and the release conflict
        # on the claim's row, so one of them reruns; a file store's threads take turns anyway)
        phase("writing results")
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
        if publisher is not None:
            publisher.close()
        if not settled:  # stopped outside the job (Ctrl-C between two steps, a store error): no claim, no running row
            try:
                if run_id is not None:
                    store.fail_run(run_id, "interrupted before its run was written", claim_id=mine.claim_id)
                else:
                    claims.release(store, mine.claim_id)
            except Exception:  # noqa: BLE001 - the first error is the one to report; the lease runs out anyway
                pass


def spec_json(spec: JobSpec) -> str:
    return json.dumps(spec.canonical(), indent=2, sort_keys=True)
