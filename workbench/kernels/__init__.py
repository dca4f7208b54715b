"""Kernel and model latency benchmarks: does a sparse model run faster, and where does it not?

- ``spec.py``: the ``bench`` job kind (``BenchSpec``), the device defaults; ``suites.py``: the default
  GPU and CPU suites. The job itself runs in ``workbench/jobs/bench.py``.
- ``backends/``: the matmul backends (dense, 2:4 through torch's semi-structured tensor, cuSPARSELt with
  a per-case algorithm search in ``tuning.py``, CUTLASS sm90 in ``sm90_sparse/``, the faster of the two,
  BSR, CSR), the weight patterns they need (``formats.py``) and their registry (``BACKENDS``).
- ``measure/``: how a figure is measured: the machine's ceilings (``ceilings.py``), a kernel case
  (``harness.py``), timing (``timing.py``, ``stats.py``, ``clocks.py``), the worker process each
  (dtype, backend) runs in (``worker.py``, started and watched by ``isolation.py``) and what a figure
  was measured on (``environment.py``).
- ``convert.py`` puts a model's linear layers behind those backends; ``latency.py`` times such a model
  (prefill, decode) inside a worker.
- ``report/``: the stored rows as tables and verdicts (``tables.py``), the fastest backend per case and
  a run's headline figures (``selection.py``).

Nothing here reads or writes the store: the job and the command line hand rows in and out.
"""
