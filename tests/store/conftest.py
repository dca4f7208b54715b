"""A PostgreSQL database for the shared-store tests: the local server when one runs, else a throwaway
cluster started for the session (Debian's postgresql binaries), else the tests skip with the reason."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import pytest


def _reachable(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres(args: list[str]) -> list[str]:
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(args)] if os.geteuid() == 0 else args


@pytest.fixture(scope="session")
def postgres_server():
    """(host, port) of a PostgreSQL server with trust auth for user postgres."""
    if _reachable(5432):
        yield "127.0.0.1", 5432
        return
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not binaries:
        pytest.skip("no PostgreSQL server on 127.0.0.1:5432 and no initdb: `apt-get install postgresql`")
    bin_dir = os.path.dirname(binaries[-1])
    folder = tempfile.mkdtemp(prefix="wb-pg-")
    shutil.chown(folder, "postgres") if os.geteuid() == 0 else None
    port = _free_port()
    subprocess.run(_as_postgres([f"{bin_dir}/initdb", "-D", folder, "-A", "trust", "-U", "postgres"]), check=True,
                   capture_output=True)
    subprocess.run(_as_postgres([f"{bin_dir}/pg_ctl", "-D", folder, "-o",
                                 f"'-c listen_addresses=127.0.0.1 -p {port} -k {folder}'", "-w", "start"]),
                   check=True, capture_output=True)
    try:
        yield "127.0.0.1", port
    finally:
        subprocess.run(_as_postgres([f"{bin_dir}/pg_ctl", "-D", folder, "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def lake_url(postgres_server, tmp_path, monkeypatch):
    """A fresh DuckLake store on its own PostgreSQL database, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    host, port = postgres_server
    name = f"wb_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    monkeypatch.setenv("WORKBENCH_LAKE_DATA", str(tmp_path / "lake-data"))
    yield f"ducklake:postgres:dbname={name} host={host} port={port} user=postgres"
    for _ in range(20):
        try:
            with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=True) as con:
                con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            break
        except psycopg.Error:
            time.sleep(0.2)
