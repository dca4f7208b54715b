"""Task names -> harness tasks -> metrics: checking names before a run, running them after pruning.

Local tasks are indexed from their cached folder alone (fast); a name that is not local needs the
harness's whole index (some 14k names, about 10 s the first time in a process), which then also holds the
local tasks, so both kinds mix in one run. When the Hugging Face hub cannot be reached, data sets load in
the hub's offline mode: those in the local cache still load, the others fail at once (no retries).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import socket
import sys
import time
from functools import lru_cache
from importlib import metadata
from typing import Any, Iterator
from urllib.parse import urlparse

from workbench.errors import SpecError
from workbench.evaluation.local import LOCAL_TASKS, task_folder

# fewshot examples are drawn with the harness's own default seed, so a run's prompts are reproducible
FEWSHOT_SEED = 1234
# bootstrap draws for metrics without a closed-form standard error (perplexity), in this process
BOOTSTRAP_ITERS = 1000
# builders that read local files: a task on one of them does not need the hub
_LOCAL_BUILDERS = frozenset({"json", "csv", "text", "parquet", "arrow", "pandas", "imagefolder", "audiofolder"})

log = logging.getLogger(__name__)


def _fix() -> str:
    return f"use a local task ({', '.join(LOCAL_TASKS)}; see `workbench tasks`) or run with network"


@lru_cache(maxsize=4)
def _manager(everything: bool, folder: str) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=everything, include_path=folder)


def task_manager(tasks: tuple[str, ...] | list[str]) -> Any:
    """The harness's task index: the local tasks only when every name is local, else everything."""
    return _manager(not all(name in LOCAL_TASKS for name in tasks), str(task_folder()))


def all_task_names() -> list[str]:
    """Every task, group and tag name the harness knows, with the local tasks."""
    return list(_manager(True, str(task_folder())).all_tasks)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub's endpoint opens (False in the hub's offline mode)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def hub_offline(offline: bool) -> Iterator[None]:
    """The hub's offline mode for ``datasets`` and ``huggingface_hub`` while loading, when it is unreachable."""
    if not offline:
        yield
        return
    import datasets.config
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


@contextlib.contextmanager
def _quiet_harness() -> Iterator[None]:
    """The harness logs every task it builds at INFO and warns about fewshot sources: errors only. Its
    bootstrap would fork worker processes from this one (which holds the model): single-process instead."""
    logger = logging.getLogger("lm_eval")
    level, multiproc = logger.level, os.environ.get("DISABLE_MULTIPROC")
    logger.setLevel(logging.ERROR)
    os.environ["DISABLE_MULTIPROC"] = "1"
    try:
        yield
    finally:
        logger.setLevel(level)
        if multiproc is None:
            os.environ.pop("DISABLE_MULTIPROC", None)
        else:
            os.environ["DISABLE_MULTIPROC"] = multiproc


@contextlib.contextmanager
def _streams(progress: bool) -> Iterator[None]:
    """The harness prints (bootstrap notes) to stdout, which ``workbench run --json`` keeps for its object: to
    stderr with progress, else nowhere (with its own bars and the data loaders' too)."""
    if progress:
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _needs_hub(manager: Any, name: str) -> bool:
    """Whether a task reads its data set from the hub (a group or tag: whether any of its tasks does)."""
    from lm_eval.tasks._index import Kind

    entry = manager.task_index.get(name)
    if entry is None or entry.cfg is None:
        return True
    if entry.kind in (Kind.TASK, Kind.PY_TASK):
        path = str(entry.cfg.get("dataset_path") or "")  # none: a Python task that loads its own data
        return not path or (path not in _LOCAL_BUILDERS and not os.path.isdir(path))
    children = entry.cfg.get("task") or []
    children = [children] if isinstance(children, (str, dict)) else children
    names = [c if isinstance(c, str) else c.get("task", "") for c in children]
    return not names or any(_needs_hub(manager, child) for child in names if child != name)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:200]


