"""Matmul backends: ``y = x W^T`` (a linear layer) through one library path each, and their registry.

| backend        | format                              | where            | library path                      | module          |
|----------------|-------------------------------------|------------------|-----------------------------------|-----------------|
| dense          | the unpruned weight                 | CPU, CUDA        | F.linear / _scaled_mm / _int_mm   | dense           |
| semi24         | 2:4, torch's semi-structured tensor | CUDA             | cuSPARSELt, default algorithm     | semi_structured |
| semi24-cutlass | 2:4, torch's semi-structured tensor | CUDA, sm_8x only | CUTLASS                           | semi_structured |
| semi24-tuned   | 2:4, cuSPARSELt compressed          | CUDA             | cuSPARSELt, searched algorithm    | cusparselt      |
| semi24-sm90    | 2:4, CUTLASS sm90 compressed        | CUDA, sm_90 only | CUTLASS sm90, searched tile       | sm90            |
| semi24-fastest | 2:4, both of the above              | CUDA             | the faster of the two, per tokens | fastest         |
| bsr            | block sparse rows                   | CPU, CUDA        | torch.mm dispatch                 | compressed      |
| bsr-triton     | block sparse rows                   | CUDA             | torch's Triton bsr_dense_mm       | compressed      |
| csr            | compressed sparse rows              | CPU, CUDA        | torch.mm (MKL / cuSPARSE)         | compressed      |

``base.py`` holds the interface every backend implements, ``formats.py`` the patterns a weight is
pruned to and the 2:4 layout, ``tuning.py`` cuSPARSELt's algorithm search, ``sm90_sparse/`` the CUTLASS
library of ``semi24-sm90``. Adding a backend: a ``Backend`` subclass in a module here and one line in
``BACKENDS`` (README, "Adding a kernel backend").

This module imports no backend until one is asked for (backends import torch), so the command line
lists the names without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.kernels.backends.base import Backend

# name -> "module:class" in this package; a backend module is imported on first use
BACKENDS: dict[str, str] = {
    "dense": "dense:Dense",
    "semi24": "semi_structured:Semi24Torch",
    "semi24-cutlass": "semi_structured:Semi24Cutlass",
    "semi24-tuned": "cusparselt:Semi24Tuned",
    "semi24-sm90": "sm90:Semi24Sm90",
    "semi24-fastest": "fastest:Semi24Fastest",
    "bsr": "compressed:Bsr",
    "bsr-triton": "compressed:BsrTriton",
    "csr": "compressed:Csr",
}


def backend_class(name: str) -> type[Backend]:
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def make_backend(name: str, block: int = 64) -> Backend:
    return backend_class(name)(block=block)


def default_backends(device: str) -> tuple[str, ...]:
    return tuple(name for name in BACKENDS if device in backend_class(name).devices)


def default_dtypes(device: str) -> tuple[str, ...]:
    return ("fp32",) if device == "cpu" else ("bf16", "fp16", "fp8", "int8")


def searching_backends(pattern: str | None = None) -> tuple[str, ...]:
    """Backends that search their configuration per case (``Backend.searches_configuration``), of one
    pattern (``"2:4"``, ...) or all."""
    return tuple(name for name in BACKENDS if backend_class(name).searches_configuration
                 and pattern in (None, backend_class(name).pattern))
