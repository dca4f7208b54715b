"""Recovery of a structurally pruned model: short fine-tuning of a structured prune run's shrunk model, with
SquareHead distillation from the dense model it was cut from (Kurtic et al., 2023; FLAP and LLM-Pruner
recover their pruned models by a short fine-tuning too).

The train job rebuilds the student (the pruned run named by ``params.from_run``) and hands it in as the
context's ``model``, beside the dense ``teacher`` and ``teacher_blocks``. There is no mask: the student is
dense and smaller, and every one of its weights trains. A block's output keeps the hidden size whatever
heads or channels it lost, so SquareHead compares block outputs directly; after depth pruning, student block
i is compared with the teacher block it was (the kept indices, in order: ``kept_blocks``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from workbench.errors import SpecError
from workbench.models.layers import transformer_blocks
from workbench.training.finetune import SparseFinetune, feature_names


class RecoveryParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    from_run: str = Field("", description="the structured prune run whose model is recovered (run id, unique "
                                          "prefix or key; the spec keeps its key)")
    distill: Literal["none", "squarehead"] = "squarehead"
    distill_weight: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _named(self) -> "RecoveryParams":
        if not self.from_run.strip():
            raise ValueError("name the structured prune run to recover: its run id or key")
        self.from_run = self.from_run.strip()
        return self


def kept_blocks(block_mask: torch.Tensor | None, blocks: int) -> tuple[int, ...]:
    """The teacher block under each of the student's ``blocks`` blocks: the kept entries of a depth-pruning
    mask (True = kept) in order, or every block its own when no block was removed."""
    if block_mask is None:
        return tuple(range(blocks))
    kept = tuple(int(index) for index in torch.nonzero(block_mask.reshape(-1)).flatten())
    if len(kept) != blocks:
        raise SpecError(f"the block mask keeps {len(kept)} blocks but the shrunk model has {blocks}",
                        "rebuild the student from the same pruned run as its mask")
    return kept


class StructuredRecovery(SparseFinetune):
    name: ClassVar[str] = "structured-recovery"
    version: ClassVar[str] = "1"
    Params: ClassVar[type[BaseModel]] = RecoveryParams
    supports_nm: ClassVar[bool] = False
    starts_from_run: ClassVar[bool] = True

    def setup(self) -> None:
        context = self.context
        if context.teacher is None or context.teacher_blocks is None:
            raise SpecError("a structured recovery needs the pruned run's model and its dense teacher",
                            "run the spec as a train job (workbench run), which rebuilds both from params.from_run")
        self.feature_names = feature_names(context.model, context.layers)
        prefix, _ = transformer_blocks(context.teacher)
        self.teacher_feature_names = [f"{prefix}.{index}" for index in context.teacher_blocks]
        if len(self.teacher_feature_names) != len(self.feature_names):
            raise SpecError(f"{len(self.teacher_feature_names)} teacher blocks for {len(self.feature_names)} "
                            "student blocks", "give one teacher block per student block")
        self.teacher = context.teacher.eval().requires_grad_(False) if self.params.distill == "squarehead" else None
