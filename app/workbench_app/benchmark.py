"""The app's speed benchmark (`workbench bench app`, run from a repository checkout): a large synthetic
store, then every page timed on it. It lives beside the app, not in the installed library: it needs the
app's scripts to time.

The store holds ``runs`` runs (default 10,000) and ``layer_rows`` per-layer rows (default a million),
with the rows every page reads: headline metrics, per-step metrics of training runs, mask snapshots
of a few runs (real 576 x 1536 bit masks, SmolLM2's MLP shape), divergence between snapshots and
kernel benchmark rows. Values are drawn with a fixed seed and are not measurements of any method;
every run says so (host ``synthetic``, name ``synthetic-N``).

Pages are timed with Streamlit's AppTest, which runs the page script in this process as the server
would, without a browser: *cold* is a page's first run in a fresh session with empty read caches
(every query runs), *warm* is the rerun an interaction triggers (reads served from the cache).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from workbench.progress import Bar
from workbench.store import Store
from workbench.store.masks import ENCODING, encode_mask

PAGES = ["runs", "compare", "layers", "masks", "training", "kernels", "launch"]
MODELS = {"smollm2-135m": ("causal-lm", 30), "minilm-l6": ("encoder", 6)}
LINEAR_PARTS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                "mlp.up_proj", "mlp.down_proj"]
METHODS = ["dense", "random", "magnitude", "wanda", "sparsegpt"]
PATTERNS = [("unstructured", None, None), ("2:4", 2, 4), ("4:8", 4, 8)]
# How much each method degrades perplexity per unit of sparsity^2 (only the ordering is meant to look familiar).
DAMAGE = {"dense": 0.0, "random": 14.0, "magnitude": 7.0, "wanda": 2.2, "sparsegpt": 2.0}
MASK_SHAPE = (576, 1536)


@dataclass
class Sizes:
    runs: int = 10_000
    layer_rows: int = 1_000_000
    train_share: float = 0.02
    bench_runs: int = 2
    mask_runs: int = 12
    train_steps: int = 100
    snapshots: int = 6


def _run_table(sizes: Sizes, rng: np.random.Generator) -> pd.DataFrame:
    n = sizes.runs
    index = np.arange(n)
    keys = [hashlib.sha256(f"synthetic-{i}".encode()).hexdigest() for i in index]
    kind = np.where(index < sizes.bench_runs, "bench",
                    np.where(rng.random(n) < sizes.train_share, "train", "prune"))
    model = rng.choice(list(MODELS), n, p=[0.7, 0.3])
    method = rng.choice(METHODS, n, p=[0.04, 0.16, 0.3, 0.3, 0.2])
    pattern_index = rng.choice(len(PATTERNS), n, p=[0.7, 0.2, 0.1])
    sparsity = np.round(rng.choice([0.3, 0.4, 0.5, 0.6, 0.7, 0.8], n), 2)
    sparsity = np.where(pattern_index > 0, 0.5, sparsity)
    sparsity = np.where(method == "dense", 0.0, sparsity)
    allocation = np.where((rng.random(n) < 0.2) & (pattern_index == 0), "owl", "uniform")
    status = rng.choice(["finished", "failed", "running"], n, p=[0.975, 0.02, 0.005])
    samples = rng.choice([16, 32, 64, 128], n)
    seed = rng.integers(0, 3, n)
    created = pd.Timestamp("2026-01-01") + pd.to_timedelta(index * 37, unit="s")
    specs, patterns = [], []
    for i in index:
        name, keep, group = PATTERNS[pattern_index[i]]
        patterns.append(name)
        if kind[i] == "bench":
            specs.append(json.dumps({"kind": "bench", "backends": ["dense", "cusparselt", "bsr"]}, sort_keys=True))
            continue
        spec = {"kind": str(kind[i]), "model": str(model[i]), "data": "shakespeare", "method": str(method[i]),
                "params": {}, "sparsity": float(sparsity[i]), "pattern": {"name": "nm" if keep else "unstructured",
                                                                          "keep": keep, "group": group},
                "allocation": str(allocation[i]), "allocation_params": {},
                "calibration": {"samples": int(samples[i]), "seq_len": 512, "seed": int(seed[i])},
                "evaluation": {"windows": 64, "seq_len": 512}, "prune_embeddings": False, "prune_head": False}
        specs.append(json.dumps(spec, sort_keys=True, separators=(",", ":")))
    bench = kind == "bench"
    return pd.DataFrame({
        "run_id": [f"{k[:10]}-{i:06x}" for k, i in zip(keys, index)], "key": keys, "kind": kind,
        "name": [f"synthetic-{i}" for i in index],
        "model": np.where(bench, None, model), "data": np.where(bench, None, "shakespeare"),
        "method": np.where(bench, None, method), "pattern": np.where(bench, None, patterns),
        "allocation": np.where(bench, None, allocation), "target_sparsity": np.where(bench, np.nan, sparsity),
        "spec": specs, "identity": json.dumps({"model": "synthetic"}), "status": status,
        "error": np.where(status == "failed", "PruningError: synthetic failure. Fix: none needed.", None),
        "created_at": created, "finished_at": created + pd.to_timedelta(rng.uniform(5, 600, n), unit="s"),
        "wall_s": rng.uniform(5, 600, n), "code_version": "synthetic", "host": "synthetic", "pid": 0})


def _metric_rows(runs: pd.DataFrame, sizes: Sizes, rng: np.random.Generator) -> pd.DataFrame:
    done = runs[(runs["status"] == "finished") & (runs["kind"] != "bench")]
    s = done["target_sparsity"].to_numpy()
    noise = rng.normal(0, 0.03, len(done))
    damage = done["method"].map(DAMAGE).to_numpy() * (1 + (done["pattern"] != "unstructured") * 0.6)
    lm = (done["model"] == "smollm2-135m").to_numpy()
    frames = [pd.DataFrame({"run_id": done["run_id"], "name": "sparsity", "value": s + rng.normal(0, 1e-4, len(done))}),
              pd.DataFrame({"run_id": done["run_id"][lm], "name": "perplexity",
                            "value": (28.0 * np.exp(damage * s ** 2 + noise))[lm]}),
              pd.DataFrame({"run_id": done["run_id"][~lm], "name": "embedding_cosine",
                            "value": np.clip(1 - 0.05 * damage * s ** 2 + noise / 10, 0, 1)[~lm]})]
    for name, low, high in (("prune_seconds", 1, 400), ("eval_seconds", 20, 120), ("peak_memory_mb", 600, 2400)):
        frames.append(pd.DataFrame({"run_id": done["run_id"], "name": name, "value": rng.uniform(low, high, len(done))}))
    metrics = pd.concat(frames).assign(step=None)
    train = done[done["kind"] == "train"]["run_id"]
    steps = np.arange(0, sizes.train_steps + 1, 5)
    curves = []
    for run_id in train:
        start = rng.uniform(3, 6)
        curves.append(pd.DataFrame({"run_id": run_id, "name": "loss", "value": start * np.exp(-steps / 60), "step": steps}))
        curves.append(pd.DataFrame({"run_id": run_id, "name": "accuracy", "value": 1 - np.exp(-steps / 40) * 0.8,
                                    "step": steps}))
    return pd.concat([metrics, *curves], ignore_index=True)


def _layer_rows(runs: pd.DataFrame, sizes: Sizes, rng: np.random.Generator) -> pd.DataFrame:
    layered = runs[(runs["status"] == "finished") & (runs["kind"] != "bench")]
    per_run = math.ceil(sizes.layer_rows / max(len(layered), 1))
    names = [f"model.layers.{b}.{part}" for b in range(math.ceil(per_run / len(LINEAR_PARTS))) for part in LINEAR_PARTS]
    names = names[:per_run]
    blocks = [int(n.split(".")[2]) for n in names]
    count = len(layered) * per_run
    target = np.repeat(layered["target_sparsity"].to_numpy(), per_run)
    owl = np.repeat((layered["allocation"] == "owl").to_numpy(), per_run)
    block = np.tile(blocks, len(layered))
    shift = np.where(owl, 0.08 * np.cos(block / 3.0), 0.0)
    target = np.clip(target + shift, 0, 0.99)
    return pd.DataFrame({
        "run_id": np.repeat(layered["run_id"].to_numpy(), per_run), "layer": np.tile(names, len(layered)),
        "block": block, "shape": "576x1536", "numel": 576 * 1536, "target_sparsity": target,
        "achieved_sparsity": target + rng.normal(0, 1e-4, count), "pattern": np.repeat(layered["pattern"].to_numpy(), per_run),
        "nm_valid": None, "recon_error": rng.lognormal(0, 1, count),
        "extra": np.where(owl, [json.dumps({"outlier_ratio": round(0.01 + 0.02 * abs(math.sin(b)), 4)}) for b in block],
                          "{}")})


def _mask(pattern: str, sparsity: float, generator: torch.Generator) -> torch.Tensor:
    scores = torch.rand(MASK_SHAPE, generator=generator)
    if ":" in pattern:
        keep, group = (int(v) for v in pattern.split(":"))
        grouped = scores.view(MASK_SHAPE[0], -1, group)
        mask = torch.zeros_like(grouped, dtype=torch.bool).scatter_(2, grouped.topk(keep, dim=2).indices, True)
        return mask.view(MASK_SHAPE)
    return scores >= torch.quantile(scores.flatten()[:100_000], sparsity)


def _mask_rows(runs: pd.DataFrame, sizes: Sizes) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Masks of a few prune runs (two layers) and snapshots of a few training runs, plus their divergence."""
    generator = torch.Generator().manual_seed(0)
    done = runs[runs["status"] == "finished"]
    prune = done[(done["kind"] == "prune") & (done["model"] == "smollm2-135m") & (done["method"] != "dense")]
    train = done[done["kind"] == "train"].head(2)
    masks, blobs, divergence = [], {}, []
    layers = [f"model.layers.0.{part}" for part in ("mlp.up_proj", "mlp.gate_proj")]
    for run in prune.head(sizes.mask_runs).itertuples():
        for layer in layers:
            encoded = encode_mask(_mask(run.pattern, run.target_sparsity, generator))
            blobs[encoded.hash] = encoded.data
            masks.append([run.run_id, layer, 0, encoded.hash, encoded.rows, encoded.cols, encoded.kept])
    for run in train.itertuples():
        previous = None
        for snapshot in range(sizes.snapshots):
            step = snapshot * sizes.train_steps // max(sizes.snapshots - 1, 1)
            mask = _mask(run.pattern, run.target_sparsity, generator)
            encoded = encode_mask(mask)
            blobs[encoded.hash] = encoded.data
            masks.append([run.run_id, layers[0], step, encoded.hash, encoded.rows, encoded.cols, encoded.kept])
            if previous is not None:
                before, before_step = previous
                differ = int((before ^ mask).sum())
                divergence.append([run.run_id, run.run_id, before_step, step, layers[0], differ, mask.numel(),
                                   differ / mask.numel(), int((before & mask).sum()) / int((before | mask).sum())])
            previous = (mask, step)
    mask_frame = pd.DataFrame(masks, columns=["run_id", "layer", "step", "hash", "rows", "cols", "kept"])
    blob_frame = pd.DataFrame({"hash": list(blobs), "encoding": ENCODING, "data": list(blobs.values())})
    divergence_frame = pd.DataFrame(divergence, columns=["run_a", "run_b", "step_a", "step_b", "layer", "sad", "numel",
                                                         "sad_fraction", "iou"])
    return mask_frame, blob_frame, divergence_frame


