"""JupyterLab in headless Chromium: run the quickstart, see its widgets render, and drive one.

Chromium is Debian's (/usr/bin/chromium, `make system-packages`); Playwright comes from PyPI and is
never asked to download a browser. A screenshot lands in test-artifacts/jupyterlab-quickstart.png.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from tests.notebooks.conftest import ARTIFACTS, NOTEBOOKS, TINY
from workbench import api

CHROMIUM = "/usr/bin/chromium"
LEGEND = "items => items.map(item => item.textContent)"
# the open notebook's kernel has started and is idle, and its cells are on the page
KERNEL_IDLE = """() => {
    const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const kernel = panel && panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel;
    return Boolean(kernel && kernel.status === 'idle' && panel.content.widgets.length > 3);
}"""
pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server rooted in tmp_path, holding the quickstart with tiny parameters."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("needs Debian chromium at /usr/bin/chromium: run `make system-packages`")
    notebook = load_notebook_node(str(NOTEBOOKS / "01_quickstart.ipynb"))
    store_path = tmp_path / "store" / "workbench.duckdb"
    parameters = {"store_path": str(store_path), "kinds": ["prune"], "baseline": True, **TINY}
    notebook = parameterize_notebook(notebook, parameters, kernel_name="python3", language="python")
    root = tmp_path / "lab"
    root.mkdir()
    nbformat.write(notebook, root / "quickstart.ipynb")
    port = _free_port()
    # the server's own state stays out of the user's Jupyter folders and out of the file browser
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    log = open(tmp_path / "lab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--IdentityProvider.token=", "--ServerApp.password=", "--LabApp.expose_app_in_browser=True",
         "--allow-root", f"--ServerApp.root_dir={root}"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail("jupyter lab did not start: " + (tmp_path / "lab.log").read_text()[-2000:])
            time.sleep(0.5)
    try:
        yield url, store_path
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_quickstart_renders_its_widgets_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    url, store_path = lab
    ARTIFACTS.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{url}/lab/tree/quickstart.ipynb")
            page.wait_for_function(KERNEL_IDLE, timeout=120_000)
            # not awaited: the command's promise settles only when every cell has run
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            # the summary cell is last: its JSON output appears once every cell above it ran
            page.wait_for_selector(".jp-RenderedJSON, .jp-OutputArea-output[data-mime-type='application/json']",
                                   timeout=240_000)
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            tracebacks = [text for text in errors.all_inner_texts() if "Traceback" in text or "Error" in text]
            assert not tracebacks, tracebacks[0][:2000]
            page.wait_for_selector(".js-plotly-plot", timeout=60_000)
            assert page.locator(".js-plotly-plot").count() >= 3  # compare, mask viewer, dashboard views
            assert page.locator(".widget-select-multiple").count() >= 2  # two run pickers
            legend = page.locator(".js-plotly-plot").first.locator(".legendtext")
            assert {"magnitude", "random", "Pareto front"} <= set(legend.evaluate_all(LEGEND))

            # a choice in the browser reaches the kernel, which redraws the figure
            page.locator(".widget-dropdown", has_text="method").first.locator("select").select_option("random")
            page.wait_for_function(
                "() => { const items = [...document.querySelector('.js-plotly-plot').querySelectorAll('.legendtext')]"
                ".map(e => e.textContent); return !items.includes('magnitude') && items.includes('random'); }",
                timeout=30_000)
            assert set(legend.evaluate_all(LEGEND)) == {"random", "Pareto front"}  # an empty selection has no entry
            news = page.get_by_role("button", name="No", exact=True)  # JupyterLab's news prompt hides a corner
            if news.count():
                news.first.click()
            page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS.parent / "jupyterlab-quickstart.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS.parent / "jupyterlab-quickstart-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    runs = api.runs(store=api.open_store(store_path))
    assert len(runs) == 4 and (runs["status"] == "finished").all()
