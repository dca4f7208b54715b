"""The ``search`` job kind: search how a model is pruned at a fixed total (``SearchSpec``).

```yaml
kind: search
method: evopress             # or random: the same number of fitness evaluations on the same token stages
space: unstructured          # unstructured | nm (per-layer N:M) | structured (per-block widths) | depth (blocks)
model: smollm2-135m
data: shakespeare
sparsity: 0.7                # total fraction of zeros, kept exactly by every candidate
prune_method: wanda          # the level database's method: wanda | sparsegpt (prune_params: its parameters)
levels: {max: 4, step: 0.1}  # levels -4..4; one step = 10% of the smallest layer's weights (rounded up)
calibration: {samples: 64, seq_len: 512, seed: 0}
budget: {generations: 50, offspring: 16, survivors: [4, 1], tokens: [1024, 8192]}
evaluation: {windows: 64, seq_len: 512}
seed: 0
```
The database's calibration statistics come from ``calibration.samples`` windows; the fitness windows are
``budget.tokens[-1] / calibration.seq_len`` further windows drawn with the same seed (held out of the
statistics). Its result is the winning allocation (``layer_stats.target_sparsity`` per layer), which a
prune spec uses with ``allocation: search`` and ``allocation_params: {run: <run id or key>}``.

``space: nm`` searches a per-layer N:M pattern around ``pattern:`` (e.g. ``4:8``: levels keep 2..6 of 8 with
``levels.max: 2``; ``levels.step`` does not apply), moves trading one kept weight per group between layers of
the same size (see ``levels.py``); a prune spec with the same ``pattern`` and ``allocation: search`` applies
it (Wanda or SparseGPT).

``space: structured`` searches how many heads and channels each block loses (``structure: heads | channels |
heads+channels``, ``head_unit`` as in a structured prune spec, ``sparsity`` the fraction of the decoder's
parameters, default 0.2); ``prune_method`` is then the structured criterion that ranks the units inside a block
(wanda-sp, magnitude-sp, flap, cfsp) and ``levels.step`` a fraction of a block's units of a kind (see
``widths.py``). A structured prune spec with the same structure, criterion and ``allocation: search`` applies it.

``space: depth`` searches which blocks to drop: ``blocks: 6`` (or ``sparsity:``, the fraction of the
decoder's parameters, as a structured prune spec gives it); no level database, so no ``prune_method``,
``prune_params`` or ``levels``. Its fitness windows are drawn after ``calibration.samples`` windows as
above, so they stay out of what a block-influence prune run with the same calibration reads. A structured
prune spec (``structure: blocks``) with ``allocation: search`` drops the searched blocks.

``evaluation.tasks`` is refused: a search scores candidates by KL and reports perplexity; the tasks belong
to the prune spec that applies its allocation (the model the tasks should score).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from workbench.errors import SpecError
from workbench.spec import MAX_SEED, Calibration, Evaluation, JobSpec, register_kind
from workbench.values import Pattern, StrictModel

# bumped when what a search computes from the same spec changes (levels, fitness, the algorithms)
SEARCH_VERSION = "1"
SPACES = ("unstructured", "nm", "structured", "depth")
LEVEL_METHODS = ("wanda", "sparsegpt")  # the methods a level database (unstructured, N:M) is built with
LEVEL_FIELDS = ("prune_method", "prune_params", "levels")  # the level database's: no meaning for depth


class Levels(StrictModel):
    max: int = Field(4, ge=1, le=64, description="levels run from -max to +max around the target (0)")
    step: float = Field(0.1, gt=0, le=1, description="weights one level moves, as a fraction of the smallest "
                                                    "prunable layer; rounded up to a multiple of every layer's rows "
                                                    "and columns, so that Wanda and SparseGPT meet each count exactly;"
                                                    " structured: a fraction of a block's units of each kind")


class Budget(StrictModel):
    generations: int = Field(50, ge=1, le=1_000_000, description="EvoPress generations (random search: rounds)")
    offspring: int = Field(16, ge=1, le=10_000, description="candidates drawn per generation")
    survivors: tuple[int, ...] = Field((4, 1), description="candidates kept after each selection stage; the "
                                                           "last is 1 (the next parent)")
    tokens: tuple[int, ...] = Field((1024, 8192), description="fitness tokens of each stage (whole calibration "
                                                              "windows); the last stage reads every fitness window")

    @model_validator(mode="after")
    def _check_stages(self) -> "Budget":
        if not self.survivors or len(self.survivors) != len(self.tokens):
            raise ValueError(f"survivors {list(self.survivors)} and tokens {list(self.tokens)} must name the same "
                             "number of selection stages (at least one)")
        if self.survivors[-1] != 1:
            raise ValueError(f"the last stage keeps one candidate (the next parent), not {self.survivors[-1]}")
        if any(s < 1 for s in self.survivors) or any(b > a for a, b in zip(self.survivors, self.survivors[1:])):
            raise ValueError(f"survivors {list(self.survivors)} must be positive and never grow from stage to stage")
        if self.survivors[0] > self.offspring:
            raise ValueError(f"the first stage cannot keep {self.survivors[0]} of {self.offspring} offspring")
        if any(t < 1 for t in self.tokens) or any(b < a for a, b in zip(self.tokens, self.tokens[1:])):
            raise ValueError(f"tokens {list(self.tokens)} must be positive and never shrink from stage to stage")
        return self

    def evaluations(self, uniform_start: bool = True) -> int:
        """Fitness evaluations of a whole search: the start (the uniform allocation once, or a start round of
        ``offspring`` random candidates through the stages), then per generation every offspring in the first
        stage and the survivors of each stage in the next (the parent's fitness on the fixed last stage is
        known)."""
        round_ = self.offspring + sum(self.survivors[:-1])
        return (1 if uniform_start else round_) + self.generations * round_


class SearchSpec(JobSpec):
    """Search the per-layer sparsity allocation over a level database (EvoPress, or random search)."""

    KIND: ClassVar[str] = "search"
    kind: Literal["search"] = "search"
    method: Literal["evopress", "random"] = Field("evopress", description="evopress | random (same budget)")
    space: str = Field("unstructured", description="what is searched: unstructured (per-layer sparsity) or depth "
                                                   "(which blocks to drop)")
    model: str = Field("smollm2-135m", description="built-in name, hub id or local folder")
    data: str = Field("shakespeare", description="corpus of the calibration and fitness windows")
    sparsity: float | None = Field(None, gt=0, lt=1, description="total fraction of zeros over the prunable layers "
                                                                 "(default 0.5); depth: fraction of the decoder's "
                                                                 "parameters dropped as whole blocks")
    blocks: int | None = Field(None, ge=1, le=100_000, description="depth: how many blocks to drop (or sparsity:)")
    pattern: Pattern | None = Field(None, description="nm: the N:M pattern whose uniform use the levels surround")
    prune_method: str = Field("wanda", description="method of the level database: wanda | sparsegpt; structured: "
                                                  "the criterion that ranks a block's units (wanda-sp, flap, ...)")
    prune_params: dict[str, Any] = Field(default_factory=dict, description="the database method's parameters")
    structure: Literal["heads", "channels", "heads+channels"] | None = Field(
        None, description="structured: the units whose number per block is searched")
    head_unit: Literal["group", "query"] = Field("group", description="structured heads: whole key/value groups, "
                                                                      "or the same number of query heads per group")
    levels: Levels = Field(default_factory=Levels)
    calibration: Calibration = Field(default_factory=Calibration)
    budget: Budget = Field(default_factory=Budget)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    seed: int = Field(0, ge=0, le=MAX_SEED, description="mutations, random candidates and stage windows")

    KEY_OMITS_AT_DEFAULT: ClassVar[frozenset[str]] = frozenset({"blocks", "pattern", "structure", "head_unit"})

    @field_validator("pattern", mode="before")
    @classmethod
    def _parse_pattern(cls, value: Any) -> Any:
        return Pattern.parse(value) if isinstance(value, str) else value

    @field_validator("space")
    @classmethod
    def _check_space(cls, value: str) -> str:
        if value not in SPACES:
            raise SpecError(f"search space {value!r} is not supported",
                            f"use space: {' | '.join(SPACES)}")
        return value

    @model_validator(mode="after")
    def _check(self) -> "SearchSpec":
        if self.evaluation.tasks:
            raise SpecError("a search does not score evaluation.tasks (it compares candidates by KL and reports "
                            "perplexity)", "drop evaluation.tasks here and name them in the prune spec that "
                                           "applies the search's allocation")
        if self.pattern is not None and self.space != "nm":
            raise SpecError(f"pattern applies to space: nm, not {self.space}", "drop pattern, or set space: nm")
        if self.space != "structured" and (self.structure is not None or self.head_unit != "group"):
            raise SpecError(f"structure and head_unit apply to space: structured, not {self.space}",
                            "drop them, or set space: structured")
        if self.space == "nm":
            self._check_nm()
        if self.space == "depth":
            self._check_depth()
        else:
            if self.blocks is not None:
                raise SpecError(f"blocks applies to space: depth, not {self.space}", "drop blocks, or set space: depth")
            if self.space == "structured":
                self._check_structured()
            elif self.prune_method not in LEVEL_METHODS:
                raise SpecError(f"prune_method {self.prune_method!r} builds no level database",
                                f"use prune_method: {' or '.join(LEVEL_METHODS)}")
            if self.sparsity is None:
                object.__setattr__(self, "sparsity", 0.2 if self.space == "structured" else 0.5)
            object.__setattr__(self, "prune_params", self.database_method().validate_params(self.prune_params))
        seq_len = self.calibration.seq_len
        ragged = [t for t in self.budget.tokens if t % seq_len]
        if ragged:
            raise ValueError(f"budget.tokens {ragged[0]} is not a whole number of calibration windows of {seq_len} "
                             f"tokens; use multiples of calibration.seq_len")
        return self

    def _check_depth(self) -> None:
        given = [name for name in LEVEL_FIELDS if name in self.model_fields_set]
        if given:
            raise SpecError(f"space depth has no level database, so {given[0]} does not apply",
                            f"drop {', '.join(given)}")
        if (self.blocks is None) == (self.sparsity is None):
            raise SpecError("space depth needs how many blocks to drop: blocks or sparsity, one of them"
                            + (" (both are given)" if self.blocks is not None else ""),
                            "give blocks: 6 (a count) or sparsity: 0.2 (the fraction of the decoder's parameters)")

    def _check_structured(self) -> None:
        from workbench.structured.criteria import CRITERIA, STRUCTURES, resolve_criterion

        if self.structure is None:
            raise SpecError("space structured needs the units whose number per block it searches",
                            "give structure: heads, channels or heads+channels")
        kinds = STRUCTURES[self.structure]
        able = [name for name in CRITERIA if set(kinds) <= resolve_criterion(name).structures]
        if self.prune_method not in able:
            raise SpecError(f"space structured ranks a block's {self.structure} by a structured criterion, and "
                            f"prune_method {self.prune_method!r} is none that scores them",
                            f"give prune_method: {' or '.join(able)}")

    def database_method(self) -> Any:
        """The level database's pruning method, or the structured criterion that ranks the units."""
        if self.space == "structured":
            from workbench.structured.criteria import resolve_criterion

            return resolve_criterion(self.prune_method)
        from workbench.pruning.registry import resolve_method

        return resolve_method(self.prune_method)

    def _check_nm(self) -> None:
        if self.pattern is None or not self.pattern.is_nm:
            raise SpecError("space nm needs the N:M pattern its levels surround", "give pattern: 2:4 or pattern: 4:8")
        implied = self.pattern.sparsity
        if self.sparsity is not None and abs(self.sparsity - implied) > 1e-9:
            raise SpecError(f"pattern {self.pattern} implies sparsity {implied:g} but sparsity is {self.sparsity:g}",
                            f"drop sparsity or set it to {implied:g}")
        if "step" in self.levels.model_fields_set:
            raise SpecError("N:M levels step by one kept weight of every M, so levels.step does not apply",
                            "drop levels.step (levels.max bounds the steps)")
        object.__setattr__(self, "sparsity", implied)

    def canonical(self) -> dict[str, Any]:
        data = super().canonical()
        if self.space == "depth":
            for name in LEVEL_FIELDS:
                data.pop(name, None)
        return data

    @property
    def uniform_start(self) -> bool:
        """Whether the search starts from the uniform allocation (level spaces), not from a start round."""
        return self.space != "depth"

    def evaluations(self) -> int:
        """Fitness evaluations of the whole search (``budget.evaluations`` with the space's start)."""
        return self.budget.evaluations(self.uniform_start)

    @property
    def fitness_windows(self) -> int:
        """Held-out calibration windows the fitness reads (all of them in the last stage)."""
        return self.budget.tokens[-1] // self.calibration.seq_len

    def identity_parts(self) -> dict[str, str]:
        from workbench.data import data_identity
        from workbench.models import model_identity

        parts = {
            "model": model_identity(self.model),
            "data": data_identity(self.data),
            "search": f"{self.method}@{SEARCH_VERSION}",
        }
        if self.space != "depth":
            parts["method"] = f"{self.prune_method}@{self.database_method().version}"
        return parts

    def summary(self) -> dict[str, Any]:
        if self.space == "depth":
            return {"model": self.model, "data": self.data, "method": None, "pattern": "structured:blocks",
                    "allocation": self.method, "target_sparsity": self.sparsity}
        pattern = {"nm": str(self.pattern), "structured": f"structured:{self.structure}"}.get(self.space, self.space)
        return {"model": self.model, "data": self.data, "method": self.prune_method, "pattern": pattern,
                "allocation": self.method, "target_sparsity": self.sparsity}


register_kind(SearchSpec)
