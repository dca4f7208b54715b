"""Benchmarks that build their own inputs and print figures (`workbench bench ...`)."""
