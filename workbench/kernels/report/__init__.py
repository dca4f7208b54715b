"""Benchmark rows turned into verdicts: the fastest backend of each case and a run's headline figures
(``selection.py``), and the tables and targets of ``workbench bench report`` and the app (``tables.py``)."""
