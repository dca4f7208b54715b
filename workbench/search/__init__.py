"""Searching how a model is pruned at a fixed total (EvoPress, and random search at the same budget): the
per-layer sparsity allocation (``space: unstructured``), a per-layer N:M pattern (``nm``), how many heads and
channels each block loses (``structured``) or which blocks to drop (``depth``).

- ``spec.py``: the ``search`` job kind (``SearchSpec``).
- ``levels.py``: the level database: every prunable layer pruned at levels -L..+L around the target (or
  at N:M patterns around the target pattern),
  one level step being the same number of weights in every layer, so that any candidate whose levels sum
  to zero prunes exactly as many weights as the uniform allocation; built from dense calibration
  statistics (Wanda or SparseGPT), kept on disk in safetensors, swapped into the model per candidate.
- ``fitness.py``: the fitness, KL divergence of a candidate's next-token distribution to the dense
  model's on held-out calibration windows (the dense top-k log-probabilities computed once).
- ``widths.py``: the structured space: per-block levels of heads and channels, one step the same number of
  parameters in every block, the units inside a block ranked by a structured criterion; ``WidthMasker``
  zeroes a candidate's removed units.
- ``depth.py``: the depth space: 0/1 levels per block (1 = dropped) with a fixed count, no database;
  ``BlockDropper`` runs the model without a candidate's dropped blocks.
- ``evolution.py``: EvoPress (mutation, multi-stage selection, elitism) and random search, pure: they see
  candidates as level vectors in a ``Space`` and the fitness as a function.
- ``allocation.py``: the ``search`` allocation of a prune spec (per-layer targets; for a structured prune spec a
  depth search's kept blocks or a structured search's widths; the prune job reads them from a finished search
  run and hands them in).

Nothing here reads or writes the store: the executor (``workbench/jobs/search.py``) does.
"""
