"""Progress of a running job: bars on a terminal, plain lines in a log, and a file any reader can poll.

Every progress bar of the workbench is a ``Bar``:

- on a terminal, or in a notebook, it is a tqdm bar drawn in place;
- when stderr goes to a file or a pipe (a redirected log, a job the app launched) it prints plain lines
  instead, ``wanda: block 12/30 (40%), 00:24 elapsed, about 00:36 left``: one when the bar has moved another
  10% (at most one every 2 s), one every 30 s while it moves more slowly, and one when it completes; never a
  carriage return or an escape code.

While a job runs, the runner publishes its progress (``publish``): the job's phase (``phase``), every bar
open inside the job, the latest metrics a bar or the job reported (``metric``) and the last lines of its
progress log go to ``<store folder>/running/<run_id>.json``. A background thread rewrites the file
atomically (a temporary file, then ``os.replace``) at most once a second while something changed, and the
file is removed when the run ends. Readers (the app's Running and Launch pages, `workbench ls`) read it
with ``read_running`` and never touch the store for it; a killed job's file stays until the next job
published into the same folder finds its process gone.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

FOLDER = "running"  # under the store's artifacts folder
WRITE_EVERY_S = 1.0
LINE_FRACTION = 0.1  # plain lines: one per 10% of a bar,
LINE_GAP_S = 2.0  # at most one every 2 s,
LINE_QUIET_S = 30.0  # and one every 30 s while the bar moves more slowly than that
LOG_LINES = 20  # lines of the progress log a job's file keeps


def interactive() -> bool:
    """Bars redraw in place on a terminal and in a notebook; anywhere else they print plain lines."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty()) or in_notebook()


def in_notebook() -> bool:
    """This process is a running Jupyter kernel (not merely one that imported ipykernel, as tests do)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def clock(seconds: float) -> str:
    """A duration as tqdm writes it: 00:24, or 1:02:03 from an hour on."""
    minutes, secs = divmod(int(max(0.0, seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


@dataclass
class BarState:
    """One bar open inside a job, as a reader sees it."""

    what: str
    done: int
    total: int | None = None
    unit: str = ""

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.done / self.total) if self.total else None

    def text(self) -> str:
        """``wanda: block 12/30 (40%)``"""
        count = f"{self.unit} {self.done}" if self.unit else str(self.done)
        if self.total:
            count += f"/{self.total} ({int(100 * self.done / self.total)}%)"
        return f"{self.what}: {count}"


@dataclass
class JobProgress:
    """What a running job's progress file holds."""

    run_id: str
    key: str
    kind: str
    host: str
    pid: int
    started_at: float  # seconds since the epoch
    updated_at: float  # when anything in it last changed
    phase: str = "started"
    bars: list[BarState] = field(default_factory=list)  # outermost first
    metrics: dict[str, float] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)  # the last lines of its progress log

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobProgress:
        data = json.loads(text)
        return cls(**{**data, "bars": [BarState(**bar) for bar in data.get("bars", [])]})

    def summary(self) -> str:
        """One line: ``pruning · wanda: block 12/30 (40%) · loss=2.31``."""
        parts = [self.phase, *(bar.text() for bar in self.bars)]
        if self.metrics:
            parts.append(", ".join(f"{name}={value:.4g}" for name, value in self.metrics.items()))
        return " · ".join(parts)