def _kernel_rows(runs: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    bench = runs[runs["kind"] == "bench"]["run_id"].tolist()
    rows = []
    for run_id in bench:
        for out_features, in_features in ((576, 1536), (1536, 576), (4096, 4096), (11008, 4096)):
            for dtype in ("float16", "bfloat16", "int8"):
                for tokens in (1, 8, 32, 128, 512, 2048, 8192):
                    for backend, gain in (("cusparselt", 1.7), ("bsr", 0.8), ("csr", 0.2)):
                        for timing, overhead in (("graph", 1.0), ("eager", 0.6)):
                            speedup = gain * overhead * (1 - 0.4 / (1 + tokens / 128)) * rng.uniform(0.95, 1.05)
                            rows.append({"run_id": run_id, "case_id": f"{out_features}x{in_features}-t{tokens}",
                                         "phase": "kernel", "backend": backend, "dtype": dtype,
                                         "out_features": out_features, "in_features": in_features, "tokens": tokens,
                                         "pattern": "2:4", "sparsity": 0.5, "timing": timing,
                                         "median_us": 50 * (1 + tokens / 256) / speedup, "speedup": speedup,
                                         "roofline_fraction": min(0.95, 0.2 + tokens / 10000), "status": "ok"})
    pruned = runs[(runs["kind"] == "prune") & (runs["status"] == "finished")].head(200)["run_id"]
    for run_id in pruned:
        for phase, size in (("prefill", 512), ("decode", 8)):
            rows.append({"run_id": bench[0] if bench else run_id, "case_id": f"{phase}-{size}", "phase": phase,
                         "model": "smollm2-135m", "backend": "cusparselt", "dtype": "float16",
                         "tokens": size, "batch": size if phase == "decode" else 1,
                         "timing": "graph", "median_us": rng.uniform(800, 1200),
                         "speedup": rng.uniform(1.0, 1.3), "source_run": run_id, "status": "ok"})
    return pd.DataFrame(rows)


def _insert(con, table: str, frame: pd.DataFrame) -> None:
    """Bulk insert by column name (the table's other columns stay NULL)."""
    if frame.empty:
        return
    con.register("incoming", frame)
    columns = ", ".join(frame.columns)
    con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM incoming")
    con.unregister("incoming")


def build_store(path: Path, sizes: Sizes = Sizes(), seed: int = 0) -> dict[str, int]:
    """Write the synthetic store at ``path`` (replacing any file there); returns row counts per table."""
    path = Path(path)
    for stale in (path, Path(f"{path}.wal")):
        stale.unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    steps = Bar(total=6, desc="synthetic store", unit="table")
    runs = _run_table(sizes, rng)
    steps.update()
    metrics = _metric_rows(runs, sizes, rng)
    steps.update()
    layers = _layer_rows(runs, sizes, rng)
    steps.update()
    masks, blobs, divergence = _mask_rows(runs, sizes)
    steps.update()
    kernels = _kernel_rows(runs, rng)
    steps.update()
    store = Store(path)
    with store.write() as con:
        con.execute("SET enable_progress_bar = false")
        for table, frame in (("runs", runs), ("metrics", metrics), ("layer_stats", layers), ("masks", masks),
                             ("mask_blobs", blobs), ("divergence", divergence), ("kernel_results", kernels)):
            _insert(con, table, frame)
    steps.update()
    steps.close()
    return {"runs": len(runs), "metrics": len(metrics), "layer_stats": len(layers), "masks": len(masks),
            "divergence": len(divergence), "kernel_results": len(kernels)}


# ---------------------------------------------------------------- timing the pages

def _page_run(app: Path, page: str, timeout: float) -> tuple[float, float, float, float, list[str]]:
    """(cold s, warm s, cold CPU s, warm CPU s, exceptions) of one page in a fresh AppTest session.
    CPU seconds are this process's (every thread): what the page costs whatever else the machine runs."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(app).resolve()), default_timeout=timeout)
    at.run()  # the Runs page (the default) renders here; the page itself is timed below
    st.cache_data.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    (at.switch_page(f"views/{page}.py") if page != "runs" else at).run()
    cold, cold_cpu = time.perf_counter() - wall, time.process_time() - cpu
    wall, cpu = time.perf_counter(), time.process_time()
    at.run()
    warm, warm_cpu = time.perf_counter() - wall, time.process_time() - cpu
    return cold, warm, cold_cpu, warm_cpu, [str(e.value) for e in at.exception]


def time_pages(store: Path, app: Path, repeat: int = 5, timeout: float = 120.0) -> pd.DataFrame:
    """Median and max seconds (wall clock and CPU) of each page's cold and warm render, ``repeat`` sessions each."""
    os.environ["WORKBENCH_STORE"] = str(store)
    _page_run(app, "runs", timeout)  # imports (torch, plotly) once, outside the figures
    rows = []
    for page in Bar(PAGES, desc="pages", unit="page"):
        runs = [_page_run(app, page, timeout) for _ in range(repeat)]
        samples = np.array([run[:4] for run in runs])
        errors = sorted({error for run in runs for error in run[4]})
        rows.append({"page": page, "cold_median_s": np.median(samples[:, 0]), "cold_max_s": samples[:, 0].max(),
                     "warm_median_s": np.median(samples[:, 1]), "warm_max_s": samples[:, 1].max(),
                     "cold_cpu_s": np.median(samples[:, 2]), "warm_cpu_s": np.median(samples[:, 3]),
                     "errors": "; ".join(errors)})
    return pd.DataFrame(rows)


TITLES = {page: page.capitalize() for page in PAGES}
RENDERED = """() => document.querySelector('[data-testid="stApp"][data-test-script-state="notRunning"]')
    && [...document.querySelectorAll('[data-testid="stPlotlyChart"]')].every(c => c.querySelector('.main-svg'))"""


def time_pages_in_browser(store: Path, app: Path, repeat: int = 3,
                          chromium: Path = Path("/usr/bin/chromium")) -> pd.DataFrame:
    """Seconds from a click in the sidebar to the page fully drawn (script finished, every plotly chart
    drawn) in headless chromium, as a user moving between pages sees it: *cold* right after the store's
    signature changed (every read misses the cache), *warm* on the next visit. The server is
    `streamlit run` on this machine; the browser runs here too and competes with it for the CPU."""
    import socket
    import subprocess
    import sys
    import urllib.request

    from playwright.sync_api import sync_playwright

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = Path(app).resolve().parents[1]
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(Path(app).resolve()),
                               f"--server.port={port}", "--server.address=127.0.0.1", "--server.headless=true"],
                              cwd=root, env={**os.environ, "WORKBENCH_STORE": str(Path(store).resolve())},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            tab.set_default_timeout(120_000)
            tab.goto(url)

            def visit(page: str) -> float:
                started = time.perf_counter()
                tab.get_by_test_id("stSidebarNav").get_by_text(TITLES[page], exact=True).click()
                tab.get_by_role("heading", name=TITLES[page], exact=True).wait_for()
                tab.wait_for_function(RENDERED)
                return time.perf_counter() - started

            visit("launch")  # the first session's imports (torch, plotly) are not a page's cost
            for page in Bar(PAGES, desc="pages in chromium", unit="page"):
                cold, warm = [], []
                for _ in range(repeat):
                    visit("launch" if page != "launch" else "runs")
                    os.utime(store)  # a new signature: the next visit reads the store again
                    cold.append(visit(page))
                    visit("launch" if page != "launch" else "runs")
                    warm.append(visit(page))
                rows.append({"page": page, "cold_median_s": float(np.median(cold)), "cold_max_s": max(cold),
                             "warm_median_s": float(np.median(warm)), "warm_max_s": max(warm)})
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return pd.DataFrame(rows)


def environment() -> dict[str, str]:
    import duckdb
    import streamlit

    return {"python": platform.python_version(), "streamlit": streamlit.__version__, "duckdb": duckdb.__version__,
            "pandas": pd.__version__, "cpus": str(os.cpu_count()), "machine": platform.machine(),
            "processor": platform.processor() or "unknown"}
