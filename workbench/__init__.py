"""Sparsity Workbench: prune, sparse-train and benchmark neural networks as cached jobs."""

__version__ = "0.1.0"
