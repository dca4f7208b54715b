"""How a kernel or model figure is measured: a case's steps (``harness.py``), timing on a GPU and a CPU
(``timing.py``), summary statistics (``stats.py``), the GPU's clocks (``clocks.py``), the machine's
ceilings (``ceilings.py``), a worker process per (dtype, backend) (``worker.py``, watched by
``isolation.py``) and what a figure was measured on (``environment.py``)."""
