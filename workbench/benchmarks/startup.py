"""Start-up of the read-only commands: `workbench bench startup`.

`ls`, `show`, `methods`, a spec's validation (a bad spec's error, `sweep --dry-run`) and a cached `run` read
the store or a spec only, so they must answer without importing torch or transformers (importing torch
alone takes longer than any of them should). Each command runs in a fresh process, as a user starts it:
once through ``CHECK``, which reports the heavy modules it imported and its output, then ``repeat`` times
timed as ``python -m workbench.cli ...``. ``python -c "import torch"``, timed the same way in the same
run, is the baseline that makes the figures comparable across machines and loads.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HEAVY = ("torch", "transformers")
HEAVY_MARK = "heavy modules:"
# Runs a `workbench` command line in this process, then names the heavy modules it imported (on stderr).
CHECK = f"""
import runpy, sys
sys.argv = ["workbench", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("workbench.cli", run_name="__main__")
except SystemExit as stop:
    code = stop.code
heavy = sorted(name for name in {HEAVY!r} if name in sys.modules)
print({HEAVY_MARK!r}, ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""
# the job a cached `run` answers: tiny, so that building the store costs seconds
TINY_JOB: dict[str, Any] = {"model": "tiny-llama", "data": "shakespeare", "method": "magnitude",
                            "calibration": {"samples": 2, "seq_len": 32}, "evaluation": {"windows": 2, "seq_len": 32}}
TARGET_S = 1.5  # each read-only command, on an idle 2-core machine


@dataclass
class Command:
    label: str
    args: list[str]  # after `workbench`
    exit_code: int = 0


@dataclass
class Checked:
    exit_code: int
    stdout: str
    stderr: str  # without the heavy-modules line
    heavy: list[str]  # of HEAVY, the modules the command imported


@dataclass
class Timing:
    label: str
    seconds: list[float]
    heavy: list[str] | None = None  # None: a baseline, not a workbench command

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def build_store(folder: Path) -> tuple[Path, str]:
    """A store in ``folder`` holding the finished ``TINY_JOB``; returns its path and the run id."""
    from workbench.runner import run_job  # runs the job here: torch is imported in this process only
    from workbench.store import Store

    path = folder / "startup.duckdb"
    result = run_job(dict(TINY_JOB), Store(path))
    return path, result.run_id


def read_only_commands(store: Path, run_id: str, folder: Path) -> list[Command]:
    """The commands that must start without torch, on ``store`` (holding ``run_id``, the finished
    ``TINY_JOB``); their spec files are written to ``folder``."""
    cached, bad, sweep = folder / "cached.yaml", folder / "bad.yaml", folder / "sweep.yaml"
    cached.write_text(yaml.safe_dump(TINY_JOB))
    bad.write_text(yaml.safe_dump({**TINY_JOB, "params": {"scope": "everywhere"}}))
    sweep.write_text(yaml.safe_dump({"base": TINY_JOB, "grid": {"method": ["magnitude", "wanda"],
                                                                 "sparsity": [0.5, 0.7]}}))
    where = ["--store", str(store)]
    return [
        Command("ls", ["ls", *where]),
        Command("ls --json", ["ls", "--json", *where]),
        Command("show RUN", ["show", run_id, *where]),
        Command("methods", ["methods"]),
        Command("run BAD_SPEC (error)", ["run", str(bad), *where], exit_code=2),
        Command("sweep --dry-run", ["sweep", str(sweep), "--dry-run"]),
        Command("run SPEC (cached)", ["run", str(cached), *where]),
    ]


def run_checked(args: list[str]) -> Checked:
    """``workbench args`` in a fresh process: its exit code, output and the heavy modules it imported."""
    proc = subprocess.run([sys.executable, "-c", CHECK, *args], capture_output=True, text=True)
    lines = proc.stderr.splitlines()
    marks = [line for line in lines if line.startswith(HEAVY_MARK)]
    heavy = marks[-1].removeprefix(HEAVY_MARK).strip().split(",") if marks else list(HEAVY)
    stderr = "\n".join(line for line in lines if not line.startswith(HEAVY_MARK))
    return Checked(proc.returncode, proc.stdout, stderr, [name for name in heavy if name])


def time_process(argv: list[str], repeat: int) -> list[float]:
    """Wall seconds of ``argv`` started ``repeat`` times, each in a fresh process."""
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False)
        seconds.append(time.perf_counter() - started)
    return seconds


def measure(commands: list[Command], repeat: int) -> list[Timing]:
    """The baselines, then each command: checked once (which also warms the file cache), timed ``repeat``
    times. A command that exits with another code than its own is a WorkbenchError."""
    from workbench.errors import WorkbenchError

    python = [sys.executable, "-c"]
    timings = [Timing("python (no imports)", time_process([*python, "pass"], repeat)),
               Timing('python -c "import torch"', time_process([*python, "import torch"], repeat))]
    for command in commands:
        checked = run_checked(command.args)
        if checked.exit_code != command.exit_code:
            raise WorkbenchError(f"`workbench {' '.join(command.args)}` exited with {checked.exit_code}, not "
                                 f"{command.exit_code} ({checked.stderr.strip()[-300:]})",
                                 "run it by hand to see why")
        seconds = time_process([sys.executable, "-m", "workbench.cli", *command.args], repeat)
        timings.append(Timing(command.label, seconds, checked.heavy))
    return timings


def format_table(timings: list[Timing]) -> str:
    """One line per command: median and fastest seconds, the median against importing torch, and what it
    imported of torch and transformers."""
    torch_import = next(t.median for t in timings if "import torch" in t.label)
    lines = [f"{'command':<26} {'median s':>9} {'min s':>7} {'x torch import':>15}  imports torch/transformers"]
    for timing in timings:
        heavy = "-" if timing.heavy is None else (", ".join(timing.heavy) or "no")
        lines.append(f"{timing.label:<26} {timing.median:>9.2f} {min(timing.seconds):>7.2f} "
                     f"{timing.median / torch_import:>15.2f}  {heavy}")
    return "\n".join(lines)
