"""Kernel and model latency benchmarks: does a sparse model run faster, and where does it not?

``spec.py`` defines the ``bench`` job kind; ``job.py`` runs it: the machine's ceilings
(``ceilings.py``), then every (dtype, backend) in a worker process of its own (``isolation.py``,
``worker.py``) timing cases (``harness.py``, ``timing.py``, ``stats.py``) through the backends of
``backends.py`` (2:4 via cuSPARSELt with a per-case algorithm search in ``tuning.py``, CUTLASS, BSR,
CSR), or a model whose linear layers ``convert.py`` puts behind those backends (``latency.py``).
``report.py`` and ``selection.py`` turn the stored rows into tables and verdicts; ``suites.py`` holds
the default GPU and CPU suites.
"""
