"""Fixtures of the distributed tests: a store on either backend, tiny specs, and processes started together."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.store.conftest import lake_url, postgres_server  # noqa: F401 - fixtures shared with the store tests
from workbench.store import Store

# tiny jobs: the runner's whole path (prepare, claim, execute, write) in about a second
TINY = {"model": "tiny-llama", "data": "shakespeare", "method": "magnitude", "sparsity": 0.5,
        "calibration": {"samples": 2, "seq_len": 32}, "evaluation": {"windows": 2, "seq_len": 32}}


@pytest.fixture(params=["file", "lake"])
def any_store(request, tmp_path) -> Store:
    """A fresh store with its schema: a DuckDB file, or DuckLake on the local PostgreSQL."""
    if request.param == "file":
        store = Store(tmp_path / "store" / "wb.duckdb")
    else:
        store = Store(request.getfixturevalue("lake_url"))
    store.transaction(lambda con: None)  # the schema, as the first job would create it
    return store


def start_together(script: str, argv_list: list[list[str]], env: dict | None = None,
                   timeout: float = 240) -> list[subprocess.Popen]:
    """Start one process per argv; each prints "ready" once imported and set up, then waits for a line on
    stdin: they are sent "go" together, so what they do next races for real."""
    procs = [subprocess.Popen([sys.executable, "-c", script, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
             for argv in argv_list]
    deadline = time.monotonic() + timeout
    for proc in procs:
        line = proc.stdout.readline().strip()
        assert line == "ready", proc.stderr.read()[-3000:] if proc.poll() is not None else line
        assert time.monotonic() < deadline
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    return procs
