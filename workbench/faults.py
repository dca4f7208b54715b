"""Crash points for tests: the places a killed process must leave a consistent store and resumable files.

``WORKBENCH_FAULTPOINT=<name>`` makes the process exit at once at the point of that name, as ``kill -9``
would (no cleanup, no ``finally``), so the tests can prove what a crash there leaves behind.
``WORKBENCH_SLOWPOINT=<name>`` makes it wait ``WORKBENCH_SLOW_S`` seconds (default 2) there instead, so a
test can interrupt a job that is surely still running, however fast the machine.
"""

from __future__ import annotations

import os
import time


def faultpoint(name: str) -> None:
    if os.environ.get("WORKBENCH_FAULTPOINT") == name:
        os._exit(137)
    if os.environ.get("WORKBENCH_SLOWPOINT") == name:
        time.sleep(float(os.environ.get("WORKBENCH_SLOW_S", "2")))