class Publisher:
    """Keeps one running job's progress file up to date until ``close`` removes it."""

    def __init__(self, path: Path, state: JobProgress):
        self.path, self.state = path, state
        self._bars: dict[int, BarState] = {}  # by the id of their Bar, in the order opened
        self._log: deque[str] = deque(maxlen=LOG_LINES)
        self._lock = threading.Lock()
        self._changed = False
        self._stop = threading.Event()
        self._write()  # at once: a reader sees the job as soon as its run row exists
        self._thread = threading.Thread(target=self._keep_writing, name="workbench-progress", daemon=True)
        self._thread.start()

    def _change(self, change: Any) -> None:
        with self._lock:
            change()
            self.state.updated_at = time.time()
            self._changed = True

    def set_phase(self, text: str) -> None:
        def change() -> None:
            self.state.phase = text
            self._log.append(text)

        self._change(change)

    def set_metrics(self, values: dict[str, float]) -> None:
        self._change(lambda: self.state.metrics.update(values))

    def add_line(self, text: str) -> None:
        self._change(lambda: self._log.append(text))

    def show_bar(self, owner: int, state: BarState) -> None:
        self._change(lambda: self._bars.__setitem__(owner, state))

    def drop_bar(self, owner: int) -> None:
        self._change(lambda: self._bars.pop(owner, None))

    def _write(self) -> None:
        with self._lock:
            self.state.bars = [BarState(**asdict(bar)) for bar in self._bars.values()]
            self.state.log = list(self._log)
            text = self.state.to_json()
            self._changed = False
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            temporary.write_text(text)
            os.replace(temporary, self.path)  # readers see the old file or the new one, never half of one
        except OSError:
            pass  # progress is for watching: a full or read-only disk must not fail the job

    def _keep_writing(self) -> None:
        while not self._stop.wait(WRITE_EVERY_S):
            if self._changed:
                self._write()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        if self in _PUBLISHERS:
            _PUBLISHERS.remove(self)
        for path in (self.path, self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")):
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass


_PUBLISHERS: list[Publisher] = []  # the jobs running in this process, innermost last


def current() -> Publisher | None:
    return _PUBLISHERS[-1] if _PUBLISHERS else None


def folder_of(artifacts_dir: Path) -> Path:
    return Path(artifacts_dir) / FOLDER


def publish(artifacts_dir: Path, run_id: str, key: str, kind: str) -> Publisher | None:
    """Start the progress file of run ``run_id``; the bars and phases of the job go to it until ``close``.
    None where the folder cannot be written (the job runs all the same)."""
    folder = folder_of(artifacts_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(folder)
        now = time.time()
        publisher = Publisher(folder / f"{run_id}.json",
                              JobProgress(run_id, key, kind, platform.node(), os.getpid(), now, now))
    except OSError:
        return None
    _PUBLISHERS.append(publisher)
    return publisher


def _remove_leftovers(folder: Path) -> None:
    """Files of killed jobs of this host (their process is gone): nothing else removes them."""
    import psutil  # deferred: only a job that publishes asks

    for job in read_running(folder.parent).values():
        if job.host == platform.node() and not psutil.pid_exists(job.pid):
            (folder / f"{job.run_id}.json").unlink(missing_ok=True)


def read_running(artifacts_dir: Path) -> dict[str, JobProgress]:
    """Every progress file under ``artifacts_dir``, by run id (a file being replaced or unreadable is skipped)."""
    found = {}
    folder = folder_of(artifacts_dir)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            job = JobProgress.from_json(path.read_text())
        except (OSError, ValueError, TypeError):
            continue
        found[job.run_id] = job
    return found


def phase(text: str) -> None:
    """What the running job does now (``pruning``, ``evaluating``): its file's phase and a line of its log."""
    if (publisher := current()) is not None:
        publisher.set_phase(text)


def metric(name: str, value: float) -> None:
    """The running job's latest value of a metric (a training loss, the last evaluation)."""
    if (publisher := current()) is not None:
        publisher.set_metrics({name: float(value)})


class Bar:
    """A progress bar with the tqdm calls the workbench uses (iterate, ``update``, ``n``, ``set_postfix``,
    ``set_postfix_str``, ``write``, ``close``): drawn by tqdm on a terminal, plain lines elsewhere, nothing
    when disabled; in every case reported to the running job's progress file. ``every``: the fraction of
    the total between two plain lines (0: a line at every step, at most one every ``LINE_GAP_S``)."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "", initial: int = 0, enabled: bool = True, leave: bool = True,
                 every: float = LINE_FRACTION):
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit, self.every = iterable, total, desc, unit, every
        self._n = self._first = self._printed = initial
        self._started = self._printed_at = time.monotonic()
        self.postfix = ""
        self._closed = False
        self._plain = enabled and not interactive()
        self._tqdm = None
        if enabled and not self._plain:
            from tqdm.auto import tqdm  # deferred: readers of progress files never draw a bar

            self._tqdm = tqdm(total=total, desc=desc, unit=unit or "it", initial=initial, leave=leave,
                              dynamic_ncols=True)
        self._publisher = current()  # bars of a job report to it; a sweep's own bar, made outside any, does not
        self._report()

    # ---------------------------------------------------------------- tqdm's calls
    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def n(self) -> int:
        return self._n

    @n.setter
    def n(self, value: int) -> None:
        self.update(value - self._n)

    def update(self, steps: int = 1) -> None:
        self._n += steps
        if self._tqdm is not None:
            self._tqdm.update(steps)
        self._report()
        self._maybe_line()

    def set_postfix(self, values: dict[str, Any] | None = None, **more: Any) -> None:
        values = {**(values or {}), **more}
        self.postfix = ", ".join(f"{name}={value}" for name, value in values.items())
        if self._tqdm is not None:
            self._tqdm.set_postfix(values)
        numbers = {}
        for name, value in values.items():
            try:
                numbers[name] = float(value)
            except (TypeError, ValueError):
                continue
        if self._publisher is not None and numbers:
            self._publisher.set_metrics(numbers)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(text)

    def write(self, text: str, file: Any = None) -> None:
        """A line above the bar (tqdm keeps the bar below it), also in the job's progress log."""
        if self._tqdm is not None:
            self._tqdm.write(text, file=file or sys.stderr)
        else:
            print(text, file=file or sys.stderr, flush=True)
        if self._publisher is not None:
            self._publisher.add_line(text)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._n != self._printed:  # where it stopped, when no line said so yet
            self._line()
        if self._tqdm is not None:
            self._tqdm.close()
        if self._publisher is not None:
            self._publisher.drop_bar(id(self))

    # ---------------------------------------------------------------- plain lines and the job's file
    def line(self) -> str:
        """``search (evopress): generation 12/30 (40%), 00:24 elapsed, about 00:36 left [kl=1.91]``"""
        text = BarState(self.desc, self._n, self.total, self.unit).text()
        elapsed = time.monotonic() - self._started
        if elapsed >= 1:
            text += f", {clock(elapsed)} elapsed"
            if self.total and self._first < self._n < self.total:
                text += f", about {clock(elapsed / (self._n - self._first) * (self.total - self._n))} left"
        return text + (f" [{self.postfix}]" if self.postfix else "")

    def _report(self) -> None:
        if self._publisher is not None:
            self._publisher.show_bar(id(self), BarState(self.desc, self._n, self.total, self.unit))

    def _maybe_line(self) -> None:
        if self._n == self._printed:
            return
        since = time.monotonic() - self._printed_at
        moved = (self._n - self._printed) / self.total if self.total else 0.0
        complete = self.total is not None and self._n >= self.total
        if complete or (moved >= self.every and since >= LINE_GAP_S) or since >= LINE_QUIET_S:
            self._line()

    def _line(self) -> None:
        """A line of the progress log: printed where no bar is drawn, kept in the job's file in any case."""
        self._printed, self._printed_at = self._n, time.monotonic()
        if self._plain or self._publisher is not None:
            text = self.line()
            if self._plain:
                print(text, file=sys.stderr, flush=True)
            if self._publisher is not None:
                self._publisher.add_line(text)

