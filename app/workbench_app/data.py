"""Store access for the pages: every read goes through ``workbench.queries``; no connection outlives a query.

Streamlit reruns a page on every interaction, so reads are cached (``st.cache_data``) under the
store's *signature*: size and modification time of the DuckDB file and of its write-ahead log. A job
that commits changes the signature and the next rerun reads fresh rows. A shared (DuckLake) store has
no file to look at; its signature changes every few seconds instead.

While a job holds the file's write lock a read waits ``BUSY_TIMEOUT_S`` and then gives up with
``StoreBusyError``; ``guarded`` turns that into a notice with a retry button, never a stack trace.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import duckdb
import numpy as np
import pandas as pd
import streamlit as st

from workbench import queries
from workbench.errors import StoreBusyError, WorkbenchError
from workbench.results import PackedMask, pairwise_overlap, run_labels
from workbench.store import Store, default_store_path, is_lake_url
from workbench_app.access import allowed
from workbench_app.specs import spec_table

T = TypeVar("T")

# Short: a page that waits two minutes for a lock looks hung; a notice and a retry button do not.
BUSY_TIMEOUT_S = float(os.environ.get("WORKBENCH_APP_BUSY_S", "3"))
LAKE_REFRESH_S = 5.0
STORE_KEY = "store_location"


def store_location() -> str:
    """The store the app reads: the sidebar's choice (when the allow-list admits it), else ``WORKBENCH_STORE``,
    else store/workbench.duckdb."""
    chosen = st.session_state.get(STORE_KEY)
    if chosen and allowed().store_problem(chosen) is None:
        return chosen
    return str(default_store_path())


def open_store(location: str) -> Store:
    return Store(location, busy_timeout_s=BUSY_TIMEOUT_S)


def signature(location: str) -> tuple:
    """Changes whenever a writer commits to the store (what the read caches are keyed on)."""
    if is_lake_url(location):
        return ("lake", int(time.time() // LAKE_REFRESH_S))
    parts: list[Any] = []
    for path in (Path(location), Path(location + ".wal")):
        try:
            stat = path.stat()
            parts.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            parts.append(None)
    return tuple(parts)


# ---------------------------------------------------------------- cached reads (one query each)
# Each takes (location, signature, ...): the signature is only there to key the cache.

@st.cache_data(show_spinner=False, max_entries=128)
def _query(location: str, sig: tuple, name: str, *args: Any) -> pd.DataFrame:
    """``workbench.queries.<name>(store, *args)`` (arguments hashable: run ids as tuples)."""
    return getattr(queries, name)(open_store(location), *args)


@st.cache_data(show_spinner=False, max_entries=16)
def _runs(location: str, sig: tuple) -> pd.DataFrame:
    frame = queries.runs(open_store(location))
    frame = frame.rename(columns={"sparsity": "achieved_sparsity"})
    frame["label"] = run_labels(frame)
    return frame


@st.cache_data(show_spinner=False, max_entries=16)
def _specs(location: str, sig: tuple) -> pd.DataFrame:
    return spec_table(_query(location, sig, "run_specs"))


@st.cache_data(show_spinner=False, max_entries=16)
def _raw_specs(location: str, sig: tuple, run_ids: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    frame = queries.run_specs(open_store(location), run_ids)
    return {row.run_id: json.loads(row.spec) for row in frame.itertuples(index=False)}


@st.cache_data(show_spinner=False, max_entries=64)
def _mask(location: str, sig: tuple, run_id: str, layer: str, step: int | None) -> np.ndarray:
    return queries.load_mask(open_store(location), run_id, layer, step).numpy()


@st.cache_data(show_spinner=False, max_entries=16)
def _pairwise_overlap(location: str, sig: tuple, run_ids: tuple[str, ...],
                      layer: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    # one run's masks decoded at a time and packed at once: a whole model never sits in memory at a byte per weight
    packed = {}
    for run_id in run_ids:
        masks = queries.load_masks(open_store(location), run_id, None if layer is None else [layer])
        packed[run_id] = {name: PackedMask.of(mask.numpy()) for name, mask in masks.items()}
    return pairwise_overlap(packed)


# ---------------------------------------------------------------- the pages' reader

def busy_notice() -> None:
    st.warning("**The store is busy**: a job is writing its results right now (a DuckDB file admits no "
               "reader while a writer commits). Nothing is lost; press **Retry** in a moment.",
               icon=":material/hourglass_top:")
    st.button("Retry", key="busy_retry", type="primary")


def guarded(read: Callable[..., T], *args: Any) -> T:
    """Run one cached read; a busy, missing or unreadable store becomes a notice and stops the page."""
    try:
        return read(*args)
    except StoreBusyError:
        busy_notice()
    except WorkbenchError as err:
        st.error(f"**{err.problem}.** Fix: {err.fix}.")
    except duckdb.CatalogException:
        st.info("This store file holds no workbench tables yet. Fill it with `workbench demo`, or start a "
                "job on the **Launch** page.")
    except duckdb.Error as err:
        st.error(f"**The store could not be read** ({str(err).splitlines()[0][:200]}). Fix: check that "
                 "the path in the sidebar is a workbench store.")
    st.stop()
    raise AssertionError("unreachable: st.stop() ends the script run")


class Reader:
    """The pages' view of one store at one moment: cached, guarded reads keyed on its signature."""

    def __init__(self, location: str | None = None):
        self.location = location or store_location()
        self.sig = signature(self.location)

    @property
    def exists(self) -> bool:
        return is_lake_url(self.location) or self.sig[0] is not None

    def _read(self, read: Callable[..., T], *args: Any) -> T:
        return guarded(read, self.location, self.sig, *args)

    def runs(self) -> pd.DataFrame:
        """Every run with headline metrics (``achieved_sparsity`` = measured zeros) and a ``label``."""
        return self._read(_runs)

    def specs(self) -> pd.DataFrame:
        """Flattened spec fields (dotted names) per run, indexed by run_id."""
        return self._read(_specs)

    def spec_texts(self) -> pd.DataFrame:
        """(run_id, kind, spec): every run's canonical spec JSON as stored."""
        return self._read(_query, "run_specs")

    def raw_specs(self, run_ids: list[str]) -> dict[str, dict[str, Any]]:
        return self._read(_raw_specs, tuple(run_ids))

    def notes(self) -> pd.DataFrame:
        """(run_id, spec_tags, user_tags, note, updated_at) of every run (``queries.run_notes``)."""
        return self._read(_query, "run_notes")

    def layers(self, run_ids: list[str]) -> pd.DataFrame:
        return self._read(_query, "layer_stats", tuple(run_ids))

    def metrics(self, run_ids: list[str]) -> pd.DataFrame:
        return self._read(_query, "metrics", tuple(run_ids))

    def mask_runs(self) -> pd.DataFrame:
        return self._read(_query, "mask_runs")

    def mask_index(self, run_id: str) -> pd.DataFrame:
        return self._read(_query, "mask_index", run_id)

    def mask(self, run_id: str, layer: str, step: int | None = None) -> np.ndarray:
        return self._read(_mask, run_id, layer, step)

    def pairwise_overlap(self, run_ids: list[str], layer: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Runs x runs IoU and SAD fraction of their final masks: of one layer, or of the whole model."""
        return self._read(_pairwise_overlap, tuple(run_ids), layer)

    def divergence(self, run_ids: list[str]) -> pd.DataFrame:
        return self._read(_query, "divergence", tuple(run_ids))

    def kernel_results(self) -> pd.DataFrame:
        return self._read(_query, "kernel_results")


def clear_caches() -> None:
    st.cache_data.clear()
