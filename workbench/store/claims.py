"""Claims with leases: at most one worker runs a key at a time, on either backend.

A worker claims a key before it runs it, renews the claim's lease while it runs (a background thread,
``Lease``) and releases it when the run ends: ``finish_run`` and ``fail_run`` delete the claim in the
same transaction that writes the run. A claim whose lease expired (its worker was killed, its machine
was lost) may be taken over; so may a claim of a process on this very machine that no longer exists
(a killed job is taken over at once instead of after its lease).

Why exactly one claimer of a key wins, on both backends
-------------------------------------------------------
A claim is one transaction: bump the single row of ``claim_guard``, read the key's live claims, and
only if there is none delete the key's dead claims and insert one's own. Every claim transaction
writes that same guard row, and both backends refuse to commit two concurrent transactions that wrote
the same row (snapshot isolation, first committer wins): DuckDB raises a write-write conflict on the
second UPDATE of the row; DuckLake, which has no unique constraints and retries a conflicting commit by
itself only when the two snapshots' changes do not clash, reports deletes of the same row (an UPDATE is a
delete plus an insert) as a logical conflict and aborts the later commit. The conflict is what
serialises claimers (the guard row "materialises" it: two bare inserts of claim rows would both commit,
since appends never conflict). A loser of the conflict rolls back and reruns the whole transaction on a
fresh snapshot, where it sees the winner's claim. So claim transactions behave as if run one after
another, and "no live claim, so insert mine" cannot be true for two of them. A DuckDB file adds its own
serialisation on top: one process holds the file while it writes.

Releasing or renewing a claim writes the claim's own row; so does taking over a dead one. Two of those
on one claim conflict in the same way, so a worker whose lease was taken over cannot also finish: its
``finish_run`` finds its claim gone and is refused (``ClaimLostError``); or it commits first, and the
taker's claim transaction reruns, sees the released claim and the finished run, and runs nothing.

Leases are judged by the clocks of the machines that read them: keep them in sync (NTP) to well within
the lease (``WORKBENCH_LEASE_S``, default 60 s; renewed every quarter of it).
"""

from __future__ import annotations

import os
import platform
import random
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb

from workbench.errors import StoreBusyError, StoreError

DEFAULT_LEASE_S = 60.0
COLUMNS = ["key", "claim_id", "owner", "host", "machine", "pid", "claimed_at", "renewed_at", "expires_at"]


class ClaimLostError(StoreError):
    """A worker's claim was taken over (its lease expired) before it could write its run."""


def lease_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get("WORKBENCH_LEASE_S", DEFAULT_LEASE_S)))
    except ValueError:
        return DEFAULT_LEASE_S


@lru_cache(maxsize=1)
def machine_id() -> str | None:
    """This kernel boot and PID namespace (Linux): two processes share it only if their pids are comparable."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot}/{namespace}"


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed process its parent has not reaped yet is a zombie: gone as well
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


@dataclass
class Claim:
    key: str
    claim_id: str
    owner: str | None
    host: str
    machine: str | None
    pid: int
    claimed_at: datetime
    renewed_at: datetime
    expires_at: datetime

    def dead(self, now: datetime) -> bool:
        """Expired, or held by a process of this machine that is gone (killed before it could release)."""
        if self.expires_at <= now:
            return True
        return (self.machine is not None and self.machine == machine_id() and self.pid != os.getpid()
                and _process_gone(self.pid))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> datetime:
    """UTC without a time zone, as the store writes its timestamps."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _is_conflict(err: Exception) -> bool:
    text = str(err).lower()
    return "conflict" in text or "serializ" in text


def _retrying(store: Any, body: Any, what: str) -> Any:
    """``store.transaction(body)``, rerun on a write-write conflict on either backend (DuckDB reports one
    between threads of a process; DuckLake's are already retried by ``transaction``)."""
    deadline = time.monotonic() + store.busy_timeout_s
    delay = 0.02
    while True:
        try:
            return store.transaction(body)
        except (duckdb.TransactionException, duckdb.CatalogException) as err:
            if not _is_conflict(err):
                raise
            if time.monotonic() > deadline:
                raise StoreBusyError(f"{what} kept conflicting on {store.location} for {store.busy_timeout_s:.0f} s",
                                     "retry later, or raise the timeout") from None
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 1.0)


def _rows(con: duckdb.DuckDBPyConnection, where: str, params: list[Any]) -> list[Claim]:
    return [Claim(*row) for row in con.execute(f"SELECT {', '.join(COLUMNS)} FROM claims WHERE {where} "
                                               "ORDER BY claimed_at", params).fetchall()]


