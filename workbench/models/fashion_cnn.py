"""fashion-cnn: a small convolutional network for Fashion-MNIST, trained from scratch.

conv 3x3 (1 -> 16) - ReLU - max-pool - conv 3x3 (16 -> 32) - ReLU - max-pool - linear (1568 -> 128) - ReLU -
linear (128 -> 10): 207k weights, about 1.2M multiply-adds per image, so a few epochs take minutes on
two CPU cores. The first convolution (144 weights, one input channel) stays dense, as in the SR-STE and
RigL papers: every later layer's input width is a multiple of 4, so N:M applies to all of them.
"""

from __future__ import annotations

import torch
from torch import nn

# the architecture is defined in code and initialised from the spec's seed: bump v1 when it changes
IDENTITY = "fashion-cnn:v1"


class FashionCNN(nn.Module):
    def __init__(self, width: int = 16, hidden: int = 128, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width * 7 * 7, hidden)
        self.fc2 = nn.Linear(hidden, classes)
        self.pool = nn.MaxPool2d(2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(images)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def build_fashion_cnn(seed: int = 0) -> FashionCNN:
    """The network with PyTorch's default initialisation drawn from ``seed`` (global RNG untouched)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return FashionCNN()


def fashion_cnn_prunable(model: FashionCNN) -> dict[str, nn.Module]:
    """The layers sparse training prunes: every convolution and linear layer but the first."""
    return {"conv2": model.conv2, "fc1": model.fc1, "fc2": model.fc2}
