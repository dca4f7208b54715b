"""Tags and a note the user gives a run, beside the tags its spec gave.

The spec's tags are written with the run (``runs.tags``) and never change. ``run_notes`` holds, for each
run the user annotated, the tags added since (a JSON list, in the order added) and a free-text note. A
change is one transaction that reads the run's annotations and writes them back whole, so two editors
never interleave half of a change. A run that replaces older runs of its key (``Store.finish_run``) takes
their annotations over.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import duckdb

from workbench.errors import StoreError

MAX_TAG = 64  # characters
MAX_NOTE = 10_000
TAG_FIX = "give a one-line tag of at most 64 characters, such as baseline"


@dataclass(frozen=True)
class RunNotes:
    """A run's annotations: ``spec_tags`` as its spec gave them, ``tags`` the user's, and a note."""

    run_id: str
    spec_tags: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    note: str | None = None
    updated_at: datetime | None = None

    @property
    def all_tags(self) -> tuple[str, ...]:
        """The spec's tags, then the user's."""
        return merged_tags(self.spec_tags, self.tags)


def merged_tags(*lists: Iterable[str]) -> tuple[str, ...]:
    """The tags of every list, in order, each once."""
    return tuple(dict.fromkeys(tag for tags in lists for tag in tags))


def parse_tags(text: Any) -> tuple[str, ...]:
    """A stored JSON list of tags as a tuple (NULL, or anything but a list of strings: none)."""
    if not isinstance(text, str):
        return ()
    try:
        value = json.loads(text)
    except ValueError:
        return ()
    return tuple(t for t in value if isinstance(t, str)) if isinstance(value, list) else ()


def checked_tag(tag: Any) -> str:
    """``tag`` without surrounding blanks; an empty, multi-line or overlong tag is refused."""
    text = str(tag).strip()
    if not text or len(text) > MAX_TAG or any(c in text for c in "\r\n\t"):
        raise StoreError(f"tag {str(tag)[:80]!r} is empty, longer than {MAX_TAG} characters or holds a line break",
                         TAG_FIX)
    return text


def annotate(store: Any, run_id: str, *, add: Sequence[str] = (), remove: Sequence[str] = (),
             tags: Sequence[str] | None = None, note: str | None = None) -> RunNotes:
    """Change the user's annotations of ``run_id`` (an exact id) in one transaction: ``tags`` replaces the
    user's tags, ``add`` appends to them, ``remove`` takes from them; ``note`` replaces the note ("" clears
    it, None keeps it). The spec's tags stay as they are: adding one changes nothing, removing one is
    refused, as is removing a tag the run does not have."""
    add = [checked_tag(t) for t in add]
    remove = [str(t).strip() for t in remove]
    replace = None if tags is None else [checked_tag(t) for t in tags]
    if note is not None and len(note) > MAX_NOTE:
        raise StoreError(f"the note has {len(note):,} characters, more than {MAX_NOTE:,}", "shorten it")
    if not store.exists():
        raise StoreError(f"no run {run_id} (store {store.location} does not exist)", "list runs with `workbench ls`")

    def change(con: duckdb.DuckDBPyConnection) -> RunNotes:
        found = con.execute("SELECT tags FROM runs WHERE run_id = ?", [run_id]).fetchone()
        if found is None:
            raise StoreError(f"no run {run_id}", "list runs with `workbench ls`")
        spec_tags = parse_tags(found[0])
        before = _read(con, [run_id]).get(run_id, RunNotes(run_id, spec_tags))
        kept = before.tags if replace is None else tuple(replace)
        for tag in remove:
            if tag in spec_tags:
                raise StoreError(f"tag {tag!r} of run {run_id} comes from its spec",
                                 "the spec's tags stay as they are; remove a tag added to the run")
            if tag not in kept:
                shown = ", ".join(merged_tags(spec_tags, kept)) or "none"
                raise StoreError(f"run {run_id} has no tag {tag!r}", f"remove one of its tags ({shown})")
        user_tags = tuple(t for t in merged_tags(kept, add) if t not in remove and t not in spec_tags)
        text = before.note if note is None else (note.strip() or None)
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        con.execute("DELETE FROM run_notes WHERE run_id = ?", [run_id])
        if user_tags or text:
            con.execute("INSERT INTO run_notes VALUES (?, ?, ?, ?)", [run_id, json.dumps(user_tags), text, now])
        return RunNotes(run_id, spec_tags, user_tags, text, now if user_tags or text else None)

    return store.transaction(change)


def _read(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> dict[str, RunNotes]:
    rows = con.execute("SELECT n.run_id, r.tags, n.tags, n.note, n.updated_at FROM run_notes n "
                       "LEFT JOIN runs r ON r.run_id = n.run_id WHERE n.run_id IN (SELECT unnest(?)) "
                       "ORDER BY n.updated_at", [list(run_ids)]).fetchall()
    return {run_id: RunNotes(run_id, parse_tags(spec), parse_tags(tags), note, updated)
            for run_id, spec, tags, note, updated in rows}


def carry_notes(con: duckdb.DuckDBPyConnection, old_ids: Sequence[str], run_id: str) -> None:
    """Inside the transaction that replaces ``old_ids`` by ``run_id`` (runs of one key): their tags join the
    new run's, and its note is the newest of theirs unless it has one of its own."""
    if not old_ids:
        return
    found = _read(con, [*old_ids, run_id])
    if not any(old in found for old in old_ids):
        return
    spec_tags = parse_tags((con.execute("SELECT tags FROM runs WHERE run_id = ?", [run_id]).fetchone() or [None])[0])
    ordered = sorted(found.values(), key=lambda n: (n.run_id == run_id, n.updated_at))  # its own note wins
    tags = tuple(t for t in merged_tags(*(n.tags for n in ordered)) if t not in spec_tags)
    note = next((n.note for n in reversed(ordered) if n.note), None)
    con.execute("DELETE FROM run_notes WHERE run_id IN (SELECT unnest(?))", [[*old_ids, run_id]])
    if tags or note:
        con.execute("INSERT INTO run_notes VALUES (?, ?, ?, ?)",
                    [run_id, json.dumps(tags), note, max(n.updated_at for n in ordered)])
