"""Executors: where a sweep's jobs run. One interface, three places:

- ``InProcess``: in the sweep's own process, one job at a time (the default);
- ``ProcessPool``: N worker processes on this machine (``--workers N``);
- ``RayCluster``: one Ray task per job on a Ray cluster, started here or joined (``--executor ray
  [--address ...]``), each task asking for the CPU/GPU its spec's ``device`` needs.

Sweeps (``workbench.sweeps.run_sweep``) drive them all alike: it serves finished keys from the
store itself, then ``submit``s a ``Task`` per remaining job while fewer than ``capacity`` run, collects
``(task, result)`` pairs from ``wait`` and, on a second Ctrl-C, ``cancel``s what still runs. Every worker
runs its task through ``run_job`` against the same store (``run_task``), so the cache and the claims
(``workbench.store.claims``) hold everywhere: a finished key never runs again, two workers never run one
key at once. Failures come back as results, never as exceptions across a process boundary.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from workbench.runner import RunResult
    from workbench.spec import JobSpec
    from workbench.store import Store

EXECUTORS = ("local", "ray")


@dataclass
class Task:
    """One job of a sweep, as a worker receives it (picklable)."""

    index: int  # position in the sweep
    spec: JobSpec
    key: str
    store: str  # the store's location (an absolute file path, or a DuckLake URL)
    data_path: str  # the lake's data files (absolute)
    force: bool = False
    owner: str | None = None  # tags the job's claim: the sweep and the job, so a stopped sweep releases it
    progress: bool = False


_STORES: dict[tuple[str, str], Store] = {}  # a worker process's opened stores (attaching a lake costs ~0.5 s)


def _store_for(task: Task) -> Store:
    from workbench.store import Store

    key = (task.store, task.data_path)
    if key not in _STORES:
        _STORES[key] = Store(task.store, data_path=task.data_path)
    return _STORES[key]


def run_task(task: Task, store: Store | None = None) -> RunResult:
    """Run one task in this process through ``run_job``; an error comes back as a failed result."""
    from workbench.runner import RunResult, error_text, run_job

    try:
        return run_job(task.spec, store or _store_for(task), force=task.force, progress=task.progress,
                       owner=task.owner)
    except Exception as err:  # noqa: BLE001 - every failure becomes the job's failed result
        return RunResult("", task.key, False, "failed", error=error_text(err), exception=err)


def task_resources(spec: Any, cluster_has_gpu: bool) -> tuple[float, float]:
    """(CPUs, GPUs) a job asks of a cluster: a GPU where its spec's ``device`` is cuda (or auto, on a
    cluster that has GPUs); a prune job (no device) runs on CPU."""
    device = str(getattr(spec, "device", None) or "cpu")
    if device.startswith("cuda") or (device == "auto" and cluster_has_gpu):
        return 1.0, 1.0
    return 1.0, 0.0


class Executor(ABC):
    """Runs tasks somewhere; see the module docstring for how the runner drives it."""

    name = "executor"
    in_process = False  # jobs run in the caller's process (their progress bars and exceptions reach it)
    capacity = 1  # jobs that run at once

    def start(self, store: Store) -> None:
        """Get ready to run tasks against ``store`` (start workers, join a cluster)."""
        return None

    @abstractmethod
    def submit(self, task: Task) -> None: ...

    @abstractmethod
    def wait(self, timeout: float) -> list[tuple[Task, RunResult]]:
        """The tasks that ended since the last call, waiting up to ``timeout`` s for one."""

    @property
    @abstractmethod
    def running(self) -> list[Task]: ...

    def cancel(self) -> list[Task]:
        """Stop the running tasks now (their jobs fail and release their claims); returns them."""
        return []

    def close(self) -> None:
        """Stop the workers (and a cluster this executor started)."""
        return None


class InProcess(Executor):
    """Jobs run one at a time in this process; Ctrl-C interrupts the running job, which releases its key."""

    name = "local"
    in_process = True

    def __init__(self) -> None:
        self._queue: deque[Task] = deque()
        self._store: Store | None = None

    def start(self, store: Store) -> None:
        self._store = store

    def submit(self, task: Task) -> None:
        self._queue.append(task)

    def wait(self, timeout: float) -> list[tuple[Task, RunResult]]:
        if not self._queue:
            return []
        task = self._queue.popleft()
        return [(task, run_task(task, self._store))]

    @property
    def running(self) -> list[Task]:
        return list(self._queue)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _worker_main(conn: multiprocessing.connection.Connection) -> None:
    """A pool worker: run the tasks it is sent until it is sent None. Ctrl-C goes to the sweep's process,
    which decides; SIGTERM (a cancel) interrupts the running job, which releases its claim."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            task = conn.recv()
            if task is None:
                return
            conn.send(run_task(task))
    except (KeyboardInterrupt, EOFError, OSError):
        return


class _Worker:
    def __init__(self, context: Any):
        self.conn, child = context.Pipe()
        # not a daemon: a job may start processes of its own (data loaders)
        self.process = context.Process(target=_worker_main, args=(child,), name="workbench-worker")
        self.process.start()
        child.close()
        self.task: Task | None = None


