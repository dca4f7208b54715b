"""Metrics: sparsity, divergence (SAD, IoU), perplexity, embedding fidelity, memory."""
