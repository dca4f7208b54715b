"""Downstream accuracy of a pruned causal LM through lm-evaluation-harness (``lm_eval``).

A prune spec's ``evaluation.tasks`` names harness tasks; after pruning, the run's own model is scored on
them through ``WorkbenchLM`` (an ``lm_eval`` ``LM`` over the loaded module, see ``adapter``), and each
task's metrics are stored as ``<task>/<metric>`` and ``<task>/<metric>_stderr`` (``<task>/acc``,
``<task>/acc_norm`` where the task has it), with ``<task>/documents``.

Offline, the workbench's own local tasks (``local``: built from the held-out text of its corpora) always
work; any task the harness knows works where its data set can be read (the Hugging Face hub, or its local
cache). Names are checked before a run is stored (``check_tasks`` in the prune job's ``prepare``): an
unknown task, or a hub task without network, ends in one ``SpecError`` and nothing is stored.

This module stays light (no ``lm_eval`` import) so that a spec's key costs nothing extra; ``harness``
imports the harness when tasks are run.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

# bumped when the scores of the same model on the same tasks change (adapter, seeds, metric extraction)
ADAPTER_VERSION = "1"

__all__ = ["ADAPTER_VERSION", "check_tasks", "evaluation_identity", "local_task_names", "run_tasks"]


def local_task_names() -> list[str]:
    from workbench.evaluation.local import LOCAL_TASKS

    return list(LOCAL_TASKS)


def harness_version() -> str:
    try:
        return metadata.version("lm_eval")
    except metadata.PackageNotFoundError:
        return "missing"


def evaluation_identity(tasks: tuple[str, ...] | list[str]) -> str:
    """What a run's task scores depend on beside the model: adapter and harness versions, and for a local
    task its exact documents (builder version, template, corpus text). Part of the key only when tasks
    are named, so keys of plain perplexity runs hold."""
    from workbench.evaluation.local import LOCAL_TASKS, task_identity

    parts = [f"adapter@{ADAPTER_VERSION}", f"lm_eval@{harness_version()}"]
    parts += [task_identity(name) if name in LOCAL_TASKS else name for name in tasks]
    return ",".join(parts)


def check_tasks(tasks: tuple[str, ...] | list[str], family: str = "causal-lm") -> None:
    """SpecError unless every task is known and its data set can be read (see ``harness.check_tasks``)."""
    from workbench.evaluation.harness import check_tasks as check

    check(tasks, family)


def run_tasks(model: Any, tokenizer: Any, tasks: tuple[str, ...] | list[str], limit: int | None = None,
              num_fewshot: int | None = None, progress: bool = False) -> dict[str, float]:
    """Per-task metrics of ``model`` (see ``harness.run_tasks``)."""
    from workbench.evaluation.harness import run_tasks as run

    return run(model, tokenizer, tasks, limit=limit, num_fewshot=num_fewshot, progress=progress)
