"""Errors that users see.

Every error a user can cause carries the problem and the fix; the CLI prints it as one line and exits
with code 2. Internal bugs stay ordinary exceptions so that their stack traces reach us.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """A problem the user can fix. ``str(err)`` is one line: what is wrong, then how to fix it."""

    def __init__(self, problem: str, fix: str):
        self.problem = problem.rstrip(".")
        self.fix = fix.rstrip(".")
        super().__init__(f"{self.problem}. Fix: {self.fix}.")


class SpecError(WorkbenchError):
    """A job or sweep spec that does not validate."""


class AssetError(WorkbenchError):
    """A model, corpus or data set that cannot be found or read."""


class StoreError(WorkbenchError):
    """The result store cannot be opened, written or migrated."""


class StoreBusyError(StoreError):
    """Another process held the store's lock for longer than we were willing to wait."""


class PruningError(WorkbenchError):
    """A pruning request that cannot be met on this model (width, sparsity, NaN weights...)."""
