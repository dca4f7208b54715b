"""The app in a real browser: Debian's chromium driven by Playwright visits every page, makes one
interaction on each, checks what rendered and saves a screenshot under test-artifacts/app/."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from workbench_app.benchmark import RENDERED

from tests.app.conftest import APP

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = APP.parent / "test-artifacts" / "app"
TIMEOUT_MS = 60_000

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                 "(apt-get install chromium chromium-driver; `make system-packages`)")]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(rich, tmp_path_factory):
    """`streamlit run app/main.py` from the repository root, so that .streamlit/config.toml applies
    (it binds to 127.0.0.1); the store is the test's rich store."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    env = {**os.environ, "WORKBENCH_STORE": str(rich[0])}
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app/main.py", f"--server.port={port}"],
                                   cwd=APP.parent, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"streamlit did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1400, "height": 2000})  # tall: the screenshots show whole pages
        tab.set_default_timeout(TIMEOUT_MS)
        tab.goto(server)
        yield tab
        browser.close()


def settle(page) -> None:
    """Wait until the script run triggered by the last action has finished and its charts are drawn."""
    page.wait_for_timeout(300)  # the run starts a moment after the action
    page.wait_for_function(RENDERED)


def pick_first_row(page, box) -> str:
    """Tick the table's first row and return the run picker's text once it shows the pick. On a busy machine the
    click may land while the table is still being redrawn and be lost: then (and only then) click again."""
    selected = page.get_by_test_id("stMultiSelect").filter(has_text="Selected runs")
    for _ in range(3):
        page.mouse.click(box["x"] + 14, box["y"] + 35 + 17)
        settle(page)
        for _ in range(30):
            picked = selected.inner_text()
            if picked.strip() != "Selected runs":
                return picked
            page.wait_for_timeout(500)
    return selected.inner_text()


def visit(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
    page.get_by_role("heading", name=title, exact=True).wait_for()
    settle(page)


def choose(page, label: str, option: str) -> None:
    box = page.get_by_test_id("stSelectbox").filter(has_text=label).first.locator("input")
    box.click()
    box.fill(option)  # type to filter the options, then take the exact one
    page.get_by_role("option", name=option, exact=True).click()
    settle(page)


def multichoose(page, label: str, option: str) -> None:
    page.get_by_test_id("stMultiSelect").filter(has_text=label).first.click()
    page.get_by_role("option", name=option, exact=True).click()
    page.keyboard.press("Escape")
    settle(page)


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def no_error(page) -> None:
    assert page.get_by_test_id("stException").count() == 0, page.get_by_test_id("stException").first.inner_text()


def test_every_page_in_chromium(page):
    page.get_by_role("heading", name="Runs", exact=True).wait_for()
    settle(page)
    assert "9 of 9 runs shown" in page.get_by_test_id("stCaptionContainer").all_inner_texts()[1].replace("*", "")
    query = page.get_by_label("Query", exact=True)
    query.fill("method=magnitude")
    query.press("Enter")
    settle(page)
    page.get_by_text("4 of 9 runs shown").wait_for()
    table = page.get_by_test_id("stDataFrame").first
    table.wait_for()
    box = table.bounding_box()  # the grid is a canvas: tick the first row's box by position
    picked = pick_first_row(page, box)
    assert "eeeeeeee" in picked  # newest magnitude run: the one still running
    page.get_by_text("Final metrics").wait_for()
    no_error(page)
    shot(page, "runs")

    visit(page, "Compare")
    choose(page, "Pareto front", "each colour group")
    page.locator("svg text", has_text="front: magnitude").first.wait_for()
    assert page.locator(".js-plotly-plot").count() == 1  # one view at a time
    no_error(page)
    shot(page, "compare")

    visit(page, "Layers")
    choose(page, "Heatmap of", "achieved − target")
    page.locator("svg text", has_text="achieved − target").first.wait_for()
    assert page.locator(".js-plotly-plot").count() >= 2
    no_error(page)
    shot(page, "layers")

    visit(page, "Masks")
    choose(page, "Layer", "model.layers.1.mlp.up_proj")
    page.locator("svg text", has_text="model.layers.1.mlp.up_proj").first.wait_for()
    assert page.locator(".js-plotly-plot").count() == 4  # the mask, the zoomed window, row and column sparsity
    no_error(page)
    shot(page, "masks")

    visit(page, "Training")
    choose(page, "Divergence", "iou")
    page.locator("svg text", has_text="iou since the previous snapshot").first.wait_for()
    no_error(page)
    shot(page, "training")

    visit(page, "Kernels")
    page.get_by_text("32 measured kernel cases").wait_for()  # graph timing: 2 shapes x 2 dtypes x 4 tokens x 2 backends
    multichoose(page, "Dtype", "float16")
    page.get_by_text("16 measured kernel cases").wait_for()
    no_error(page)
    shot(page, "kernels")

    visit(page, "Launch")
    page.get_by_test_id("stButtonGroup").get_by_text("YAML", exact=True).click()
    settle(page)
    page.get_by_label("Spec or sweep (YAML)", exact=True).fill("model: tiny-llama\nmethdo: magnitude")
    page.get_by_role("button", name="Validate and start").click()
    settle(page)
    page.get_by_text("unknown key 'methdo'").wait_for()
    no_error(page)
    shot(page, "launch")
