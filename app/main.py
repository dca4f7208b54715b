"""The Sparsity Workbench app: `streamlit run app/main.py` (binds to 127.0.0.1, see .streamlit/config.toml; on
any other address it refuses to serve unless WORKBENCH_APP_EXPOSE=1, see workbench_app/access.py).

Every page reads the store through ``workbench.queries`` (via ``workbench_app.data``), opening a
read-only connection per query; the Launch page starts jobs as separate processes. The pages live in
``views/``, not ``pages/``: Streamlit runs a ``pages/`` file on its own (without this script, so without
the sidebar) when a browser opens its URL before any session has run this script.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)  # the pages import workbench_app from here

from streamlit import config  # noqa: E402
from workbench_app.access import exposure_problem  # noqa: E402
from workbench_app.ui import sidebar  # noqa: E402

st.set_page_config(page_title="Sparsity Workbench", page_icon=":material/grid_on:", layout="wide")
if not config.is_manually_set("client.showErrorDetails"):
    # started outside the repository root (no .streamlit/config.toml): still no tracebacks in the browser
    st.set_option("client.showErrorDetails", "none")
problem = exposure_problem(st.get_option("server.address"))
if problem:
    st.error(problem, icon=":material/lock:")
    st.stop()

PAGES = [
    st.Page("views/runs.py", title="Runs", icon=":material/table_rows:", default=True),
    st.Page("views/compare.py", title="Compare", icon=":material/scatter_plot:"),
    st.Page("views/layers.py", title="Layers", icon=":material/stacked_bar_chart:"),
    st.Page("views/masks.py", title="Masks", icon=":material/grid_on:"),
    st.Page("views/training.py", title="Training", icon=":material/show_chart:"),
    st.Page("views/kernels.py", title="Kernels", icon=":material/speed:"),
    st.Page("views/launch.py", title="Launch", icon=":material/rocket_launch:"),
    st.Page("views/running.py", title="Running", icon=":material/pending:"),
]

page = st.navigation(PAGES)
sidebar()
page.run()
