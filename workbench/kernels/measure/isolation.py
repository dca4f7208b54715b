"""Run a worker task in its own process, watch it, and turn crashes and hangs into records.

A case that crashes the worker (a segfault, an illegal instruction that poisons the CUDA context) or
stops making progress for ``case_timeout_s`` becomes a ``failed``/``timeout`` record with the error
text; the worker is restarted for the cases left, so one bad case never sinks a sweep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import workbench
from workbench.kernels.measure.harness import SKIPPED

STARTUP_ALLOWANCE_S = 90.0  # importing torch and creating a CUDA context come before the first case


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(workbench.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _read_records(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete lines appended since ``offset`` (a partly written last line waits for the next read)."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read()
    end = data.rfind(b"\n") + 1
    lines = data[:end].decode().splitlines()
    return [json.loads(line) for line in lines if line.strip()], offset + end


def _tail(path: Path, limit: int = 1500) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-12:])[-limit:]


def run_isolated(task: dict[str, Any], case_timeout_s: float, deadline: float | None = None,
                 startup_s: float = STARTUP_ALLOWANCE_S, poll_s: float = 0.1) -> list[dict[str, Any]]:
    """Every record the task's workers wrote, plus one ``case`` record per case that crashed, hung or
    was left out by the deadline. ``task["cases"]`` items carry a ``case_id``. A worker has
    ``startup_s`` for its first record, then ``case_timeout_s`` between records."""
    remaining = list(task["cases"])
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="workbench-bench-") as folder:
        attempt = 0
        while remaining:
            if deadline is not None and time.time() > deadline:
                records += [{"kind": "case", "case_id": c["case_id"], "status": "skipped", "error": SKIPPED}
                            for c in remaining]
                break
            attempt += 1
            task_file, out_file = Path(folder, f"task{attempt}.json"), Path(folder, f"out{attempt}.jsonl")
            err_file = Path(folder, f"stderr{attempt}.txt")
            task_file.write_text(json.dumps({**task, "cases": remaining, "deadline": deadline}))
            out_file.touch()
            with open(err_file, "wb") as stderr:
                process = subprocess.Popen([sys.executable, "-m", "workbench.kernels.measure.worker", str(task_file),
                                            str(out_file)], stdout=stderr, stderr=subprocess.STDOUT, env=_worker_env())
                finished: set[str] = set()
                in_flight: str | None = None
                offset, last_progress, allowance = 0, time.monotonic(), startup_s
                timed_out = False
                while True:
                    code = process.poll()
                    new, offset = _read_records(out_file, offset)
                    for record in new:
                        if record.get("kind") == "start":
                            in_flight = record["case_id"]
                        elif record.get("kind") == "done":
                            finished.add(record["case_id"])
                            in_flight = None
                        else:
                            records.append(record)
                    if new:
                        last_progress, allowance = time.monotonic(), case_timeout_s
                    if code is not None:
                        break
                    over_deadline = deadline is not None and time.time() > deadline + case_timeout_s
                    if time.monotonic() - last_progress > allowance or over_deadline:
                        process.kill()
                        process.wait()
                        timed_out = True
                        new, offset = _read_records(out_file, offset)
                        records += [r for r in new if r.get("kind") not in ("start", "done")]
                        break
                    time.sleep(poll_s)
            if in_flight is not None:
                if timed_out:
                    status, error = "timeout", f"no result within {case_timeout_s:.0f} s; the worker was killed"
                else:
                    status, error = "failed", f"worker died (exit code {code}): {_tail(err_file) or 'no output'}"
                if not any(r.get("case_id") == in_flight and r.get("kind") in ("case", "ceiling") for r in records):
                    records.append({"kind": "case", "case_id": in_flight, "status": status, "error": error})
                finished.add(in_flight)
            elif timed_out or (code != 0 and not finished):
                # the worker hung or died before its first case: every case gets the error, no endless restarts
                error = (f"the worker made no progress for {case_timeout_s:.0f} s" if timed_out else
                         f"worker failed to start (exit code {code}): {_tail(err_file) or 'no output'}")
                records += [{"kind": "case", "case_id": c["case_id"], "status": "failed", "error": error}
                            for c in remaining]
                break
            remaining = [c for c in remaining if c["case_id"] not in finished]
            if code == 0 and remaining and not timed_out:
                error = f"worker ended without these cases: {_tail(err_file) or 'no output'}"
                records += [{"kind": "case", "case_id": c["case_id"], "status": "failed", "error": error}
                            for c in remaining]
                break
    return records