class ProcessPool(Executor):
    """``workers`` processes on this machine (spawned: each imports the workbench once, then runs jobs)."""

    name = "local"

    def __init__(self, workers: int):
        self.capacity = max(1, int(workers))
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []

    def start(self, store: Store) -> None:
        self._workers = [_Worker(self._context) for _ in range(self.capacity)]

    def submit(self, task: Task) -> None:
        idle = [w for w in self._workers if w.task is None]
        if not idle:
            raise RuntimeError("every worker is busy: submit at most `capacity` tasks at once")
        worker = idle[0]
        if not worker.process.is_alive():  # died between tasks: start a new one in its place
            self._workers[self._workers.index(worker)] = worker = _Worker(self._context)
        worker.task = task
        worker.conn.send(task)

    def wait(self, timeout: float) -> list[tuple[Task, RunResult]]:
        from workbench.runner import RunResult

        busy = [w for w in self._workers if w.task is not None]
        if not busy:
            return []
        ready = set(multiprocessing.connection.wait([w.conn for w in busy] + [w.process.sentinel for w in busy],
                                                    timeout))
        ended = []
        for worker in busy:
            if worker.conn not in ready and worker.process.sentinel not in ready:
                continue
            task, worker.task = worker.task, None
            try:
                result = worker.conn.recv() if worker.conn.poll() else None
            except (EOFError, OSError):
                result = None
            if result is None:  # the process died in the middle of the job (killed, out of memory)
                worker.process.join(timeout=5)
                result = RunResult("", task.key, False, "failed",
                                   error=f"worker process died (exit code {worker.process.exitcode})")
                self._workers[self._workers.index(worker)] = _Worker(self._context)
            ended.append((task, result))
        return ended

    @property
    def running(self) -> list[Task]:
        return [w.task for w in self._workers if w.task is not None]

    def cancel(self) -> list[Task]:
        stopped = self.running
        busy = [w for w in self._workers if w.task is not None]
        for worker in busy:
            worker.process.terminate()  # SIGTERM: the job is interrupted and releases its claim
        for worker in busy:
            worker.process.join(timeout=15)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
            worker.task = None
        return stopped

    def close(self) -> None:
        for worker in self._workers:
            if worker.process.is_alive() and worker.task is None:
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
        for worker in self._workers:
            worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(timeout=5)
            worker.conn.close()
        self._workers = []


class RayCluster(Executor):
    """One Ray task per job. ``address``: None starts a local cluster here (or joins the one RAY_ADDRESS
    names), "auto" joins the cluster this machine belongs to, "host:port" or "ray://host:10001" a remote
    head. A cluster's workers must reach the same store: a DuckLake URL whose data path is shared, or a
    file on a shared folder (one writer at a time)."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        try:
            import ray
        except ImportError:
            raise WorkbenchError("--executor ray needs Ray, which is not installed",
                                 "run `pip install 'sparsity-workbench[ray]'`") from None
        self._ray = ray
        self.address = address
        self.num_cpus = num_cpus
        self._started = False
        self._has_gpu = False
        self._refs: dict[Any, Task] = {}
        self._remote: Any = None

    def start(self, store: Store) -> None:
        ray = self._ray
        if not ray.is_initialized():
            env = {name: value for name, value in os.environ.items() if name.startswith("WORKBENCH_")}
            for attempt in range(3):
                try:
                    ray.init(address=self.address, num_cpus=None if self.address else self.num_cpus,
                             include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                             runtime_env={"env_vars": env} if env else None)
                    break
                except Exception as err:  # noqa: BLE001 - Ray raises a bare Exception when its node starts slowly
                    # on a busy machine a local node may miss Ray's fixed 30 s start-up wait: start it again
                    if "timed out during startup" in str(err) and attempt < 2:
                        ray.shutdown()
                        continue
                    raise WorkbenchError(f"no Ray cluster at {self.address or 'this machine'} "
                                         f"({str(err).splitlines()[0][:160]})",
                                         "start one with `ray start --head`, or leave --address out") from None
            self._started = True
        resources = ray.cluster_resources()
        self.capacity = max(1, int(resources.get("CPU", 1)))
        self._has_gpu = resources.get("GPU", 0) > 0
        self._remote = ray.remote(max_retries=0)(run_task)

    def submit(self, task: Task) -> None:
        cpus, gpus = task_resources(task.spec, self._has_gpu)
        ref = self._remote.options(num_cpus=cpus, num_gpus=gpus, name=f"workbench-{task.key[:12]}").remote(task)
        self._refs[ref] = task

    def wait(self, timeout: float) -> list[tuple[Task, RunResult]]:
        from workbench.runner import RunResult

        if not self._refs:
            return []
        ray = self._ray
        ready, rest = ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        if ready and rest:
            ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        ended = []
        for ref in ready:
            task = self._refs.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as err:  # the worker died or the task was cancelled
                result = RunResult("", task.key, False, "failed",
                                   error=f"Ray task failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})")
            ended.append((task, result))
        return ended

    @property
    def running(self) -> list[Task]:
        return list(self._refs.values())

    def cancel(self) -> list[Task]:
        ray = self._ray
        stopped = self.running
        for ref in self._refs:
            ray.cancel(ref)  # KeyboardInterrupt in the task: the job fails and releases its claim
        try:
            ray.wait(list(self._refs), num_returns=len(self._refs), timeout=15)
        except ray.exceptions.RayError:
            pass
        for ref in self._refs:
            ray.cancel(ref, force=True)
        self._refs.clear()
        return stopped

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False


def make_executor(name: str = "local", workers: int = 1, address: str | None = None) -> Executor:
    """The executor a command line asks for: ``local`` (in process, or ``workers`` processes) or ``ray``."""
    if name == "local":
        if address:
            raise WorkbenchError("--address is an option of --executor ray", "add --executor ray, or drop --address")
        return InProcess() if workers <= 1 else ProcessPool(workers)
    if name == "ray":
        return RayCluster(address, num_cpus=workers if workers > 1 else None)
    raise WorkbenchError(f"unknown executor {name!r}", f"use one of: {', '.join(EXECUTORS)}")
