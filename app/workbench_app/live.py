"""Jobs running now: the store's ``running`` rows beside the progress files their processes write
(``workbench.progress``), for the Running and Launch pages.

Read afresh on every refresh, never cached: a process that dies changes nothing in the store, yet its row
must turn stale at once.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pandas as pd
import streamlit as st

from workbench import queries
from workbench.progress import JobProgress, read_running
from workbench.results import age_text, lease_text, run_labels
from workbench_app.data import open_store

TABLE_COLUMNS = ["run_id", "label", "status", "host", "pid", "age", "lease", "phase", "progress", "updated"]


def running_runs(location: str) -> pd.DataFrame:
    """The store's running rows (``stale`` where their process of this host is gone) with their leases."""
    store = open_store(location)
    return queries.with_leases(store, queries.runs(store, status="running"))


def progress_files(location: str) -> dict[str, JobProgress]:
    """The progress file of every job running beside this store, by run id."""
    return read_running(open_store(location).artifacts_dir)


def running_table(rows: pd.DataFrame, jobs: dict[str, JobProgress], now: float | None = None) -> pd.DataFrame:
    """One line per running row: where it runs and since when (as `workbench ls` shows them), its phase, its
    bars and how long ago its progress file last changed. A row whose process is gone reads
    ``running (stale)``; a row without a file (a job started before progress files, or of another host's
    artifacts folder) has no phase."""
    now = time.time() if now is None else now
    utc_now = datetime.fromtimestamp(now, timezone.utc).replace(tzinfo=None)
    lines = []
    for row, label in zip(rows.itertuples(index=False), run_labels(rows)):
        job = jobs.get(row.run_id)
        lines.append({
            "run_id": row.run_id, "label": label, "status": "running (stale)" if row.stale else "running",
            "host": row.host, "pid": None if pd.isna(row.pid) else int(row.pid),
            "age": age_text((utc_now - row.created_at).total_seconds()),
            "lease": lease_text(row.lease_age_s, row.lease_expired),
            "phase": job.phase if job else None,
            "progress": " · ".join(bar.text() for bar in job.bars) if job else None,
            "updated": f"{age_text(now - job.updated_at)} ago" if job else None,
        })
    return pd.DataFrame(lines, columns=TABLE_COLUMNS)


def show_bars(job: JobProgress | None) -> None:
    """A Streamlit progress bar for each bar open in the job (outermost first), and its latest metrics."""
    if job is None:
        return
    for bar in job.bars:
        if bar.fraction is None:
            st.caption(bar.text())
        else:
            st.progress(bar.fraction, text=bar.text())
    if job.metrics:
        st.caption(" · ".join(f"{name} {value:.4g}" for name, value in job.metrics.items()))
