"""The sm90 2:4 sparse GEMM library through ctypes, and its two operations on torch tensors.

``compress`` turns a 2:4 weight W (out, in) into CUTLASS's compressed values and metadata;
``linear`` computes ``y = x W^T`` from them (sparse_gemm.cuh maps the layer onto D = A B). The library
is a prebuilt file (``WORKBENCH_SM90_SPARSE_LIB``) or the cached build of the current sources; it is
never built here, so a benchmark never waits minutes for nvcc (``workbench bench build-sm90`` builds it).
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import torch

from workbench.kernels.backends.sm90_sparse.build import LIB_ENV, library_file

ABI_VERSION = 1
DTYPE_IDS = {torch.bfloat16: 0, torch.float16: 1}
_size_p = ctypes.POINTER(ctypes.c_size_t)
_SIGNATURES = {  # name: (result, argument types), as api.cu declares them
    "wb_sm90_sparse_abi_version": (ctypes.c_int, []),
    "wb_sm90_sparse_last_error": (ctypes.c_char_p, []),
    "wb_sm90_sparse_configs": (ctypes.c_int, []),
    "wb_sm90_sparse_config_name": (ctypes.c_char_p, [ctypes.c_int]),
    "wb_sm90_sparse_layout_k": (ctypes.c_int, [ctypes.c_int, ctypes.c_int]),
    "wb_sm90_sparse_compressed_sizes": (ctypes.c_int, [ctypes.c_int] * 4 + [_size_p, _size_p]),
    "wb_sm90_sparse_compress": (ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                                               ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]),
    "wb_sm90_sparse_workspace": (ctypes.c_int, [ctypes.c_int] * 5 + [_size_p]),
    "wb_sm90_sparse_gemm": (ctypes.c_int, [ctypes.c_int, ctypes.c_int] + [ctypes.c_void_p] * 4
                            + [ctypes.c_int] * 3 + [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]),
}


class LibraryUnavailable(NotImplementedError):
    """No usable library here; the message says how to get one (a benchmark records it as unsupported)."""


def library_path() -> Path:
    """The prebuilt library the environment names, else the cached build of the current sources."""
    given = os.environ.get(LIB_ENV)
    if given:
        if not Path(given).is_file():
            raise LibraryUnavailable(f"semi24-sm90 is unsupported here: {LIB_ENV}={given} does not exist")
        return Path(given)
    built = library_file()
    if not built.is_file():
        raise LibraryUnavailable(f"semi24-sm90 is unsupported here: its library is not built ({built}); run "
                                 f"`workbench bench build-sm90` (nvcc + nvidia-cutlass) or set {LIB_ENV}")
    return built


@functools.cache
def _load(path: Path) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as err:
        raise LibraryUnavailable(f"semi24-sm90 is unsupported here: {path} does not load ({err})") from None
    for name, (result, arguments) in _SIGNATURES.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = result, arguments
    if lib.wb_sm90_sparse_abi_version() != ABI_VERSION:
        raise LibraryUnavailable(f"semi24-sm90 is unsupported here: {path} has ABI "
                                 f"{lib.wb_sm90_sparse_abi_version()}, this code needs {ABI_VERSION}; rebuild it")
    return lib


def load() -> ctypes.CDLL:
    return _load(library_path())


def _check(code: int, step: str) -> None:
    if code != 0:
        raise RuntimeError(f"semi24-sm90 {step} failed (code {code}): "
                           f"{load().wb_sm90_sparse_last_error().decode(errors='replace')}")


def config_names() -> list[str]:
    lib = load()
    return [lib.wb_sm90_sparse_config_name(i).decode() for i in range(lib.wb_sm90_sparse_configs())]


def layout_k(dtype: torch.dtype, config: int) -> int:
    """The tile K the compressed layout depends on: configurations with the same one share a compression."""
    return load().wb_sm90_sparse_layout_k(_dtype_id(dtype), config)


def _dtype_id(dtype: torch.dtype) -> int:
    if dtype not in DTYPE_IDS:
        raise ValueError(f"{dtype} is unsupported by semi24-sm90 (bf16 and fp16 only)")
    return DTYPE_IDS[dtype]


def compress(weight: torch.Tensor, config: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, metadata) of a 2:4 weight (out, in) for ``config``'s layout, as byte tensors on its device."""
    lib, dtype = load(), _dtype_id(weight.dtype)
    rows, cols = weight.shape
    if cols % 4:
        raise ValueError(f"a 2:4 weight needs in_features divisible by 4, got {cols}")
    # the compressor keeps the first two non-zeros of each group of 4 and overruns on a third: refuse it
    kept = (weight.reshape(rows, cols // 4, 4) != 0).sum(-1)
    if int(kept.max()) > 2:
        raise ValueError("the weight is not 2:4: some group of 4 consecutive inputs has more than 2 non-zeros")
    values_bytes, meta_bytes = ctypes.c_size_t(), ctypes.c_size_t()
    _check(lib.wb_sm90_sparse_compressed_sizes(dtype, config, rows, cols, ctypes.byref(values_bytes),
                                               ctypes.byref(meta_bytes)), "compressed sizes")
    dense = weight.contiguous()
    values = torch.empty(values_bytes.value, dtype=torch.uint8, device=weight.device)
    meta = torch.empty(meta_bytes.value, dtype=torch.uint8, device=weight.device)
    with torch.cuda.device(weight.device):
        stream = torch.cuda.current_stream().cuda_stream
        _check(lib.wb_sm90_sparse_compress(dtype, config, dense.data_ptr(), rows, cols, values.data_ptr(),
                                           meta.data_ptr(), stream), "compress")
    return values, meta


@functools.lru_cache(maxsize=1024)
def _workspace_bytes(dtype: int, config: int, rows: int, tokens: int, cols: int) -> int:
    size = ctypes.c_size_t()
    _check(load().wb_sm90_sparse_workspace(dtype, config, rows, tokens, cols, ctypes.byref(size)), "workspace size")
    return size.value


def linear(values: torch.Tensor, meta: torch.Tensor, x: torch.Tensor, out_features: int, config: int) -> torch.Tensor:
    """``x @ W^T``, (tokens, in) -> (tokens, out) in rows, for W compressed by ``compress`` for ``config``."""
    lib, dtype = load(), _dtype_id(x.dtype)
    if x.dim() != 2 or not x.is_contiguous():
        raise ValueError(f"x must be a contiguous (tokens, in) matrix, got shape {tuple(x.shape)}")
    if x.device.index != torch.cuda.current_device():  # the library launches on the current device
        raise ValueError(f"x is on {x.device}, the current device is cuda:{torch.cuda.current_device()}")
    tokens, cols = x.shape
    y = torch.empty((tokens, out_features), dtype=x.dtype, device=x.device)
    if tokens == 0:
        return y
    workspace_bytes = _workspace_bytes(dtype, config, out_features, tokens, cols)
    workspace = torch.empty(workspace_bytes, dtype=torch.uint8, device=x.device) if workspace_bytes else None
    stream = torch.cuda.current_stream(x.device).cuda_stream
    _check(lib.wb_sm90_sparse_gemm(dtype, config, values.data_ptr(), meta.data_ptr(), x.data_ptr(), y.data_ptr(),
                                   out_features, tokens, cols, workspace.data_ptr() if workspace is not None else None,
                                   workspace_bytes, stream), "gemm")
    return y
