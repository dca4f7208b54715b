"""Compiles the sm90 2:4 sparse GEMM library with nvcc into the workbench cache.

``kernel.cu`` is compiled once per (dtype, configuration) of ``CONFIGS`` (each a few minutes of
CUTLASS templates, so they compile in parallel and each object is cached on its own), ``api.cu`` once,
and the objects are linked with the static CUDA runtime into one shared library with a C ABI. The
library's file name carries a hash of the sources, flags and configurations (``source_key``), so that
a library is found again without a compiler (``library.py``) and rebuilt when the code changes; the
compiler and CUTLASS versions enter the objects' keys, so a new toolkit recompiles them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from workbench.errors import WorkbenchError

SOURCE_DIR = Path(__file__).parent
SOURCES = ("entry.h", "sparse_gemm.cuh", "kernel.cu", "api.cu")
INCLUDES = {"api.cu": ("entry.h",), "kernel.cu": ("entry.h", "sparse_gemm.cuh")}  # what each object depends on
LIB_ENV = "WORKBENCH_SM90_SPARSE_LIB"  # a prebuilt library: how a GPU host without nvcc gets it
CUTLASS_ENV = "CUTLASS_DIR"  # a CUTLASS source tree (include/, tools/util/include/)
DEFAULT_CUDA_HOME = "/usr/local/cuda"
DTYPES = ("bf16", "fp16")

# SASS for sm_90a only: wgmma.sp exists on the arch-specific target alone, and PTX would only grow the file
FLAGS = ("-gencode", "arch=compute_90a,code=sm_90a", "-O3", "-std=c++17", "--expt-relaxed-constexpr",
         "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden", "-DNDEBUG")
LINK_FLAGS = ("-shared", "--cudart", "static")


class BuildError(WorkbenchError):
    """A kernel library that cannot be built here (no nvcc, no CUTLASS headers, a compile error)."""


@dataclass(frozen=True)
class KernelConfig:
    """One instantiation of CUTLASS's sm90 sparse GEMM: CTA tile (M, N, K), cluster (M, N), schedule and
    tile scheduler."""

    tile: tuple[int, int, int]
    cluster: tuple[int, int]
    schedule: str  # cooperative | pingpong
    scheduler: str = "persistent"  # persistent | streamk (cooperative only)

    @property
    def name(self) -> str:
        """What the library reports (kernel.cu is given it); the default scheduler adds nothing."""
        suffix = "" if self.scheduler == "persistent" else f"_{self.scheduler}"
        return "x".join(map(str, self.tile)) + "_" + "x".join(map(str, self.cluster)) + "x1_" + self.schedule + suffix

    def defines(self, dtype: str, index: int) -> list[str]:
        (tile_m, tile_n, tile_k), (cluster_m, cluster_n) = self.tile, self.cluster
        return [f"-DWB_DTYPE={dtype}", f"-DWB_INDEX={index}", f"-DWB_TILE_M={tile_m}", f"-DWB_TILE_N={tile_n}",
                f"-DWB_TILE_K={tile_k}", f"-DWB_CLUSTER_M={cluster_m}", f"-DWB_CLUSTER_N={cluster_n}",
                f"-DWB_SCHEDULE={self.schedule}", f"-DWB_SCHEDULER={self.scheduler}", f"-DWB_NAME={self.name}"]


# CTA tiles and clusters of CUTLASS's own sm90 sparse 16-bit kernels (cutlass_library's generator: the
# dense tiles with the sparse MMA's doubled K halved back to 64, for more pipeline stages; clusters 1x2,
# 2x1 and 1x1), both schedules its sparse collective builder accepts, and two 128-deep tiles as in
# CUTLASS's sparse GEMM example (fewer, larger stages; their metadata has another layout, so a weight is
# compressed once per tile depth). The 64-row tile is ping-pong only: cooperative needs 128 rows.
# Stream-K (CUTLASS's generator pairs it with its cooperative sparse kernels): on the tiles the search
# chose most on large problems, and on a narrow 128-deep tile for decode-sized token counts, where the
# persistent schedule keeps one SM per output tile (a 4096-row weight: 32 of 132 SMs) while stream-K
# splits the long K among all of them.
CONFIGS = (
    KernelConfig((128, 128, 64), (1, 2), "cooperative"),
    KernelConfig((128, 128, 64), (2, 1), "cooperative"),
    KernelConfig((128, 256, 64), (1, 2), "cooperative"),
    KernelConfig((256, 128, 64), (1, 2), "cooperative"),
    KernelConfig((128, 128, 64), (1, 2), "pingpong"),
    KernelConfig((64, 128, 64), (1, 1), "pingpong"),
    KernelConfig((128, 128, 128), (1, 2), "cooperative"),
    KernelConfig((256, 128, 128), (1, 2), "cooperative"),
    KernelConfig((128, 256, 64), (1, 2), "cooperative", "streamk"),
    KernelConfig((256, 128, 64), (1, 2), "cooperative", "streamk"),
    KernelConfig((128, 64, 128), (1, 1), "cooperative", "streamk"),
    KernelConfig((128, 64, 128), (1, 1), "cooperative"),
)


def _hash(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()


def read_sources() -> dict[str, bytes]:
    return {name: (SOURCE_DIR / name).read_bytes() for name in SOURCES}


def source_key(sources: dict[str, bytes] | None = None, flags: tuple[str, ...] = FLAGS,
               configs: tuple[KernelConfig, ...] = CONFIGS) -> str:
    """What the library's file name carries: its sources, flags and configurations, not the toolchain
    (a host without nvcc must still find the library it was given)."""
    sources = read_sources() if sources is None else sources
    return _hash(*(f"{name}:" .encode() + text for name, text in sorted(sources.items())), *flags, *LINK_FLAGS,
                 *(f"{dtype}:{config.name}" for dtype in DTYPES for config in configs))[:16]


def build_dir() -> Path:
    from workbench.models import cache_dir

    return cache_dir() / "sm90-sparse"


def library_file(key: str | None = None) -> Path:
    return build_dir() / f"libwb_sm90_sparse-{key or source_key()}.so"


def find_nvcc() -> Path:
    candidates = [os.environ.get("NVCC"), shutil.which("nvcc")]
    candidates += [str(Path(home) / "bin" / "nvcc") for home in
                   (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), DEFAULT_CUDA_HOME) if home]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise BuildError("nvcc (the CUDA compiler, 12.4 or newer) was not found on PATH, in CUDA_HOME or /usr/local/cuda",
                     f"install the CUDA toolkit and set CUDA_HOME, or set {LIB_ENV} to a library built elsewhere")


def find_cutlass() -> list[Path]:
    """Include folders of CUTLASS 3.x/4.x: $CUTLASS_DIR, else the `nvidia-cutlass` package's copy."""
    root = os.environ.get(CUTLASS_ENV)
    if not root:
        spec = importlib.util.find_spec("cutlass_library")  # finds the package without importing it
        if spec is not None and spec.submodule_search_locations:
            root = str(Path(list(spec.submodule_search_locations)[0]) / "source")
    if root:
        folders = [Path(root) / "include", Path(root) / "tools" / "util" / "include"]
        wanted = [folders[0] / "cutlass/gemm/collective/sm90_sparse_mma_tma_gmma_ss_warpspecialized.hpp",
                  folders[1] / "cutlass/util/packed_stride.hpp"]
        if all(path.is_file() for path in wanted):
            return folders
    where = f"{CUTLASS_ENV}={root}" if os.environ.get(CUTLASS_ENV) else "the nvidia-cutlass package"
    raise BuildError(f"CUTLASS headers with the sm90 sparse GEMM were not found ({where})",
                     f"pip install 'sparsity-workbench[cutlass]' (nvidia-cutlass), or set {CUTLASS_ENV} to a "
                     "CUTLASS 3.6+ source tree")


