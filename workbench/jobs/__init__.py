"""Job executors: one module per job kind turns a validated spec into the records the store writes.

The runner owns a job's lifecycle (cache lookup, ``running`` -> ``finished`` | ``failed``); an executor
owns its work, in two steps:

- ``prepare(spec, context)`` loads and checks everything the job reads (model, data, linked runs) before
  the run is registered, so bad input fails there and leaves the store untouched;
- ``execute(prepared, context)`` does the work and returns a ``JobOutput`` for one write transaction.

Executors may read earlier results through ``context.store`` (a bench job reads a pruning run's masks)
but never write to it; the methods they call (pruning, training, kernels) know nothing of the store.
Adding a job kind: a spec class registered with ``workbench.spec.register_kind``, a module here, and
one line in ``EXECUTORS``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from workbench.records import JobOutput
    from workbench.spec import JobSpec
    from workbench.store import Store

# kind -> module; imported on first use, since executors pull in torch and the models
EXECUTORS: dict[str, str] = {
    "prune": "workbench.jobs.prune",
    "train": "workbench.jobs.train",
    "bench": "workbench.jobs.bench",
    "search": "workbench.jobs.search",
}


@dataclass
class JobContext:
    """What the runner hands an executor beside the spec."""

    store: Store | None = None  # earlier results the job builds on (read only)
    workdir: Path | None = None  # files kept across attempts of the same key (checkpoints); None: no resuming
    progress: bool = False


class Executor(Protocol):
    def prepare(self, spec: JobSpec, context: JobContext) -> Any: ...

    def execute(self, prepared: Any, context: JobContext) -> JobOutput: ...


def run_key(store: Store, reference: str) -> str:
    """The key of the run ``reference`` names: a key (64 hex digits) as it is, else a run id or a unique prefix
    of one, looked up in ``store``."""
    reference = reference.strip()
    if len(reference) == 64 and all(c in "0123456789abcdef" for c in reference):
        return reference
    from workbench import queries

    return queries.run(store, reference)["key"]


def stored_spec(record: dict[str, Any]) -> JobSpec:
    """The spec of a stored run (``record`` as ``queries.run`` reads it), refused when the model, data or code
    installed now give it another key: what is rebuilt from it would not be the run's."""
    from workbench.errors import StoreError
    from workbench.spec import job_key, parse_spec

    spec = parse_spec(record["spec"])
    if job_key(spec) != record["key"]:
        raise StoreError(f"run {record['run_id']} was made from another model, data set or method version than "
                         "the ones installed now", "re-run its spec, then use the new run")
    return spec


def executor_for(kind: str) -> Executor:
    """The executor module of a job kind (a module with ``prepare`` and ``execute`` is an ``Executor``)."""
    return cast(Executor, importlib.import_module(EXECUTORS[kind]))
