"""Running: the jobs running now, started from the command line or the Launch page, refreshed every few seconds
from the store's running rows and the progress files their processes write beside it."""

from __future__ import annotations

import streamlit as st
from workbench_app import live
from workbench_app.data import Reader, guarded
from workbench_app.ui import empty_store

REFRESH_S = 2.0

st.title("Running")
reader = Reader()
if not reader.exists:
    empty_store(reader)
    st.stop()


@st.fragment(run_every=REFRESH_S)
def running_panel() -> None:
    rows = guarded(live.running_runs, reader.location)
    if rows.empty:
        st.info("**Nothing runs now.** A job started with `workbench run`, `workbench sweep` or on the **Launch** "
                "page shows here while it runs, with its phase, progress and latest metrics.",
                icon=":material/hourglass_empty:")
        return
    jobs = live.progress_files(reader.location)
    table = live.running_table(rows, jobs)
    stale = int((table["status"] != "running").sum())
    st.caption(f"{len(table)} running" + (f", {stale} stale (their process is gone: `workbench gc` removes them)"
                                           if stale else "") + f" · refreshed every {REFRESH_S:.0f} s")
    st.dataframe(table, hide_index=True, key="running_table")
    for row in table.itertuples(index=False):
        job = jobs.get(row.run_id)
        with st.container(border=True, key=f"running_{row.run_id}"):
            st.markdown(f"**{row.label}** · {row.status} · {row.phase or 'no progress file'} · `{row.run_id}`")
            live.show_bars(job)
            if job is not None and job.log:
                with st.expander("Latest progress lines"):
                    st.code("\n".join(job.log))


running_panel()
