"""What a training job learns: images (fashion-cnn on Fashion-MNIST, scored by test accuracy) or text
(a causal LM on a corpus's training part, scored by perplexity on its held-out part).

The training package keeps its own model lookup: ``fashion-cnn`` is built here, every other name goes
to the workbench's loader (built-ins, folders, hub ids). Batches are a function of (seed, step) alone,
so that a run resumed from a checkpoint sees exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench.training.spec import TrainSpec


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


class Task(ABC):
    """What the loop asks of a task: the batch of a step, a forward pass, its loss, an evaluation."""

    family: str
    quality: str  # the headline metric: accuracy (higher is better) or perplexity (lower)

    @abstractmethod
    def batch(self, step: int) -> Any:
        """The batch of step ``step`` (a function of the seed and the step alone)."""

    @abstractmethod
    def run(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The model's outputs (logits) on a batch."""

    @abstractmethod
    def loss(self, outputs: torch.Tensor, batch: Any) -> torch.Tensor:
        """The task loss of those outputs."""

    @abstractmethod
    def evaluate(self, model: nn.Module, progress: bool = False) -> dict[str, float]:
        """Held-out metrics, by name."""


@dataclass
class ImageTask(Task):
    """Fashion-MNIST classification: shuffled epochs, accuracy on the test images."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    batch_size: int
    seed: int
    family: str = "image"
    quality: str = "accuracy"

    @classmethod
    def from_spec(cls, spec: TrainSpec, device: torch.device) -> "ImageTask":
        from workbench.data.fashion_mnist import load_fashion_mnist

        train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
        train, test = train.first(spec.train_subset), test.first(spec.eval_subset)
        return cls(train.normalised().to(device), train.labels.to(device), test.normalised().to(device),
                   test.labels.to(device), spec.batch_size, spec.seed)

    def __post_init__(self) -> None:
        self.steps_per_epoch = math.ceil(len(self.train_labels) / self.batch_size)
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:  # a fresh permutation per epoch, drawn from (seed, epoch)
            self._epoch = epoch
            self._order = torch.randperm(len(self.train_labels), generator=_step_generator(self.seed, epoch))
        index = self._order[position * self.batch_size : (position + 1) * self.batch_size].to(self.train_labels.device)
        return self.train_images[index], self.train_labels[index]

    def run(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return model(batch[0])

    def loss(self, outputs: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(outputs, batch[1])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, progress: bool = False) -> dict[str, float]:
        was_training = model.training
        model.eval()
        correct, loss = 0, 0.0
        for start in range(0, len(self.test_labels), 1000):
            images, labels = self.test_images[start : start + 1000], self.test_labels[start : start + 1000]
            logits = model(images)
            correct += int((logits.argmax(-1) == labels).sum())
            loss += float(F.cross_entropy(logits, labels, reduction="sum"))
        model.train(was_training)
        return {"accuracy": correct / len(self.test_labels), "test_loss": loss / len(self.test_labels)}


@dataclass
class TextTask(Task):
    """Causal language modelling: random windows of the corpus's training part, perplexity on the
    first non-overlapping windows of its held-out part."""

    train_ids: torch.Tensor
    eval_windows: torch.Tensor
    batch_size: int
    seq_len: int
    seed: int
    device: torch.device
    family: str = "causal-lm"
    quality: str = "perplexity"

    @classmethod
    def from_spec(cls, spec: TrainSpec, tokenizer: object, device: torch.device,
                  eval_windows: torch.Tensor | None = None) -> "TextTask":
        """``eval_windows``: evaluate on these (a recovery: its pruned run's) instead of the spec's."""
        from workbench.data import evaluation_windows, token_ids
        from workbench.errors import AssetError

        train_ids = token_ids(spec.data, "calibration", tokenizer)
        if len(train_ids) <= spec.seq_len:
            raise AssetError(f"the training text of {spec.data!r} has {len(train_ids)} tokens, fewer than one "
                             f"window of {spec.seq_len}", "use a shorter seq_len or a longer corpus")
        if eval_windows is None:
            eval_windows = evaluation_windows(spec.data, tokenizer, spec.eval_subset, spec.seq_len)
        return cls(train_ids, eval_windows, spec.batch_size, spec.seq_len, spec.seed, device)

    def batch(self, step: int) -> torch.Tensor:
        starts = torch.randint(0, len(self.train_ids) - self.seq_len, (self.batch_size,),
                               generator=_step_generator(self.seed, step))
        return torch.stack([self.train_ids[s : s + self.seq_len] for s in starts.tolist()]).to(self.device)

    def run(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return model(input_ids=batch).logits

    def loss(self, outputs: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        logits = outputs[:, :-1].float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))

    def evaluate(self, model: nn.Module, progress: bool = False) -> dict[str, float]:
        from workbench.metrics.language import perplexity

        was_training = model.training
        model.eval()
        result = {"perplexity": perplexity(model, self.eval_windows, progress=progress)}
        model.train(was_training)
        return result