def toolchain(nvcc: Path, includes: list[Path]) -> str:
    """The compiler's and CUTLASS's versions: they change the objects without changing our sources."""
    version = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True, check=False).stdout
    return _hash(version, (includes[0] / "cutlass" / "version.h").read_bytes())


def _compile(nvcc: Path, includes: list[Path], source: str, defines: list[str], out: Path) -> None:
    command = [str(nvcc), *FLAGS, *(f"-I{folder}" for folder in includes), *defines, "-c",
               str(SOURCE_DIR / source), "-o", str(out.with_suffix(".tmp.o"))]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        log = out.with_suffix(".log")
        log.write_text(" ".join(command) + "\n\n" + done.stdout + done.stderr)
        first = next((line for line in done.stderr.splitlines() if "error" in line), done.stderr.strip()[-300:])
        raise BuildError(f"nvcc failed on {source} {' '.join(defines)}: {first.strip()}",
                         f"read the full log at {log}")
    out.with_suffix(".tmp.o").replace(out)


def build(jobs: int = 2, echo: Callable[[str], None] = print) -> Path:
    """The library for the current sources, compiling only objects that are not cached; returns its path."""
    nvcc, includes = find_nvcc(), find_cutlass()
    sources = read_sources()
    tools = toolchain(nvcc, includes)
    out_dir = build_dir() / "objects"
    out_dir.mkdir(parents=True, exist_ok=True)
    units = [("api.cu", [])] + [("kernel.cu", config.defines(dtype, index))
                                for dtype in DTYPES for index, config in enumerate(CONFIGS)]
    objects = [out_dir / f"{_hash(tools, *FLAGS, *defines, *(sources[n] for n in (source, *INCLUDES[source])))[:20]}.o"
               for source, defines in units]
    todo = [(unit, obj) for unit, obj in zip(units, objects) if not obj.is_file()]
    echo(f"sm90 sparse GEMM: {len(units) - len(todo)} of {len(units)} objects cached, compiling {len(todo)} "
         f"with {nvcc} ({jobs} at a time, minutes each)")
    started = time.perf_counter()

    def compile_one(item: tuple[tuple[str, list[str]], Path]) -> None:
        (source, defines), obj = item
        began = time.perf_counter()
        _compile(nvcc, includes, source, defines, obj)
        label = " ".join(d.split("=", 1)[1] for d in defines if d.startswith(("-DWB_DTYPE", "-DWB_INDEX"))) or "api"
        echo(f"  compiled {source} {label} in {time.perf_counter() - began:.0f} s")

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(compile_one, todo))
    library = library_file(source_key(sources))
    manifest = library.with_suffix(".json")
    linked = {"objects": [obj.name for obj in objects], "toolchain": tools}
    if not library.is_file() or not manifest.is_file() or json.loads(manifest.read_text()) != linked:
        tmp = library.with_suffix(f".{os.getpid()}.tmp")
        done = subprocess.run([str(nvcc), *LINK_FLAGS, *FLAGS[:2], *map(str, objects), "-o", str(tmp)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BuildError(f"linking {library.name} failed: {done.stderr.strip()[-300:]}",
                             "check the CUDA toolkit installation (the static runtime, libcudart_static.a)")
        tmp.replace(library)
        manifest.write_text(json.dumps(linked))
    echo(f"sm90 sparse GEMM: {library} ({library.stat().st_size / 2**20:.1f} MiB, "
         f"{time.perf_counter() - started:.0f} s)")
    return library