def try_claim(store: Any, key: str, owner: str | None = None,
              lease_s: float | None = None) -> tuple[Claim | None, Claim | None]:
    """Claim ``key``: ``(mine, None)`` when won, ``(None, holder)`` when a live claim holds it."""
    lease_s = lease_s or lease_seconds()

    def claim(con: duckdb.DuckDBPyConnection) -> tuple[Claim | None, Claim | None]:
        con.execute("UPDATE claim_guard SET epoch = epoch + 1")  # the row every claimer writes: see above
        now = _now()
        held = _rows(con, "key = ?", [key])
        live = [c for c in held if not c.dead(now)]
        if live:
            return None, live[0]
        for dead in held:  # take over
            con.execute("DELETE FROM claims WHERE claim_id = ?", [dead.claim_id])
        mine = Claim(key, uuid.uuid4().hex, owner, platform.node(), machine_id(), os.getpid(), now, now,
                     now + timedelta(seconds=lease_s))
        con.execute(f"INSERT INTO claims ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                    [getattr(mine, c) for c in COLUMNS])
        return mine, None

    return _retrying(store, claim, f"claiming key {key[:12]}")


def holder(store: Any, key: str) -> Claim | None:
    """The live claim on ``key``, if any (read only)."""
    with store.read() as con:
        if con is None:
            return None
        try:
            held = _rows(con, "key = ?", [key])
        except duckdb.CatalogException:  # a store written before claims existed
            return None
    now = _now()
    return next((c for c in held if not c.dead(now)), None)


def claims(store: Any) -> list[Claim]:
    """Every claim row (live or dead), oldest first."""
    with store.read() as con:
        if con is None:
            return []
        try:
            return _rows(con, "true", [])
        except duckdb.CatalogException:
            return []


def renew(store: Any, claim_id: str, lease_s: float | None = None) -> bool:
    """Push the lease's expiry on; False when the claim is gone (taken over after it expired)."""
    lease_s = lease_s or lease_seconds()

    def extend(con: duckdb.DuckDBPyConnection) -> bool:
        now = _now()
        if not con.execute("SELECT count(*) FROM claims WHERE claim_id = ?", [claim_id]).fetchone()[0]:
            return False
        con.execute("UPDATE claims SET renewed_at = ?, expires_at = ? WHERE claim_id = ?",
                    [now, now + timedelta(seconds=lease_s), claim_id])
        return True

    return _retrying(store, extend, "renewing a lease")


def release_in(con: duckdb.DuckDBPyConnection, claim_id: str) -> bool:
    """Inside a write transaction: delete the claim; True when it was still held."""
    held = con.execute("SELECT count(*) FROM claims WHERE claim_id = ?", [claim_id]).fetchone()[0] > 0
    if held:
        con.execute("DELETE FROM claims WHERE claim_id = ?", [claim_id])
    return held


def release(store: Any, claim_id: str) -> bool:
    return _retrying(store, lambda con: release_in(con, claim_id), "releasing a claim")


def release_owned(store: Any, owner: str, prefix: bool = False, reason: str = "interrupted: its worker was stopped"
                  ) -> list[str]:
    """Release the claims a sweep's stopped or dead workers left behind (those of ``owner``, or of every
    owner starting with it) and mark their running runs failed. Returns the keys released."""
    where = "starts_with(owner, ?)" if prefix else "owner = ?"

    def clear(con: duckdb.DuckDBPyConnection) -> list[str]:
        left = _rows(con, where, [owner])
        for claim in left:
            con.execute("DELETE FROM claims WHERE claim_id = ?", [claim.claim_id])
            con.execute("UPDATE runs SET status = 'failed', error = ?, finished_at = ? WHERE key = ? AND "
                        "status = 'running' AND host = ? AND pid = ?",
                        [reason, _now(), claim.key, claim.host, claim.pid])
        return [claim.key for claim in left]

    with store.read() as con:  # most calls find nothing: no write (and no file lock) then
        try:
            if con is None or not _rows(con, where, [owner]):
                return []
        except duckdb.CatalogException:
            return []
    return _retrying(store, clear, "releasing a sweep's claims")


class Lease:
    """A won claim, renewed by a background thread until ``stop`` (also while the run's final transaction
    is retried: that transaction releases the claim, after which a renewal finds it gone and stops)."""

    def __init__(self, store: Any, claim: Claim, lease_s: float | None = None):
        self.claim = claim
        self.lease_s = lease_s or lease_seconds()
        self.lock = threading.Lock()
        self.lost = False
        self._store = type(store)(store.location, busy_timeout_s=store.busy_timeout_s, data_path=store.data_path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{claim.key[:8]}", daemon=True)
        self._thread.start()

    @property
    def claim_id(self) -> str:
        return self.claim.claim_id

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            with self.lock:
                if self._stop.is_set():
                    return
                try:
                    if not renew(self._store, self.claim_id, self.lease_s):
                        self.lost = True
                        return
                except Exception:  # noqa: BLE001 - a busy store: the next renewal tries again
                    continue

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=self._store.busy_timeout_s)
