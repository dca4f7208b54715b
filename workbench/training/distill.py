"""SquareHead: layer-wise L2 distillation from the dense teacher (Kurtic et al., 2023, "Sparse
Fine-tuning for Inference Acceleration of Large Language Models", Sec. 3).

For every feature layer l (a transformer block's output, or a sparse layer's output in a CNN):

    L_feat = sum_l  mean((f_l^s - f_l^t)^2) / mean((f_l^t)^2)

The normalisation by the teacher's mean square makes every layer count alike whatever the scale of
its features, which is what keeps high-sparsity fine-tuning stable.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

EPS = 1e-8


def squarehead_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Sum over layers of the normalised mean squared error between student and teacher features."""
    if len(student) != len(teacher) or not student:
        raise ValueError(f"need matching, non-empty feature lists (student {len(student)}, teacher {len(teacher)})")
    terms = [(s.float() - t.float()).pow(2).mean() / (t.float().pow(2).mean() + EPS) for s, t in zip(student, teacher)]
    return torch.stack(terms).sum()


def _output_tensor(output: object) -> torch.Tensor:
    # transformer blocks may return a tuple (hidden states first)
    return output[0] if isinstance(output, (tuple, list)) else output  # type: ignore[return-value]


@contextmanager
def capture_features(modules: list[nn.Module]) -> Iterator[list[torch.Tensor]]:
    """Within the block, every forward pass records the outputs of ``modules`` (in order, replaced
    on each pass)."""
    features: list[torch.Tensor] = [None] * len(modules)  # type: ignore[list-item]

    def recorder(index: int):
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            features[index] = _output_tensor(output)
        return hook

    handles = [module.register_forward_hook(recorder(i)) for i, module in enumerate(modules)]
    try:
        yield features
    finally:
        for handle in handles:
            handle.remove()
