"""`workbench bench build-sm90` compiles with as many nvcc processes as the machine's cores and memory allow."""

from types import SimpleNamespace

import psutil

from workbench.cli.bench import default_build_jobs


def test_build_jobs_follow_the_cores_when_memory_allows(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=128 * 2**30))
    assert default_build_jobs() == 16


def test_build_jobs_are_bounded_by_memory(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=10 * 2**30))
    assert default_build_jobs() == 3  # about 3 GiB a process
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=2**30))
    assert default_build_jobs() == 1
