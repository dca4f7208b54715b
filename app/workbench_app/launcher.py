"""Background launches: a validated spec or sweep runs as ``python -m workbench.cli sweep`` in its own process.

Each launch is a folder beside the store (``launches/<id>/``) so that it outlives the browser session
and the app's own process:

- ``sweep.yaml``: what runs (a single spec is a sweep with only a base);
- ``meta.json``: title, start time, process id, the canonical JSON of every expanded spec (how the
  launch finds its rows in the store afterwards);
- ``log.txt``: the command's stderr, where the sweep's progress bar is drawn; ``out.txt``: its stdout;
- ``exit_code``: written by the wrapping shell when the command ends.

The app parses the progress bar from the log and never imports the runner: the job's process owns
all the work and writes the store through its own short transactions.
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

import yaml

from workbench.store import is_lake_url

# sh wrapper: run the CLI with stdout/stderr to files, then record its exit code.
_WRAPPER = '"$0" -m workbench.cli sweep "$1" --store "$2" > "$3" 2> "$4"; echo $? > "$5"'
_SWEEP_BAR = re.compile(r"sweep:\s*(\d+)%\|[^|]*\|\s*(\d+)/(\d+)")
_PROCESSES: dict[int, subprocess.Popen] = {}  # launched by this app process: polled so none lingers as a zombie


def launches_folder(store_location: str) -> Path:
    base = Path("store") if is_lake_url(store_location) else Path(store_location).parent
    return base / "launches"


@dataclass
class Progress:
    done: int
    total: int
    detail: str

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


def parse_progress(log: str, total: int) -> Progress:
    """The sweep bar's latest ``done/total`` and the latest line any bar drew (tqdm redraws with \\r)."""
    done = 0
    for match in _SWEEP_BAR.finditer(log):
        done, total = int(match.group(2)), int(match.group(3))
    lines = [line.strip() for line in re.split(r"[\r\n]+", log) if line.strip()]
    return Progress(done, total, lines[-1][:300] if lines else "")


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
            return "running" if _alive(self.meta["pid"]) else "stopped"
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


def _alive(pid: int) -> bool:
    process = _PROCESSES.get(pid)
    if process is not None:
        return process.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start(sweep: dict[str, Any], canonical_specs: list[str], store_location: str, title: str) -> Launch:
    """Write the launch folder and start the sweep in a new process group; returns at once."""
    folder = launches_folder(store_location) / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    folder.mkdir(parents=True)
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    store = store_location if is_lake_url(store_location) else str(Path(store_location).resolve())
    files = [str((folder / name).resolve()) for name in ("sweep.yaml", "out.txt", "log.txt", "exit_code")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160"}
    process = subprocess.Popen(["sh", "-c", _WRAPPER, sys.executable, files[0], store, *files[1:]],
                               env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    _PROCESSES[process.pid] = process
    meta = {"title": title, "started_at": time.time(), "pid": process.pid, "store": store, "specs": canonical_specs}
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


def stop(launch: Launch) -> None:
    """Terminate the launch's process group (the shell and the job it started); the job's run stays `running`
    in the store until the same key runs again."""
    if launch.status == "running":
        try:
            os.killpg(launch.meta["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
