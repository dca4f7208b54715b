"""The app cannot be turned against its host: it serves loopback only unless told otherwise, opens stores
and launches specs only inside the folders allowed when it started, turns every launch error into a
message, and signals only the process a launch started."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import psutil
import pytest
import tomllib
from streamlit import config
from workbench_app import access, forms, launcher

from tests.app.conftest import APP
from tests.app.helpers import no_exception, notices


@pytest.fixture
def fresh_allow_list(monkeypatch):
    """The allow-list read again from the environment, as a server starting now would."""
    monkeypatch.setattr(access, "_ALLOWED", None)
    monkeypatch.delenv(access.ALLOW_ENV, raising=False)
    yield
    access._ALLOWED = None


@pytest.fixture
def address():
    """Set the server address the app sees (as --server.address would), restored afterwards."""
    before = config.get_option("server.address")
    yield lambda value: config.set_option("server.address", value)
    config.set_option("server.address", before)


def test_config_binds_to_localhost_and_hides_error_details():
    settings = tomllib.loads((APP.parent / ".streamlit" / "config.toml").read_text())
    assert settings["server"]["address"] == "127.0.0.1"
    assert settings["client"]["showErrorDetails"] is False


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.1.1", True), ("localhost", True),
                                            ("::1", True), ("[::1]", True), ("0.0.0.0", False), ("", False),
                                            (None, False), ("192.168.1.20", False), ("::", False)])
def test_loopback_addresses(host, loopback):
    assert access.is_loopback(host) is loopback


@pytest.mark.parametrize("bound", ["0.0.0.0", None, "10.0.0.5"])
def test_the_app_refuses_to_serve_beyond_this_machine(open_page, suite_path, address, monkeypatch, bound):
    monkeypatch.delenv(access.EXPOSE_ENV, raising=False)
    address(bound)
    at = open_page(suite_path, "runs")
    no_exception(at)
    assert "This app is listening on" in notices(at) and access.EXPOSE_ENV in notices(at)
    assert not at.dataframe and not at.sidebar.text_input  # no result shown, no store box
    monkeypatch.setenv(access.EXPOSE_ENV, "1")  # exposed on purpose
    at.run()
    no_exception(at)
    assert len(at.dataframe[0].value) == 4


def test_the_sidebar_opens_only_stores_in_the_allowed_folders(open_page, rich, tmp_path, fresh_allow_list):
    path, _ = rich
    at = open_page(path, "runs")
    assert len(at.dataframe[0].value) == 9
    outside = tmp_path / "elsewhere.duckdb"
    shutil.copy(path, outside)
    link = path.parent / "link.duckdb"  # inside the folder by name, outside once resolved
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
    for hostile in (str(outside), str(path.parent / ".." / outside.parent.name / outside.name), str(link),
                    "/etc/passwd", "ducklake:postgres:host=attacker.example dbname=x", "bad\0path"):
        at.sidebar.text_input(key="store_input").input(hostile).run()
        no_exception(at)
        assert "Store not opened" in notices(at)
        assert "outside the folders" in notices(at) or "may not open the shared store" in notices(at)
        assert len(at.dataframe[0].value) == 9  # still the store it started on
    beside = path.parent / "beside.duckdb"
    shutil.copy(path, beside)
    at.sidebar.text_input(key="store_input").input(str(beside)).run()
    no_exception(at)
    assert "Store not opened" not in notices(at) and str(beside) in at.caption[0].value


def test_the_allow_list_comes_from_the_environment(tmp_path, monkeypatch, fresh_allow_list):
    allowed_folder = tmp_path / "allowed"
    allowed_folder.mkdir()
    monkeypatch.setenv(access.ALLOW_ENV, f"{allowed_folder}{os.pathsep}ducklake:postgres:dbname=lab")
    rules = access.allowed()
    assert rules.store_problem(str(allowed_folder / "a.duckdb")) is None
    assert rules.store_problem("ducklake:postgres:dbname=lab") is None
    assert "outside the folders" in rules.store_problem(str(tmp_path / "b.duckdb"))
    assert "may not open" in rules.store_problem("ducklake:postgres:dbname=other")
    monkeypatch.setenv(access.ALLOW_ENV, "/")  # read once: a later change in the environment changes nothing
    assert access.allowed() is rules and access.allowed().store_problem("/etc/passwd")


@pytest.mark.parametrize("text", [
    "model: /etc\nmethod: magnitude",
    "model: tiny-llama\ndata: /etc/passwd",
    "model: tiny-llama\ndata: ../../../../../../../etc/hostname",
    "base: {model: tiny-llama}\ngrid: {data: [shakespeare, ~/.bashrc]}",
    "kind: train\nmodel: /etc\ndata: shakespeare\nsteps: 1",
])
def test_launch_refuses_specs_that_read_outside_the_allowed_folders(open_page, tmp_path, fresh_allow_list, text):
    store = tmp_path / "store" / "workbench.duckdb"
    at = open_page(store, "launch")
    at.get_by_key("launch_mode").set_value("YAML").run()
    at.text_area(key="launch_yaml_text").input(text)
    next(b for b in at.button if b.label == "Validate and start").click().run()
    no_exception(at)
    assert "outside the folders this app may read" in notices(at)
    assert not launcher.launches_folder(str(store)).exists()


@pytest.mark.parametrize("text, words", [
    ("kind: [prune]", "kind must be a name"),
    ("base: {model: tiny-llama, calibration: 5}\ngrid: {calibration.seed: [1, 2]}", "reaches into 'calibration'"),
    ("kind: train\nepochs: .inf", "epochs"),
    ("model: tiny-llama\nmethod: magnitude\nmethod: random", "given twice"),
    ("model: tiny-llama\nsparsity: 1e999", "sparsity"),
    ("base: [1, 2]", "must be a mapping"),
    ("model: x\n" + "# padding\n" * 20_000, "characters long"),
])
def test_every_launch_error_is_a_message(open_page, tmp_path, text, words):
    store = tmp_path / "store" / "workbench.duckdb"
    at = open_page(store, "launch")
    at.get_by_key("launch_mode").set_value("YAML").run()
    at.text_area(key="launch_yaml_text").input(text)
    next(b for b in at.button if b.label == "Validate and start").click().run()
    no_exception(at)
    assert words in notices(at) and "Fix:" in notices(at)
    assert not launcher.launches_folder(str(store)).exists()


def test_an_unexpected_error_while_launching_is_a_message_too(open_page, tmp_path, monkeypatch):
    def overflow(_sweep):
        raise OverflowError("cannot convert float infinity to integer")

    monkeypatch.setattr(forms, "expand", overflow)
    at = open_page(tmp_path / "store" / "workbench.duckdb", "launch")
    at.get_by_key("launch_mode").set_value("YAML").run()
    next(b for b in at.button if b.label == "Validate and start").click().run()
    no_exception(at)
    assert "could not be read** (OverflowError)" in notices(at)


def _own_group_sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)


def test_stop_signals_only_the_process_the_launch_started(tmp_path):
    store = tmp_path / "workbench.duckdb"
    launch = launcher.start({"base": {"model": "tiny-llama", "method": "magnitude"}}, ["{}"], str(store), "real")
    meta = json.loads((launch.folder / "meta.json").read_text())
    assert meta["cmdline"][:2] == ["sh", "-c"] and meta["create_time"] > 0
    bystander = _own_group_sleeper()
    try:
        # meta.json pointing at another process group (a reused pid, or an edited file): the same recorded
        # identity does not match it, so nothing is signalled
        forged = launcher.Launch(launch.folder, {**meta, "pid": bystander.pid})
        assert launcher.stop(forged) is None and forged.status == "stopped"
        legacy = launcher.Launch(launch.folder, {k: v for k, v in meta.items() if k not in ("create_time", "cmdline")}
                                 | {"pid": bystander.pid})
        assert legacy.status == "running"  # a launch without an identity: its number alone says alive
        assert "not the one this launch started" in launcher.stop(legacy)
        time.sleep(0.3)
        assert bystander.poll() is None and psutil.pid_exists(bystander.pid)
        assert launcher.stop(launch) is None
        deadline = time.monotonic() + 20
        while launch.status == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert launch.status == "stopped"
    finally:
        bystander.kill()
        bystander.wait()
