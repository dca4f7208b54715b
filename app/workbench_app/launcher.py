"""Background launches: a validated spec or sweep runs as ``python -m workbench.cli sweep`` in its own process.

Each launch is a folder beside the store (``launches/<id>/``) so that it outlives the browser session
and the app's own process:

- ``sweep.yaml``: what runs (a single spec is a sweep with only a base);
- ``meta.json``: title, start time, process id with the process's own start time and command line
  (Stop signals that process group only while they still match), the canonical JSON of every expanded
  spec (how the launch finds its rows in the store afterwards);
- ``log.txt``: the command's stderr, where the sweep writes its progress as plain lines (``sweep: job 2/5 (40%),
  00:04 elapsed, about 00:06 left [done 2, running 1, failed 0, cached 0]``, see ``workbench.progress``);
  ``out.txt``: its stdout;
- ``exit_code``: written by the wrapping shell when the command ends.

The app reads the sweep's progress from the log, and the running job's own from its progress file beside
the store; it never imports the runner: the job's process owns all the work and writes the store through
its own short transactions.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from workbench.store import is_lake_url

# sh wrapper: run the CLI with stdout/stderr to files, then record its exit code.
_WRAPPER = '"$0" -m workbench.cli sweep "$1" --store "$2" > "$3" 2> "$4"; echo $? > "$5"'
# a line of the sweep's progress (workbench.progress.Bar.line)
_SWEEP_LINE = re.compile(r"^sweep: job (?P<done>\d+)/(?P<total>\d+) \(\d+%\)(?:, (?P<elapsed>[\d:]+) elapsed"
                         r"(?:, about (?P<remaining>[\d:]+) left)?)?(?: \[(?P<counts>[^\]]*)\])?$")
_PROCESSES: dict[int, subprocess.Popen] = {}  # launched by this app process: polled so none lingers as a zombie


def launches_folder(store_location: str) -> Path:
    base = Path("store") if is_lake_url(store_location) else Path(store_location).parent
    return base / "launches"


@dataclass
class Progress:
    done: int
    total: int
    detail: str  # the latest line of the log
    elapsed: str = ""  # of the sweep, as its latest line says (00:04)
    remaining: str = ""  # that line's estimate of the rest (00:06)
    counts: str = ""  # jobs done, running, failed and cached

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    def summary(self) -> str:
        """``2 of 5 jobs · 00:04 elapsed, about 00:06 left · done 2, failed 0`` (no bar characters)."""
        parts = [f"{self.done} of {self.total} job{'s' * (self.total != 1)}"]
        if self.elapsed:
            parts.append(f"{self.elapsed} elapsed" + (f", about {self.remaining} left" if self.remaining else ""))
        if self.counts:
            parts.append(self.counts)
        return " · ".join(parts)


def parse_progress(log: str, total: int) -> Progress:
    """The sweep's latest progress line (jobs done of total, its times and counts) and the log's latest line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    found = next((match for line in reversed(lines) if (match := _SWEEP_LINE.match(line))), None)
    if found is None:
        return Progress(0, total, lines[-1][:300] if lines else "")
    return Progress(int(found["done"]), int(found["total"]), lines[-1][:300], found["elapsed"] or "",
                    found["remaining"] or "", found["counts"] or "")


