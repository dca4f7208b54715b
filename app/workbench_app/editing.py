"""What the Runs page changes in the store: a run's tags and note, and deleting runs after a confirmation.

Each change is one short write transaction (``workbench.store.notes.annotate``, ``Store.delete_runs``)
made in a widget callback, so the page that follows reads the store as changed. What came of it is
shown once on that page (`show_outcome`); a refused change (a running run, a busy store) is a message,
never a stack trace.
"""

from __future__ import annotations

from typing import Callable

import streamlit as st

from workbench.errors import WorkbenchError
from workbench.store.notes import MAX_NOTE, annotate
from workbench_app.data import open_store
from workbench_app.ui import RUNS_PICK, set_selection

OUTCOME = "runs_outcome"  # (kind, text) of the last change, shown once
ASKED = "runs_delete_asked"  # the runs whose deletion waits for a confirmation


def _change(write: Callable[[], object], done: str) -> None:
    try:
        write()
    except WorkbenchError as err:
        st.session_state[OUTCOME] = ("error", f"**{err.problem}.** Fix: {err.fix}.")
    else:
        st.session_state[OUTCOME] = ("success", done)


def show_outcome() -> None:
    """The message of the change the last interaction made, if any (once)."""
    kind, text = st.session_state.pop(OUTCOME, (None, None))
    if kind == "error":
        st.error(text, icon=":material/block:")
    elif kind == "success":
        st.success(text, icon=":material/check:")


def notes_editor(location: str, run_id: str, spec_tags: tuple[str, ...], user_tags: tuple[str, ...],
                 note: str | None, known_tags: list[str]) -> None:
    """A form for the user's tags (pick among the store's, or type a new one) and note of one run."""
    tags_key, note_key = f"runs_tags_{run_id}", f"runs_note_{run_id}"

    def save() -> None:
        tags, text = st.session_state[tags_key], st.session_state[note_key]
        _change(lambda: annotate(open_store(location), run_id, tags=tags, note=text), f"Saved the tags and note of {run_id}.")

    with st.form(f"runs_notes_{run_id}"):
        st.markdown("**Tags and note**" + (f" · from its spec, unchanged here: {', '.join(spec_tags)}" if spec_tags else ""))
        st.multiselect("Tags", sorted(set(known_tags) | set(user_tags)), default=list(user_tags), key=tags_key,
                       accept_new_options=True, placeholder="pick a tag, or type a new one and press Enter",
                       help="your labels for this run, beside the spec's; filter the table by them above")
        st.text_area("Note", value=note or "", key=note_key, max_chars=MAX_NOTE, height=90,
                     placeholder="what this run showed, what to try next")
        st.form_submit_button("Save", type="primary", key="runs_notes_save", on_click=save)


def delete_controls(location: str, picked: list[str], statuses: dict[str, str]) -> None:
    """Delete the picked runs with every row of theirs, once the user confirms; running runs cannot be."""
    many = len(picked) > 1
    what, its = (f"the {len(picked)} selected runs", "their") if many else ("this run", "its")
    running = [r for r in picked if statuses.get(r) == "running"]

    def ask() -> None:
        st.session_state[ASKED] = list(picked)

    def cancel() -> None:
        st.session_state.pop(ASKED, None)

    def delete() -> None:
        st.session_state.pop(ASKED, None)

        def write() -> None:
            open_store(location).delete_runs(picked)
            set_selection([])
            st.session_state[RUNS_PICK] = []

        _change(write, f"Deleted {len(picked)} run{'s' if many else ''}: {', '.join(picked)} (`workbench gc` drops "
                       "the mask blobs no other run uses).")

    if st.session_state.get(ASKED) != picked:
        st.button(f"Delete {what}…", key="runs_delete", icon=":material/delete:", disabled=bool(running), on_click=ask,
                  help="a running run cannot be deleted" if running else
                  "removes the run with its metrics, layer stats, masks and notes; asks first")
        return
    st.warning(f"**Delete {what}** ({', '.join(picked)}) with {its} metrics, layer stats, masks and notes? "
               "This cannot be undone.", icon=":material/delete:")
    confirm = st.columns([1, 1, 4])
    confirm[0].button("Delete", key="runs_delete_confirm", type="primary", on_click=delete)
    confirm[1].button("Cancel", key="runs_delete_cancel", on_click=cancel)
