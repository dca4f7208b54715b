"""A bare loop over a method's hooks, on a tiny model with random gradients: tests watch each step."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from workbench.spec import Pattern
from workbench.training.registry import TrainContext, resolve_method


def tiny_layers(seed: int = 0) -> tuple[nn.Module, dict[str, nn.Module]]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(40, 32), nn.ReLU(), nn.Linear(32, 16), nn.Conv2d(8, 8, 3))
    return model, {"0": model[0], "2": model[2], "3": model[3]}


def make_method(name: str, params: dict | None = None, sparsity: float = 0.8, total_steps: int = 100,
                density: str = "uniform", optimizer: str = "adam", seed: int = 0):
    model, layers = tiny_layers(seed)
    method_class = resolve_method(name)
    context = TrainContext(model=model, layers=layers, sparsity=sparsity, pattern=Pattern(name="unstructured"),
                           density=density, total_steps=total_steps, seed=seed,
                           params=method_class.Params.model_validate(params or {}))
    method = method_class(context)
    method.setup()
    context.optimizer = (torch.optim.Adam(model.parameters(), lr=1e-2) if optimizer == "adam"
                         else torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9))
    return method


def drive(method, steps: int, watch: Callable[[int, str], None] | None = None, seed: int = 0) -> None:
    """Run ``steps`` steps with seeded random gradients; ``watch(step, phase)`` after each hook."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = method.context.optimizer
    for step in range(steps):
        method.begin_step(step)
        if watch:
            watch(step, "begin")
        optimizer.zero_grad()
        for param in method.context.model.parameters():
            param.grad = torch.randn(param.shape, generator=generator)
        method.before_optimizer_step(step)
        optimizer.step()
        method.after_optimizer_step(step)
        if watch:
            watch(step, "after")
