"""The ``train`` job kind: sparse training from scratch or sparse fine-tuning, as one cached job.

```yaml
kind: train
model: fashion-cnn            # or smollm2-135m / tiny-llama / a folder (sparse fine-tuning)
data: fashion-mnist           # or shakespeare / pydoc / a text file (language modelling)
method: sr-ste                # dense | ste | sr-ste | gmp | set | rigl | sparse-finetune | structured-recovery
pattern: "2:4"
epochs: 3
```
Defaults that depend on the task (optimizer, batch size, length, evaluation size) are filled in by
the validator, so the canonical spec, and with it the key, always holds the values that ran.
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from workbench.spec import MAX_SEED, JobSpec, method_job_summary, register_kind
from workbench.values import Pattern, StrictModel

IMAGE_DATA = ("fashion-mnist",)
IMAGE_MODELS = ("fashion-cnn",)
# bumped when the loop's behaviour (order of hooks, data order, logging) changes a result
LOOP_VERSION = "1"


def model_identity(name: str) -> str:
    if name in IMAGE_MODELS:
        from workbench.models.fashion_cnn import IDENTITY

        return IDENTITY
    from workbench.models import model_identity as loader_identity

    return loader_identity(name)


def data_identity(name: str) -> str:
    if name == "fashion-mnist":
        from workbench.data.fashion_mnist import fashion_mnist_identity

        return fashion_mnist_identity()
    from workbench.data import data_identity as corpus_identity

    return corpus_identity(name)


class Optimizer(StrictModel):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (ignored by adamw)")
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)


IMAGE_OPTIMIZER = Optimizer()
TEXT_OPTIMIZER = Optimizer(name="adamw", lr=1e-4, weight_decay=0.0)


class TrainSpec(JobSpec):
    """Train (or fine-tune) a model while a sparse-training method keeps or evolves its masks."""

    KIND: ClassVar[str] = "train"
    # fields that change where or how fast a job runs, never its result: kept out of the key
    RUNTIME_FIELDS: ClassVar[frozenset[str]] = frozenset({"device", "checkpoint_every"})

    kind: Literal["train"] = "train"
    model: str = Field("fashion-cnn", description="fashion-cnn, or a causal LM (built-in, hub id, folder)")
    data: str = Field("fashion-mnist", description="fashion-mnist for the CNN, else a corpus for the LM")
    method: str = Field("dense", description="dense | ste | sr-ste | gmp | set | rigl | sparse-finetune | "
                                             "structured-recovery")
    params: dict[str, Any] = Field(default_factory=dict, description="the method's parameters")
    sparsity: float | None = Field(None, description="target fraction of zeros (default 0.5; N:M implies it)")
    pattern: Pattern = Field(default_factory=lambda: Pattern(name="unstructured"))
    density: Literal["uniform", "erk"] = Field("uniform", description="per-layer densities (uniform or ERK)")
    optimizer: Optimizer | None = Field(None, description="default: SGD 0.05 for images, AdamW 1e-4 for text")
    batch_size: int | None = Field(None, ge=1, description="default 128 images or 4 text windows")
    epochs: float | None = Field(None, gt=0, le=100_000, description="passes over the training images (images only)")
    steps: int | None = Field(None, ge=1, le=10**9, description="optimizer steps (default 3 epochs, or 20 for text)")
    seq_len: int = Field(128, ge=8, description="tokens per training and evaluation window (text)")
    train_subset: int | None = Field(None, ge=1, description="use only the first N training images")
    eval_subset: int | None = Field(None, ge=1, description="test images (default all 10k) or text windows (16; a "
                                                           "recovery: its pruned run's evaluation)")
    eval_every: int = Field(100, ge=1, description="evaluate every k steps (and at the first and last)")
    snapshot_every: int = Field(50, ge=1, description="snapshot every layer's mask every k steps")
    log_every: int = Field(10, ge=1, description="log the mean training loss every k steps")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="initialisation, data order and random growth")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto | cpu | cuda[:i]; not part of the key")
    checkpoint_every: int = Field(100, ge=1, description="checkpoint every k steps for resuming; not part of the key")

    @field_validator("pattern", mode="before")
    @classmethod
    def _parse_pattern(cls, value: Any) -> Any:
        return Pattern.parse(value) if isinstance(value, str) else value

    @field_validator("sparsity")
    @classmethod
    def _check_sparsity(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value < 1.0:
            raise ValueError(f"sparsity {value} is outside [0, 1): give the fraction of zeros, e.g. 0.9")
        return value

    @property
    def is_image(self) -> bool:
        return self.data in IMAGE_DATA

    @model_validator(mode="after")
    def _fill_defaults(self) -> "TrainSpec":
        from workbench.training.registry import resolve_method

        def fill(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if (self.model in IMAGE_MODELS) != self.is_image:
            raise ValueError(f"model {self.model!r} does not read data {self.data!r}: "
                             "fashion-cnn trains on fashion-mnist, a language model on a text corpus")
        method = resolve_method(self.method)
        fill("params", method.validate_params(self.params))
        if method.starts_from_run and self.is_image:
            raise ValueError(f"method {self.method!r} recovers a structurally pruned language model: set model and "
                             "data to the pruned run's")
        if method.starts_from_run and self.eval_subset is not None:
            raise ValueError(f"method {self.method!r} is evaluated on its pruned run's evaluation windows, so that the "
                             "two perplexities compare; drop eval_subset")
        if self.pattern.is_nm:
            implied = self.pattern.sparsity
            if self.sparsity is not None and abs(self.sparsity - implied) > 1e-9:
                raise ValueError(f"pattern {self.pattern} implies sparsity {implied:g} but sparsity is "
                                 f"{self.sparsity:g}; drop `sparsity` or set it to {implied:g}")
            fill("sparsity", implied)
            if not method.supports_nm:
                raise ValueError(f"method {self.method!r} does not keep an N:M pattern; use an unstructured pattern")
            if self.density != "uniform":
                raise ValueError("density 'erk' needs an unstructured pattern; N:M fixes every layer's sparsity")
        elif self.sparsity is None:
            fill("sparsity", 0.5)
        if method.name == "dense" or method.starts_from_run:  # no mask: a recovery trains a smaller dense model
            fill("sparsity", 0.0)
            fill("pattern", Pattern(name="unstructured"))
        if method.nm_only and not self.pattern.is_nm:
            raise ValueError(f"method {self.method!r} trains an N:M pattern: set pattern, e.g. '2:4'")
        if self.optimizer is None:
            fill("optimizer", IMAGE_OPTIMIZER if self.is_image else TEXT_OPTIMIZER)
        if self.batch_size is None:
            fill("batch_size", 128 if self.is_image else 4)
        if self.epochs is not None and self.steps is not None:
            raise ValueError("give either epochs or steps, not both")
        if self.epochs is not None and not self.is_image:
            raise ValueError("epochs apply to images; give `steps` for text")
        if self.steps is None:
            if self.is_image:
                images = self.train_subset or 60_000
                fill("steps", math.ceil((self.epochs or 3) * images / self.batch_size))
            else:
                fill("steps", 20)
            fill("epochs", None)
        if self.eval_subset is None and not self.is_image and not method.starts_from_run:
            fill("eval_subset", 16)
        return self

    def canonical(self) -> dict[str, Any]:
        data = super().canonical()
        for name in self.RUNTIME_FIELDS:
            data.pop(name, None)
        return data

    def with_run_keys(self, key_of: Callable[[str], str]) -> "TrainSpec":
        """A method's ``from_run`` parameter (a recovery's pruned run) is kept as the run's key."""
        if not isinstance(self.params.get("from_run"), str):
            return self
        key = key_of(self.params["from_run"])
        return self if key == self.params["from_run"] else self.model_copy(
            update={"params": {**self.params, "from_run": key}})

    def identity_parts(self) -> dict[str, str]:
        from workbench.training.registry import resolve_method

        return {
            "model": model_identity(self.model),
            "data": data_identity(self.data),
            "method": f"{self.method}@{resolve_method(self.method).version}",
            "loop": f"train-loop@{LOOP_VERSION}",
        }

    def summary(self) -> dict[str, Any]:
        return method_job_summary(self, self.density)


register_kind(TrainSpec)