@dataclass
class Launch:
    folder: Path
    meta: dict[str, Any]

    @property
    def id(self) -> str:
        return self.folder.name

    @property
    def title(self) -> str:
        return self.meta["title"]

    @property
    def specs(self) -> list[str]:
        return self.meta["specs"]

    @property
    def exit_code(self) -> int | None:
        try:
            return int((self.folder / "exit_code").read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def status(self) -> str:
        """running | finished | failed (some job failed or the command erred) | stopped (killed)."""
        code = self.exit_code
        if code is None:
            return "running" if _alive(self.meta) else "stopped"
        return {0: "finished"}.get(code, "stopped" if code in (-15, 143, 137) else "failed")

    def log(self) -> str:
        return read_text(self.folder / "log.txt")

    def output(self) -> str:
        return read_text(self.folder / "out.txt")

    def progress(self) -> Progress:
        progress = parse_progress(self.log(), len(self.specs))
        if self.status == "finished":
            progress.done = progress.total
        return progress

    def elapsed_s(self) -> float:
        end = (self.folder / "exit_code").stat().st_mtime if self.exit_code is not None else time.time()
        return max(0.0, end - self.meta["started_at"])


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _identity(pid: int) -> dict[str, Any] | None:
    """What tells the process ``pid`` from a later one that reuses its number: start time and command line."""
    try:
        process = psutil.Process(pid)
        return {"create_time": process.create_time(), "cmdline": process.cmdline()}
    except (psutil.Error, OSError):
        return None


def _identity_after_exec(process: subprocess.Popen) -> dict[str, Any] | None:
    """The identity of a process just started: between fork and exec its command line is still empty, so
    wait (briefly) for the one it runs."""
    deadline = time.monotonic() + 5
    while True:
        found = _identity(process.pid)
        if found is None or found["cmdline"] or process.poll() is not None or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def _is_launched(meta: dict[str, Any]) -> bool:
    """True while the process ``meta`` names is the one this launch started (same start time and command
    line, leading its own process group), not another that took its number after it ended."""
    pid = meta.get("pid")
    if not isinstance(pid, int) or pid <= 1 or "create_time" not in meta:
        return False
    now = _identity(pid)
    if now is None or abs(now["create_time"] - float(meta["create_time"])) > 0.01 or now["cmdline"] != meta["cmdline"]:
        return False
    try:
        return os.getpgid(pid) == pid and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, OSError):
        return False


def _alive(meta: dict[str, Any]) -> bool:
    process = _PROCESSES.get(meta.get("pid"))
    if process is not None:
        return process.poll() is None
    if "create_time" in meta:
        return _is_launched(meta)
    try:  # a launch recorded before identities were: its number alone
        os.kill(int(meta["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return False
    return True


def start(sweep: dict[str, Any], canonical_specs: list[str], store_location: str, title: str) -> Launch:
    """Write the launch folder and start the sweep in a new process group; returns at once."""
    folder = launches_folder(store_location) / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    folder.mkdir(parents=True)
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    store = store_location if is_lake_url(store_location) else str(Path(store_location).resolve())
    files = [str((folder / name).resolve()) for name in ("sweep.yaml", "out.txt", "log.txt", "exit_code")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(["sh", "-c", _WRAPPER, sys.executable, files[0], store, *files[1:]],
                               env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    _PROCESSES[process.pid] = process
    meta = {"title": title, "started_at": time.time(), "pid": process.pid, "store": store, "specs": canonical_specs,
            **(_identity_after_exec(process) or {})}
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    return Launch(folder, meta)


def list_launches(store_location: str, limit: int = 10) -> list[Launch]:
    """The most recent launches for this store, newest first."""
    folder = launches_folder(store_location)
    if not folder.is_dir():
        return []
    launches = []
    for path in sorted(folder.iterdir(), reverse=True):
        try:
            launches.append(Launch(path, json.loads((path / "meta.json").read_text())))
        except (OSError, ValueError):
            continue  # a folder being written this very moment
        if len(launches) >= limit:
            break
    return launches


def stop(launch: Launch) -> str | None:
    """Terminate the launch's process group (the shell and the job it started); the job's run stays `running`
    in the store until the same key runs again. Signals nothing unless the process is still the one this
    launch started (its start time and command line as recorded at launch): returns why not, else None."""
    if launch.status != "running":
        return None
    if not _is_launched(launch.meta):
        return (f"process {launch.meta.get('pid')} is not the one this launch started (its start time or command "
                "line differ, or the launch recorded neither), so nothing was signalled")
    try:
        os.killpg(launch.meta["pid"], signal.SIGTERM)
    except ProcessLookupError:
        pass
    return None
