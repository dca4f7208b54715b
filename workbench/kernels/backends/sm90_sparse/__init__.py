"""2:4 sparse GEMM for Hopper (sm_90a) from CUTLASS's sm90 sparse collective, as a small C-ABI library.

``build.py`` compiles it with nvcc (``workbench bench build-sm90``), ``library.py`` loads it through
ctypes and offers ``compress`` and ``linear`` on torch tensors; the ``semi24-sm90`` backend uses both.
"""
