"""Claims with leases: one claimer of a key wins, on a DuckDB file and on DuckLake; leases expire and are
taken over; a killed worker's claim is taken over at once; a lost claim cannot finish its run."""

import json
import subprocess
import sys
import threading
import time

import pytest

from tests.distributed.conftest import start_together
from workbench.records import JobOutput, Metric
from workbench.store import Store, claims

CLAIMER = """
import json, sys
from workbench.store import Store, claims
store = Store(sys.argv[1])
claims.holder(store, "warm-up")  # connect (a lake attaches) before the start line
print("ready", flush=True)
sys.stdin.readline()
mine, holder = claims.try_claim(store, sys.argv[2], owner=sys.argv[3])
print(json.dumps({"won": mine is not None, "holder": None if holder is None else holder.owner}), flush=True)
sys.stdin.readline()  # stay alive (a dead holder's claim would be taken over) until every claimer has answered
"""


def test_racing_claimer_processes_of_one_key_exactly_one_wins(any_store):
    procs = start_together(CLAIMER, [[any_store.location, "key-1", f"p{i}"] for i in range(4)])
    answers = [json.loads(proc.stdout.readline()) for proc in procs]
    for proc in procs:
        proc.communicate("", timeout=60)
    assert sum(a["won"] for a in answers) == 1, answers
    winner = f"p{[a['won'] for a in answers].index(True)}"
    assert {a["holder"] for a in answers if not a["won"]} == {winner}  # every loser saw the winner's claim
    assert [c.owner for c in claims.claims(any_store)] == [winner]


def test_racing_claimer_threads_of_one_key_exactly_one_wins(any_store):
    """Threads of one process share one DuckDB database: there the write-write conflict on the guard row
    (not the file lock) is what lets one claim through."""
    won, start = [], threading.Barrier(4)

    def claim(owner):
        start.wait()
        won.append(claims.try_claim(any_store, "key-2", owner=owner)[0] is not None)

    threads = [threading.Thread(target=claim, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == [False, False, False, True]


def test_an_expired_lease_is_taken_over_and_its_holder_cannot_finish(any_store):
    first, _ = claims.try_claim(any_store, "key-3", owner="first", lease_s=3)
    assert first is not None
    second, holder = claims.try_claim(any_store, "key-3", owner="second")
    assert second is None and holder.claim_id == first.claim_id  # live: the second claimer must wait
    run_id = any_store.start_run("key-3", "prune", "{}", {}, {})
    time.sleep(3.2)
    assert claims.holder(any_store, "key-3") is None  # expired
    taken, _ = claims.try_claim(any_store, "key-3", owner="second")
    assert taken is not None
    assert claims.renew(any_store, first.claim_id) is False  # the first worker learns it lost the key
    with pytest.raises(claims.ClaimLostError, match="another worker took the key over"):
        any_store.finish_run(run_id, "key-3", JobOutput(metrics=[Metric("i", 1.0)]), 0.0, claim_id=first.claim_id)
    assert any_store.finished_run("key-3") is None  # nothing of the lost run was written
    assert claims.renew(any_store, taken.claim_id) is True
    assert [c.owner for c in claims.claims(any_store)] == ["second"]


def test_a_killed_workers_claim_is_taken_over_at_once(tmp_path):
    """A claim of a process of this machine that is gone needs no lease to run out."""
    store = Store(tmp_path / "wb.duckdb")
    script = ("import sys, os\nfrom workbench.store import Store, claims\n"
              "claims.try_claim(Store(sys.argv[1]), 'key-4', lease_s=3600)\nos._exit(137)")
    assert subprocess.run([sys.executable, "-c", script, str(store.path)]).returncode == 137
    (left,) = claims.claims(store)
    assert left.expires_at > left.claimed_at and claims.holder(store, "key-4") is None
    mine, _ = claims.try_claim(store, "key-4")
    assert mine is not None and [c.claim_id for c in claims.claims(store)] == [mine.claim_id]


def test_a_lease_is_renewed_while_held_and_released_by_the_run(tmp_path):
    store = Store(tmp_path / "wb.duckdb")
    mine, _ = claims.try_claim(store, "key-5", lease_s=1.2)
    lease = claims.Lease(store, mine, lease_s=1.2)  # renews every 0.3 s
    try:
        time.sleep(2.0)
        assert claims.holder(store, "key-5").claim_id == mine.claim_id and not lease.lost
    finally:
        lease.stop()
    run_id = store.start_run("key-5", "prune", "{}", {}, {})
    store.finish_run(run_id, "key-5", JobOutput(metrics=[Metric("i", 1.0)]), 0.0, claim_id=mine.claim_id)
    assert claims.claims(store) == [] and store.finished_run("key-5")["run_id"] == run_id


def test_release_owned_frees_a_stopped_sweeps_claims_and_fails_their_runs(tmp_path):
    store = Store(tmp_path / "wb.duckdb")
    for index in range(2):
        claims.try_claim(store, f"key-{index}", owner=f"sweep-x:{index}")
        store.start_run(f"key-{index}", "prune", "{}", {}, {})
    claims.try_claim(store, "key-other", owner="sweep-y:0")
    assert sorted(claims.release_owned(store, "sweep-x:", prefix=True)) == ["key-0", "key-1"]
    assert [c.owner for c in claims.claims(store)] == ["sweep-y:0"]
    with store.read() as con:
        rows = con.execute("SELECT key, status, error FROM runs ORDER BY key").fetchall()
    assert rows == [("key-0", "failed", "interrupted: its worker was stopped"),
                    ("key-1", "failed", "interrupted: its worker was stopped")]


def test_a_second_thread_never_drops_this_processs_lock_on_a_store_file(tmp_path):
    """DuckDB locks a file with POSIX record locks, which any close of the file in the process drops. So
    while one thread has the store open, another thread of the process (a lease renewing) must not open
    or probe it: it waits, and another process stays locked out meanwhile."""
    store = Store(tmp_path / "wb.duckdb")
    store.transaction(lambda con: None)
    other_process = [sys.executable, "-c", "import duckdb, sys\ntry:\n    duckdb.connect(sys.argv[1])\n    print('opened')\n"
                     "except duckdb.Error:\n    print('refused')", str(store.path)]
    with store.write():
        probe = threading.Thread(target=lambda: Store(store.path).check_writable())
        probe.start()
        probe.join(timeout=2)
        assert probe.is_alive()  # the second thread waits for the file ...
        assert subprocess.run(other_process, capture_output=True, text=True).stdout.strip() == "refused"
    probe.join(timeout=60)
    assert not probe.is_alive()
