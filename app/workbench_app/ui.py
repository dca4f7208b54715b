"""Pieces every page shares: the sidebar, empty states, run pickers, table formats and figure defaults."""

from __future__ import annotations

import shlex
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from workbench.figures import readable
from workbench_app.access import allowed
from workbench_app.data import STORE_KEY, Reader, clear_caches, store_location

SELECTION = "selection"  # the runs chosen on any page, shared by all pages (not a widget key)
RUNS_PICK = "runs_pick"  # the Runs page's picker of selected runs
MAX_OPTIONS = 1000  # run pickers list the newest runs only: a browser drop-down of 10,000 entries is no help
FILL_HINT = ("Fill it with `workbench demo` (the default comparison suite), run a spec with "
             "`workbench run SPEC.yaml`, or start a job on the **Launch** page.")


def sidebar() -> None:
    """The store chooser (every page reads the store named here) and a button that re-reads it now."""
    with st.sidebar:
        location = st.text_input("Store", value=store_location(), key="store_input",
                                 help="DuckDB file of results (or a ducklake: URL); default from WORKBENCH_STORE. "
                                      "Only stores in the folders allowed when the app started (WORKBENCH_APP_ALLOW, "
                                      "else the starting store's folder) open.")
        wanted = location.strip()
        if wanted and wanted != st.session_state.get(STORE_KEY):
            problem = allowed().store_problem(wanted)
            if problem:  # the store stays the one read so far
                st.error(f"**Store not opened**: {problem}.", icon=":material/block:")
            else:
                st.session_state[STORE_KEY] = wanted
        if st.button("Reload", help="read the store again now (it is re-read by itself after every job commits)"):
            clear_caches()


def selection() -> list[str]:
    return list(st.session_state.get(SELECTION, []))


def set_selection(run_ids: list[str]) -> None:
    st.session_state[SELECTION] = list(dict.fromkeys(run_ids))


def empty_store(reader: Reader) -> None:
    where = f"`{reader.location}`"
    if not reader.exists:
        st.info(f"**No store at {where} yet.** {FILL_HINT}", icon=":material/inbox:")
    else:
        st.info(f"**The store at {where} holds no runs yet.** {FILL_HINT}", icon=":material/inbox:")
    st.page_link("views/launch.py", label="Go to Launch", icon=":material/rocket_launch:")


def runs_or_stop(reader: Reader) -> pd.DataFrame:
    """All runs; an empty store shows how to fill it and ends the page."""
    runs = reader.runs()
    if runs.empty:
        empty_store(reader)
        st.stop()
    return runs


def page_start(title: str) -> tuple[Reader, pd.DataFrame]:
    """A page's title, its store reader and every run; an empty store shows how to fill it and ends the page."""
    st.title(title)
    reader = Reader()
    return reader, runs_or_stop(reader)


def pick_runs(label: str, candidates: pd.DataFrame, key: str, default: int = 4,
              help: str | None = None, default_ids: list[str] | None = None) -> list[str]:
    """A multiselect of runs (newest first) that starts from, and updates, the selection shared by all pages;
    with no selection it starts from ``default_ids`` (else the ``default`` newest runs)."""
    ids = list(candidates["run_id"])
    chosen = [r for r in selection() if r in set(ids)]
    options = list(dict.fromkeys(chosen + ids[:MAX_OPTIONS]))
    labels = dict(zip(candidates["run_id"], candidates["label"]))
    if key in st.session_state:
        st.session_state[key] = [r for r in st.session_state[key] if r in labels]
    else:
        st.session_state[key] = chosen or (list(default_ids) if default_ids is not None else ids[:default])

    def remember() -> None:
        set_selection(st.session_state[key])

    picked = st.multiselect(label, options, key=key, format_func=lambda r: labels.get(r, r), on_change=remember,
                            help=help or "the selection carries over to the other pages")
    if len(ids) > MAX_OPTIONS:
        st.caption(f"Listing the newest {MAX_OPTIONS:,} of {len(ids):,} runs; narrow them on the **Runs** page "
                   "with the query box and select there.")
    return picked


