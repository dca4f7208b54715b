"""Fixtures of the app tests: stores built once per session, and AppTest runs of a page on a store."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.stores import multi_model_store, rich_store, suite_store, task_store

APP = Path(__file__).resolve().parents[2] / "app"
sys.path.insert(0, str(APP))  # the app's helper package, for the unit tests of its pure functions

PAGES = ["runs", "compare", "layers", "masks", "training", "kernels", "launch", "running"]


@pytest.fixture(scope="session")
def suite_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "workbench.duckdb"
    suite_store(path)
    return path


@pytest.fixture(scope="session")
def rich(tmp_path_factory, suite_path) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("rich") / "workbench.duckdb"
    store, ids = rich_store(suite_path, path)
    return store.path, ids


@pytest.fixture
def open_page(monkeypatch):
    """open_page(store_path, page) -> an AppTest that has run the page once on that store."""

    def run(store_path: Path, page: str, **session) -> AppTest:
        monkeypatch.setenv("WORKBENCH_STORE", str(store_path))
        at = AppTest.from_file(str(APP / "main.py"), default_timeout=60)
        for key, value in session.items():
            at.session_state[key] = value
        at.run()
        if page != "runs":
            at.switch_page(f"views/{page}.py").run()
        return at

    return run


@pytest.fixture(scope="session")
def multi(tmp_path_factory, suite_path) -> tuple[Path, dict]:
    """tiny-llama (the suite), SmolLM2 (most runs, seeds, 210 layers, structured runs), fashion-cnn, a CPU bench."""
    path = tmp_path_factory.mktemp("multi") / "workbench.duckdb"
    store, ids = multi_model_store(suite_path, path)
    return store.path, ids


@pytest.fixture(scope="session")
def tasks(tmp_path_factory) -> tuple[Path, dict]:
    """SmolLM2 runs with downstream task scores (perplexity and accuracy disagree on the front), a tiny-llama
    model without them, an encoder run."""
    store, ids = task_store(tmp_path_factory.mktemp("tasks") / "workbench.duckdb")
    return store.path, ids
