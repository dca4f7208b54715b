"""Crash points for tests: the places a killed process must leave a consistent store and resumable files.

``WORKBENCH_FAULTPOINT=<name>`` makes the process exit at once at the point of that name, as ``kill -9``
would (no cleanup, no ``finally``), so the tests can prove what a crash there leaves behind.
"""

from __future__ import annotations

import os


def faultpoint(name: str) -> None:
    if os.environ.get("WORKBENCH_FAULTPOINT") == name:
        os._exit(137)