def check_tasks(tasks: tuple[str, ...] | list[str], family: str = "causal-lm") -> None:
    """Every name is a task, group or tag the harness knows (or a local task), and its data set loads:
    SpecError otherwise (a hub task without network says so). Loading caches the data set, so the run
    itself reads it from the cache."""
    if not tasks:
        return
    if family != "causal-lm":
        raise SpecError(f"evaluation.tasks scores a causal LM; this model is a {family}",
                        "drop evaluation.tasks for encoders (they are scored by embedding fidelity)")
    manager = task_manager(tasks)
    for name in tasks:
        if name not in manager.task_index:
            raise SpecError(f"unknown task {name!r}: neither a local task nor one lm-eval {metadata.version('lm_eval')} knows",
                            f"use a local task ({', '.join(LOCAL_TASKS)}; see `workbench tasks`) or a harness task "
                            "name (`lm_eval ls tasks`)")
    reachable = None
    for name in tasks:
        hub = _needs_hub(manager, name)
        if hub and reachable is None:
            reachable = hub_reachable()
        try:
            with hub_offline(hub and not reachable), _quiet_harness(), _streams(progress=False):
                manager.load([name])
        except Exception as err:  # noqa: BLE001 - data loaders raise many types; each means "cannot be read"
            if hub and not reachable:
                raise SpecError(f"task {name} needs its data set from the Hugging Face hub, which is not reachable",
                                _fix()) from None
            raise SpecError(f"task {name} cannot load its data set ({type(err).__name__}: {_first_line(err)})",
                            "check the task's data set and your access to it, or use a local task "
                            "(`workbench tasks`)") from None


def _prepare_tasks(loaded: dict[str, Any], num_fewshot: int | None) -> None:
    """As ``lm_eval.simple_evaluate`` does: the spec's num_fewshot over a task's own default (never over a
    task that fixes 0), 0 where neither says, and the harness's fewshot seed."""
    for task in loaded["tasks"].values():
        default = task.get_config("num_fewshot")
        if num_fewshot is not None and default != 0:
            task.set_config(key="num_fewshot", value=num_fewshot)
        elif default is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=FEWSHOT_SEED)


def metrics_of(results: dict[str, Any]) -> dict[str, float]:
    """``<task>/<metric>`` (and ``_stderr``) for every finite number the harness reports per task or
    group; a filter other than ``none`` is appended (``<task>/<metric>/<filter>``); ``<task>/documents``."""
    out: dict[str, float] = {}
    for task, values in {**results.get("results", {}), **results.get("groups", {})}.items():
        for key, value in values.items():
            if "," not in key or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            metric, filter_name = key.split(",", 1)
            if math.isfinite(value):
                out[f"{task}/{metric}" if filter_name == "none" else f"{task}/{metric}/{filter_name}"] = float(value)
    for task, counts in results.get("n-samples", {}).items():
        out[f"{task}/documents"] = float(counts.get("effective", 0))
    return out


def run_tasks(model: Any, tokenizer: Any, tasks: tuple[str, ...] | list[str], limit: int | None = None,
              num_fewshot: int | None = None, progress: bool = False) -> dict[str, float]:
    """Score ``model`` (as it is: pruned weights in place) on the tasks; metrics as ``metrics_of`` names
    them, plus ``tasks_seconds``."""
    from lm_eval.evaluator import evaluate

    from workbench.evaluation.adapter import WorkbenchLM

    started = time.perf_counter()
    manager = task_manager(tasks)
    hub = any(_needs_hub(manager, name) for name in tasks)
    with hub_offline(hub and not hub_reachable()), _quiet_harness(), _streams(progress):
        loaded = manager.load(list(tasks))
        _prepare_tasks(loaded, num_fewshot)
        lm = WorkbenchLM(model, tokenizer, progress=progress)
        results = evaluate(lm=lm, task_dict=loaded, limit=limit, bootstrap_iters=BOOTSTRAP_ITERS, log_samples=False)
    return {**metrics_of(results or {}), "tasks_seconds": time.perf_counter() - started}
