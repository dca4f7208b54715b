"""`workbench store bench`: many writer processes run the same small jobs against one store while a reader
polls `workbench ls --json` and, optionally, writers are killed with SIGKILL mid-job and replaced.

Every writer walks the whole job list (each in its own order) through ``run_job``, so every key is
contended by every writer: exactly one may execute it, the others wait for it or find it cached, and a
key whose writer was killed is taken over. The figures that matter: jobs present exactly once (a finished
run per key, no more, no less), re-runs (a key executed to completion more than once: never, without a
kill in the middle), the errors writers and the reader saw, and what is left behind (running rows, claims).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TINY = {"model": "tiny-llama", "data": "shakespeare", "calibration": {"samples": 2, "seq_len": 32},
        "evaluation": {"windows": 2, "seq_len": 32}}


def bench_specs(jobs: int, seed: int) -> list[dict[str, Any]]:
    """``jobs`` tiny prune jobs with distinct keys (the calibration seed makes them new for each bench)."""
    return [{**TINY, "method": ("magnitude", "random")[i % 2], "sparsity": round(0.05 + 0.9 * i / max(1, jobs - 1), 6),
             "calibration": {**TINY["calibration"], "seed": seed}, "name": f"store-bench {i}"} for i in range(jobs)]


@dataclass
class StressReport:
    store: str
    writers: int
    jobs: int
    kills: int
    executor: str = "local"  # local: each writer runs its jobs itself; ray: each writer is a sweep on one Ray cluster
    wall_s: float = 0.0
    present_once: int = 0  # keys with exactly one finished run
    missing: int = 0  # keys with none
    duplicated: int = 0  # keys with more than one finished run
    executions: int = 0  # jobs executed to completion (not served from the store)
    reruns: int = 0  # executions beyond one per key
    killed_mid_job: int = 0  # kills that hit a writer while it ran a job
    cached: int = 0  # run_job calls served from the store (or by waiting for another writer)
    writer_errors: list[str] = field(default_factory=list)
    writers_failed: int = 0  # writer processes that exited non-zero (not killed by the bench)
    reader_polls: int = 0
    reader_errors: list[str] = field(default_factory=list)
    reader_duplicates: int = 0  # polls that showed one key finished twice
    running_left: int = 0
    claims_left: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        return [
            f"store {self.store}: {self.writers} writers ({self.executor}), {self.jobs} jobs, {self.kills} SIGKILLs "
            f"({self.killed_mid_job} mid-job), {self.wall_s:.0f} s",
            f"jobs present exactly once: {self.present_once}/{self.jobs} (missing {self.missing}, "
            f"duplicated {self.duplicated})",
            f"executions: {self.executions} (re-runs {self.reruns}); served from the store or by waiting: {self.cached}",
            f"errors seen by writers: {len(self.writer_errors)}" + (f" (writer processes failed: {self.writers_failed})"
                                                                    if self.writers_failed else ""),
            f"reader: {self.reader_polls} polls of `workbench ls --json`, {len(self.reader_errors)} errors, "
            f"{self.reader_duplicates} showing a duplicate",
            f"left behind: {self.running_left} running rows, {self.claims_left} claims",
        ]


def _writer(store_location: str, jobs_file: Path, log_file: Path, order_seed: int) -> None:
    """One writer process: every job of the list through ``run_job``, one JSON line per start and end."""
    from workbench.runner import error_text, run_job
    from workbench.store import Store

    store = Store(store_location)
    specs = json.loads(jobs_file.read_text())
    random.Random(order_seed).shuffle(specs)
    with open(log_file, "a", buffering=1) as log:
        for spec in specs:
            log.write(json.dumps({"event": "start", "name": spec["name"], "pid": os.getpid()}) + "\n")
            try:
                result = run_job(spec, store)
                log.write(json.dumps({"event": "end", "name": spec["name"], "key": result.key, "cached": result.cached,
                                      "run_id": result.run_id}) + "\n")
            except Exception as err:  # noqa: BLE001 - every failure is a figure of the bench
                log.write(json.dumps({"event": "error", "name": spec["name"], "error": error_text(err)}) + "\n")


def _ray_writer(store_location: str, jobs_file: Path, log_file: Path, order_seed: int, address: str) -> None:
    """One writer as a sweep on the Ray cluster at ``address``: every job of the list is a Ray task there."""
    from workbench.executors import RayCluster
    from workbench.spec import parse_spec
    from workbench.store import Store
    from workbench.sweeps import run_sweep

    specs = json.loads(jobs_file.read_text())
    random.Random(order_seed).shuffle(specs)
    with open(log_file, "a", buffering=1) as log:
        def logged(spec: Any, result: Any) -> None:
            if result.status == "failed":
                log.write(json.dumps({"event": "error", "name": spec.name, "error": result.error}) + "\n")
            else:
                log.write(json.dumps({"event": "end", "name": spec.name, "key": result.key, "cached": result.cached,
                                      "run_id": result.run_id}) + "\n")

        run_sweep([parse_spec(spec) for spec in specs], Store(store_location), progress=False, on_result=logged,
                  executor=RayCluster(address))


# the head makes an auth token (in ~/.ray) and its clients must say that they use one
RAY_ENV = {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}


def _start_ray_head(cpus: int) -> str:
    """A local Ray cluster of ``cpus`` CPUs for the writers to share; its address."""
    import socket
    import tempfile

    from workbench.errors import WorkbenchError

    with socket.socket() as probe:  # a free port for the head's GCS
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # a short folder of its own: Ray's socket paths must stay under the 107 bytes a Unix socket name may have
    temp = tempfile.mkdtemp(prefix="wb-ray-")
    started = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--num-cpus={cpus}",
                              "--num-gpus=0", f"--port={port}", "--node-ip-address=127.0.0.1",
                              "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                             capture_output=True, text=True, env={**os.environ, **RAY_ENV})
    if started.returncode != 0:
        raise WorkbenchError(f"the bench's Ray cluster did not start ({(started.stderr.strip().splitlines() or ['?'])[-1]})",
                             "check `ray start --head` on this machine, or use --executor local")
    return f"127.0.0.1:{port}"


def _stop_ray() -> None:
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True)


def _read_log(path: Path) -> list[dict[str, Any]]:
    events = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass  # a line cut short by SIGKILL
    return events


def run_stress(store_location: str, writers: int = 8, jobs: int = 100, kills: int = 0, workdir: Path | None = None,
               poll_s: float = 0.5, progress: bool = True, executor: str = "local", ray_cpus: int = 2) -> StressReport:
    """Run the bench (see the module docstring) and return its figures. ``executor="ray"``: each writer is a
    sweep of all the jobs on one local Ray cluster of ``ray_cpus`` CPUs that the bench starts (no kills)."""
    import tempfile

    from workbench.errors import WorkbenchError

    if executor not in ("local", "ray"):
        raise WorkbenchError(f"unknown executor {executor!r}", "use local or ray")
    if executor == "ray" and kills:
        raise WorkbenchError("--kills needs writers of their own (the local executor)",
                             "drop --kills with --executor ray")

    from workbench import queries
    from workbench.spec import job_key, parse_spec
    from workbench.store import Store, claims

    workdir = Path(workdir or tempfile.mkdtemp(prefix="workbench-store-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    seed = random.randrange(10**6, 10**9)
    specs = bench_specs(jobs, seed)
    jobs_file = workdir / "jobs.json"
    jobs_file.write_text(json.dumps(specs))
    keys = {job_key(parse_spec(spec)) for spec in specs}
    report = StressReport(store_location, writers, jobs, kills, executor)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    address = _start_ray_head(ray_cpus) if executor == "ray" else ""
    if address:
        env.update(RAY_ENV)

    def say(text: str) -> None:
        if progress:
            print(text, file=sys.stderr, flush=True)

    logs: list[Path] = []

    def start_writer() -> subprocess.Popen:
        log = workdir / f"writer-{len(logs)}.jsonl"
        logs.append(log)
        role = ["ray-writer"] if address else ["writer"]
        return subprocess.Popen([sys.executable, "-m", "workbench.benchmarks.store_stress", *role, store_location,
                                 str(jobs_file), str(log), str(len(logs)), *([address] if address else [])],
                                env=env, stderr=subprocess.DEVNULL)

    stop_reader = threading.Event()

    def reader() -> None:
        while not stop_reader.is_set():
            proc = subprocess.run([sys.executable, "-m", "workbench.cli", "ls", "--json", "--limit", "0", "--store",
                                   store_location], capture_output=True, text=True, env=env)
            report.reader_polls += 1
            if proc.returncode != 0:
                report.reader_errors.append((proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1])
                continue
            try:
                rows = json.loads(proc.stdout)
            except ValueError as err:
                report.reader_errors.append(f"not JSON: {err}")
                continue
            finished = Counter(r["key"] for r in rows if r.get("status") == "finished" and r.get("key") in keys)
            report.reader_duplicates += any(n > 1 for n in finished.values())
            stop_reader.wait(poll_s)

    started = time.monotonic()
    procs = [start_writer() for _ in range(writers)]
    reading = threading.Thread(target=reader, daemon=True)
    reading.start()
    kill_at = [round(jobs * (i + 1) / (kills + 1)) for i in range(kills)]
    killed, rng = 0, random.Random(seed)
    last_shown = -1
    while any(p.poll() is None for p in procs):
        time.sleep(0.2)
        done = {e["name"] for log in logs for e in _read_log(log) if e["event"] == "end"}
        if killed < kills and len(done) >= kill_at[killed]:
            alive = [i for i, p in enumerate(procs) if p.poll() is None]
            busy = [i for i in alive if (events := _read_log(logs[i])) and events[-1]["event"] == "start"]
            if busy or alive:
                victim = rng.choice(busy or alive)
                os.kill(procs[victim].pid, signal.SIGKILL)
                procs[victim].wait()  # reaped at once: a zombie would look alive to the claim takeover
                report.killed_mid_job += bool(busy)
                killed += 1
                procs[victim] = start_writer()  # a replacement takes its place and walks the list again
        if len(done) != last_shown and len(done) % max(1, jobs // 10) == 0:
            last_shown = len(done)
            say(f"  {len(done)}/{jobs} jobs done, {killed} kills, {report.reader_polls} reader polls")
    stop_reader.set()
    reading.join(timeout=120)
    if address:
        _stop_ray()
    report.wall_s = time.monotonic() - started
    report.kills = killed
    report.writers_failed = sum(p.returncode not in (0, -signal.SIGKILL) for p in procs)

    executed: Counter[str] = Counter()
    for log in logs:
        for event in _read_log(log):
            if event["event"] == "end":
                if event["cached"]:
                    report.cached += 1
                else:
                    executed[event["key"]] += 1
            elif event["event"] == "error":
                report.writer_errors.append(event["error"])
    report.executions = sum(executed.values())
    report.reruns = sum(n - 1 for n in executed.values() if n > 1)
    store = Store(store_location)
    runs = queries.runs(store)
    ours = runs[runs["key"].isin(keys)]
    finished = Counter(ours.loc[ours["status"] == "finished", "key"])
    report.present_once = sum(1 for key in keys if finished.get(key) == 1)
    report.missing = sum(1 for key in keys if key not in finished)
    report.duplicated = sum(1 for key in keys if finished.get(key, 0) > 1)
    report.running_left = int((ours["status"] == "running").sum())
    report.claims_left = sum(1 for c in claims.claims(store) if c.key in keys)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workbench.benchmarks.store_stress")
    sub = parser.add_subparsers(dest="command", required=True)
    writer = sub.add_parser("writer")
    writer.add_argument("store")
    writer.add_argument("jobs_file", type=Path)
    writer.add_argument("log", type=Path)
    writer.add_argument("seed", type=int)
    ray_writer = sub.add_parser("ray-writer")
    for name, kind in (("store", str), ("jobs_file", Path), ("log", Path), ("seed", int), ("address", str)):
        ray_writer.add_argument(name, type=kind)
    args = parser.parse_args(argv)
    if args.command == "ray-writer":
        _ray_writer(args.store, args.jobs_file, args.log, args.seed, args.address)
    else:
        _writer(args.store, args.jobs_file, args.log, args.seed)


if __name__ == "__main__":
    main()
