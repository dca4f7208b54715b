"""Sparse fine-tuning (recovery) with a fixed mask: prune once, then train the kept weights.

The mask comes from a one-shot pruning method of ``workbench.pruning`` (magnitude by default, any
registered method by name) and never changes; gradients and weights are held to it. The loss is the
task loss, plus, with ``distill: squarehead``, ``distill_weight`` times the SquareHead layer-wise L2
distillation from the dense model taken before pruning (Kurtic et al., 2023; see ``distill``).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Callable, ClassVar, Iterator, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from workbench.errors import SpecError
from workbench.training.density import layer_sparsities
from workbench.training.distill import capture_features, squarehead_loss
from workbench.training.registry import TrainingMethod
from workbench.training.sparsity import apply_masks


class FinetuneParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prune_method: str = Field("magnitude", description="one-shot method that makes the mask")
    prune_params: dict[str, Any] = Field(default_factory=dict)
    calibration_samples: int = Field(16, ge=1, description="windows for a method that needs calibration")
    distill: Literal["none", "squarehead"] = "none"
    distill_weight: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _check_prune_method(self) -> "FinetuneParams":
        from workbench.pruning.registry import resolve_method

        self.prune_params = resolve_method(self.prune_method).validate_params(self.prune_params)
        return self


def feature_names(model: nn.Module, layers: dict[str, nn.Module]) -> list[str]:
    """Where SquareHead compares features: the transformer blocks, else the sparse layers themselves."""
    from workbench.errors import PruningError
    from workbench.models.layers import transformer_blocks

    try:
        prefix, blocks = transformer_blocks(model)
    except PruningError:
        return list(layers)
    return [f"{prefix}.{index}" for index in range(len(blocks))]


class SparseFinetune(TrainingMethod):
    name: ClassVar[str] = "sparse-finetune"
    version: ClassVar[str] = "1"
    Params: ClassVar[type[BaseModel]] = FinetuneParams

    def setup(self) -> None:
        from workbench.pruning.registry import PruneContext, resolve_method

        context, params = self.context, self.params
        self.teacher: nn.Module | None = None
        self.feature_names = self.teacher_feature_names = feature_names(context.model, context.layers)
        if params.distill == "squarehead":
            self.teacher = copy.deepcopy(context.model).eval().requires_grad_(False)
        method = resolve_method(params.prune_method)
        if method.needs_calibration and context.calibration is None:
            raise SpecError(f"one-shot method {params.prune_method!r} needs calibration text",
                            "use it on a language model, or prune with magnitude")
        prune_context = PruneContext(
            model=context.model, layers=context.layers, pattern=context.pattern,
            targets=layer_sparsities(context.layers, context.sparsity, context.density),
            params=method.Params.model_validate(params.prune_params), seed=context.seed,
            calibration=context.calibration, family=context.family)
        outcome = method.prune(prune_context)
        self.mask = {name: outcome.masks[name].to(m.weight.device).bool() for name, m in context.layers.items()}
        apply_masks(context.layers, self.mask)

    def features(self, model: nn.Module, names: list[str] | None = None) -> list[nn.Module]:
        return [model.get_submodule(name) for name in (names or self.feature_names)]

    @contextmanager
    def watch(self) -> Iterator[None]:
        """Record the student's features during its forward pass."""
        if self.teacher is None:
            yield
            return
        with capture_features(self.features(self.context.model)) as features:
            self.student_features = features
            yield

    def extra_loss(self, step: int, run_model: Callable[[nn.Module], Any]) -> dict[str, torch.Tensor]:
        """SquareHead against the dense teacher on the batch the student just saw."""
        if self.teacher is None:
            return {}
        with torch.no_grad(), capture_features(self.features(self.teacher, self.teacher_feature_names)) as teacher:
            run_model(self.teacher)
        return {"distill": self.params.distill_weight * squarehead_loss(self.student_features, teacher)}