def pick_run(label: str, candidates: pd.DataFrame, key: str) -> str | None:
    """One run, defaulting to the first of the shared selection that is a candidate."""
    ids = list(candidates["run_id"])
    if not ids:
        return None
    labels = dict(zip(candidates["run_id"], candidates["label"]))
    preferred = next((r for r in selection() if r in labels), ids[0])
    options = list(dict.fromkeys([preferred] + ids[:MAX_OPTIONS]))
    if st.session_state.get(key) not in labels:
        st.session_state[key] = preferred
    return st.selectbox(label, options, key=key, format_func=lambda r: labels.get(r, r))


def choose(label: str, options: list[Any], key: str, default: Any = None, **kwargs: Any) -> Any:
    """A selectbox whose value survives page switches and falls back to ``default`` when it vanishes."""
    if not options:
        return None
    if st.session_state.get(key) not in options:
        st.session_state[key] = default if default in options else options[0]
    value = st.selectbox(label, options, key=key, **kwargs)
    return st.session_state.get(key) if value is None else value


def view_switch(views: list[str], key: str) -> str:
    """Which of a page's views to draw: one chart of thousands of points at a time keeps a page quick
    to draw in the browser (each such chart costs it a second or more)."""
    return st.segmented_control("View", views, default=views[0], key=key, persist_state="session",
                                label_visibility="collapsed") or views[0]


def number_columns(frame: pd.DataFrame) -> dict[str, Any]:
    """Column formats for run tables: fractions as percents, other floats with 4 significant digits."""
    config: dict[str, Any] = {}
    for column in frame.columns:
        if column.endswith("sparsity") or column in ("embedding_cosine", "neighbour_agreement", "accuracy"):
            config[column] = st.column_config.NumberColumn(column, format="%.3f")
        elif pd.api.types.is_float_dtype(frame[column]):
            config[column] = st.column_config.NumberColumn(column, format="%.4g")
    return config


def store_option(reader: Reader) -> str:
    """`` --store <the store this page reads>``, for a CLI command the page shows."""
    return f" --store {shlex.quote(str(reader.location))}"


def show_figure(figure: go.Figure, key: str, select: bool = False) -> Any:
    """A figure with the app's margins; log axes labelled with whole numbers (``workbench.figures.readable``).
    With ``select``, clicking a point or drawing a box or lasso around points reruns the page, and the
    selection is returned (`selected_runs` reads the runs it names)."""
    readable(figure)
    figure.update_layout(margin=dict(l=10, r=10, t=40, b=10), legend_title_text=figure.layout.legend.title.text)
    selecting = dict(on_select="rerun", selection_mode=("points", "box", "lasso")) if select else {}
    return st.plotly_chart(figure, key=key, config={"displaylogo": False}, **selecting)


def selected_runs(event: Any) -> list[str]:
    """The run ids that a chart selection's points carry, each once, in the order selected: a point's
    ``customdata`` is a run id, or the ids of the runs it stands for separated by spaces, alone or first in a
    row of hover values (``workbench.figures.grouped_traces``). Points without one (a baseline) add none."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return []
    ids: list[str] = []
    for point in points:
        carried = point.get("customdata") if isinstance(point, dict) else None
        if isinstance(carried, list):
            carried = carried[0] if carried else None
        if isinstance(carried, str):
            ids += carried.split()
    return list(dict.fromkeys(ids))


def open_in_runs(run_ids: list[str]) -> None:
    """Make ``run_ids`` the selection and show them on the Runs page."""
    set_selection(run_ids)
    st.session_state[RUNS_PICK] = list(dict.fromkeys(run_ids))
    st.switch_page("views/runs.py")


def table_csv(frame: pd.DataFrame) -> str:
    """``frame`` as CSV, as a table shows it: its rows and columns in their order, lists of tags joined by commas."""
    joined = {c: frame[c].map(lambda v: ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
              for c in frame.columns if frame[c].dtype == object}
    return frame.assign(**joined).to_csv(index=False)
