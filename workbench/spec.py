"""Job specs: what a job is, validated, canonical and hashable.

A spec is plain data (YAML, a dict, an app form). It validates into a pydantic model with every default
filled in; its canonical JSON (sorted keys, no label fields) plus the identities of the model, the data
and the method's version string is hashed into the job's key (see ``job_key``). Two specs that would
compute the same result have the same key; any field that changes the result changes it.

Job kinds register themselves in ``JOB_KINDS`` (``prune`` here; training and kernel benchmarks in their
own modules), so that adding a kind is one module and one line.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from workbench.errors import SpecError
from workbench.values import Pattern, StrictModel

__all__ = ["JobSpec", "Pattern", "PruneSpec", "StrictModel", "job_key", "parse_spec", "parse_sweep", "register_kind"]

# Seeds reach torch and numpy generators, which take at most 64 and 32 bits: the smaller bound for both.
MAX_SEED = 2**32 - 1
# Fields that name or describe a job without changing its result; they stay out of the key.
LABEL_FIELDS = frozenset({"name", "tags"})


def _omit_new_defaults(model: BaseModel, data: dict[str, Any]) -> dict[str, Any]:
    for name in getattr(model, "KEY_OMITS_AT_DEFAULT", ()):
        if getattr(model, name) == type(model).model_fields[name].default:
            data.pop(name, None)
    for name, value in model:
        if isinstance(value, BaseModel) and isinstance(data.get(name), dict):
            _omit_new_defaults(value, data[name])
    return data


class Calibration(StrictModel):
    samples: int = Field(64, ge=1, le=100_000, description="number of calibration windows")
    seq_len: int = Field(512, ge=8, le=131_072, description="tokens per calibration window")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed that draws the windows")
    precision: Literal["model", "bfloat16"] = Field(
        "model", description="dtype of the calibration forward passes: the model's own, or bfloat16 autocast "
                             "(AMX / tensor cores); statistics accumulate in float32 either way")

    KEY_OMITS_AT_DEFAULT: ClassVar[frozenset[str]] = frozenset({"precision"})


class Evaluation(StrictModel):
    windows: int = Field(64, ge=1, le=100_000, description="non-overlapping evaluation windows")
    seq_len: int = Field(512, ge=8, le=131_072, description="tokens per evaluation window")
    tasks: tuple[str, ...] = Field(
        (), description="lm-evaluation-harness tasks scored on the pruned model beside perplexity (causal LMs): "
                        "local tasks (`workbench tasks`) or any harness task whose data can be read; sorted")
    limit: int | None = Field(None, ge=1, le=10_000_000, description="documents per task (the first N); all by default")
    num_fewshot: int | None = Field(None, ge=0, le=64, description="fewshot examples per prompt; the task's own "
                                                                   "default (0 for the local tasks) when absent")

    KEY_OMITS_AT_DEFAULT: ClassVar[frozenset[str]] = frozenset({"tasks", "limit", "num_fewshot"})

    @field_validator("tasks", mode="before")
    @classmethod
    def _split_tasks(cls, value: Any) -> Any:
        return [part for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @field_validator("tasks")
    @classmethod
    def _check_tasks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = [name.strip() for name in value]
        bad = [name for name in names if not name or any(c.isspace() for c in name)]
        if bad:
            raise ValueError(f"task name {bad[0]!r} is empty or holds whitespace; give names such as shakespeare-nextline")
        return tuple(sorted(set(names)))  # the scores do not depend on the order: one key per set of tasks

    @model_validator(mode="after")
    def _tasks_named(self) -> "Evaluation":
        unused = [name for name in ("limit", "num_fewshot") if getattr(self, name) is not None]
        if unused and not self.tasks:
            raise ValueError(f"{unused[0]} applies to evaluation.tasks, which names none; name tasks or drop {unused[0]}")
        return self


class JobSpec(StrictModel):
    """Fields every job kind shares."""

    kind: str
    name: str | None = Field(None, description="a label; not part of the key")
    tags: tuple[str, ...] = Field((), description="labels; not part of the key")

    KIND: ClassVar[str] = ""  # its executor is ``workbench.jobs.EXECUTORS[KIND]``

    def canonical(self) -> dict[str, Any]:
        """The result-changing content of the spec, defaults filled in, as JSON-ready data."""
        data = _omit_new_defaults(self, self.model_dump(mode="json"))
        for label in LABEL_FIELDS:
            data.pop(label, None)
        return data

    def canonical_json(self) -> str:
        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))

    def identity_parts(self) -> dict[str, str]:
        """Identities of what the job reads (model weights, data, method version); overridden per kind."""
        return {}

    def with_run_keys(self, key_of: Callable[[str], str]) -> "JobSpec":
        """This spec with every earlier run it builds on named by its key (``key_of`` maps a run id, a unique
        prefix of one, or a key to the key), so that its own key is the same in every store; overridden by
        kinds that name runs."""
        return self

    def summary(self) -> dict[str, Any]:
        """Columns the store keeps beside the JSON so that tables filter without parsing it."""
        return {}


def resolve_prune_method(name: str, structure: str | None) -> Any:
    """A pruning method, or a structured criterion when the spec names a structure (both versioned)."""
    if structure is None:
        from workbench.pruning.registry import resolve_method

        return resolve_method(name)
    from workbench.structured.criteria import CRITERIA, resolve_criterion

    if name not in CRITERIA:
        raise SpecError(f"{name!r} is not a structured criterion", f"with `structure:` use one of: {', '.join(CRITERIA)}")
    return resolve_criterion(name)


def method_job_summary(spec: Any, allocation: str) -> dict[str, Any]:
    """The summary columns of a job that applies a method to a model at a sparsity (prune, train)."""
    return {
        "model": spec.model,
        "data": spec.data,
        "method": spec.method,
        "pattern": str(spec.pattern),
        "allocation": allocation,
        "target_sparsity": spec.sparsity,
    }


class PruneSpec(JobSpec):
    """One-shot pruning of a model, then its evaluation (perplexity or embedding fidelity)."""

    KIND: ClassVar[str] = "prune"
    kind: Literal["prune"] = "prune"
    model: str = Field("smollm2-135m", description="built-in name, hub id or local folder")
    data: str = Field("shakespeare", description="corpus for calibration and evaluation")
    method: str = Field("magnitude", description="pruning method (see `workbench methods`)")
    params: dict[str, Any] = Field(default_factory=dict, description="the method's parameters")
    sparsity: float | None = Field(None, description="target fraction of zeros (default 0.5; N:M implies it)")
    pattern: Pattern = Field(default_factory=lambda: Pattern(name="unstructured"))
    allocation: str = Field("uniform", description="how sparsity is spread over layers")
    allocation_params: dict[str, Any] = Field(default_factory=dict)
    calibration: Calibration = Field(default_factory=Calibration)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    prune_embeddings: bool = Field(False, description="also prune the token embeddings")
    prune_head: bool = Field(False, description="also prune the output head")
    structure: Literal["heads", "channels", "blocks", "heads+channels"] | None = Field(
        None, description="remove whole attention heads, MLP channels or blocks (the model shrinks); `method` is "
                          "then a structured criterion and `sparsity` the fraction of the decoder's parameters removed")
    head_unit: Literal["group", "query"] = Field(
        "group", description="structured heads: remove whole key/value groups, or the same number of query heads "
                             "from every group")

    channel_multiple: int = Field(
        1, ge=1, le=4096, description="structured channels: every block keeps a multiple of this many (64 or 128 keep "
                                      "GPU matrix products on their fast tiles)")

    KEY_OMITS_AT_DEFAULT: ClassVar[frozenset[str]] = frozenset({"structure", "head_unit", "channel_multiple"})

    @field_validator("pattern", mode="before")
    @classmethod
    def _parse_pattern(cls, value: Any) -> Any:
        return Pattern.parse(value) if isinstance(value, str) else value

    @field_validator("sparsity")
    @classmethod
    def _check_sparsity(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value < 1.0:
            raise ValueError(f"sparsity {value} is outside [0, 1): give the fraction of zeros, e.g. 0.5")
        return value

    @model_validator(mode="after")
    def _resolve_method(self) -> "PruneSpec":
        from workbench.pruning.allocation import resolve_allocation

        if self.structure is not None:
            return self._resolve_criterion()
        if self.head_unit != "group" or self.channel_multiple != 1:
            raise ValueError("head_unit and channel_multiple apply to structured pruning; set `structure:` or drop them")
        method = resolve_prune_method(self.method, None)
        params = method.validate_params(self.params)
        object.__setattr__(self, "params", params)
        allocation = resolve_allocation(self.allocation)
        object.__setattr__(self, "allocation_params", allocation.validate_params(self.allocation_params))
        if self.pattern.is_nm:
            implied = self.pattern.sparsity
            if self.sparsity is not None and abs(self.sparsity - implied) > 1e-9:
                raise ValueError(
                    f"pattern {self.pattern} implies sparsity {implied:g} but sparsity is {self.sparsity:g}; "
                    f"drop `sparsity` or set it to {implied:g}"
                )
            object.__setattr__(self, "sparsity", implied)
            if self.allocation not in ("uniform", "search"):
                raise ValueError(f"allocation {self.allocation!r} needs an unstructured pattern; "
                                 "N:M fixes every layer's sparsity (allocation: search applies an N:M search's)")
        elif self.sparsity is None:
            object.__setattr__(self, "sparsity", 0.5)
        if method.name == "dense":
            object.__setattr__(self, "sparsity", 0.0)
            object.__setattr__(self, "pattern", Pattern(name="unstructured"))
        return self

    def _resolve_criterion(self) -> "PruneSpec":
        """Structured pruning: the method is a criterion; whole structures go, so no N:M and no allocation
        (each criterion spreads the removals over layers its own way)."""
        from workbench.structured.criteria import STRUCTURES

        criterion = resolve_prune_method(self.method, self.structure)
        missing = sorted(set(STRUCTURES[self.structure]) - criterion.structures)
        if missing:
            raise ValueError(f"criterion {self.method!r} does not score {missing[0]}; it scores "
                             f"{', '.join(sorted(criterion.structures))}")
        object.__setattr__(self, "params", criterion.validate_params(self.params))
        if self.pattern.is_nm:
            raise ValueError(f"structure {self.structure!r} removes whole structures; drop `pattern: {self.pattern}`")
        if self.allocation == "search":  # a depth search's blocks, or a structured search's widths per block
            from workbench.pruning.allocation import resolve_allocation

            object.__setattr__(self, "allocation_params",
                               resolve_allocation("search").validate_params(self.allocation_params))
        elif self.allocation != "uniform" or self.allocation_params:
            raise ValueError(f"structured criterion {self.method!r} spreads the removals itself; drop `allocation` "
                             "(or name a depth or structured search with allocation: search)")
        if self.prune_embeddings or self.prune_head:
            raise ValueError("structured pruning never touches the embeddings or the head; drop prune_embeddings/prune_head")
        if self.sparsity is None:
            object.__setattr__(self, "sparsity", 0.2)
        if not 0 < self.sparsity < 1:
            raise ValueError(f"structured sparsity {self.sparsity} must be in (0, 1): the fraction of the decoder's "
                             "parameters to remove, e.g. 0.2")
        return self

    def identity_parts(self) -> dict[str, str]:
        from workbench.data import data_identity
        from workbench.models import model_identity
        from workbench.pruning.allocation import resolve_allocation

        parts = {
            "model": model_identity(self.model),
            "data": data_identity(self.data),
            "method": f"{self.method}@{resolve_prune_method(self.method, self.structure).version}",
            "allocation": f"{self.allocation}@{resolve_allocation(self.allocation).version}",
        }
        if self.evaluation.tasks:  # only then: keys of runs without tasks hold
            from workbench.evaluation import evaluation_identity

            parts["tasks"] = evaluation_identity(self.evaluation.tasks)
        return parts

    def summary(self) -> dict[str, Any]:
        summary = method_job_summary(self, self.allocation)
        if self.structure is not None:
            summary["pattern"] = f"structured:{self.structure}"
        return summary


JOB_KINDS: dict[str, type[JobSpec]] = {"prune": PruneSpec}


def register_kind(spec_class: type[JobSpec]) -> type[JobSpec]:
    JOB_KINDS[spec_class.KIND] = spec_class
    return spec_class


def _load_kinds() -> None:
    """Import the modules that register further job kinds (kept lazy: they pull heavy imports)."""
    import importlib

    for module in ("workbench.training.spec", "workbench.kernels.spec", "workbench.search.spec"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "spec"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    return f"{where}: {message}"


def parse_spec(data: Any) -> JobSpec:
    """Validate a dict (from YAML, JSON, a form) into the spec of its kind; SpecError on any problem."""
    if isinstance(data, JobSpec):
        return data
    if not isinstance(data, dict):
        raise SpecError(f"a spec must be a mapping, got {type(data).__name__}", "write the spec as `key: value` lines")
    kind = data.get("kind", "prune")
    _load_kinds()
    if not isinstance(kind, str):
        raise SpecError(f"kind must be a name, got a {type(kind).__name__}", f"use one of: {', '.join(sorted(JOB_KINDS))}")
    if kind not in JOB_KINDS:
        raise SpecError(f"unknown job kind {kind!r}", f"use one of: {', '.join(sorted(JOB_KINDS))}")
    try:
        return JOB_KINDS[kind].model_validate({**data, "kind": kind})
    except ValidationError as err:
        allowed = ", ".join(sorted(JOB_KINDS[kind].model_fields))
        message = _format_validation_error(err)
        fix = (f"allowed keys are: {allowed}" if message.startswith("unknown key")
               else "correct that field (see README, Job specs)")
        raise SpecError(f"invalid {kind} spec: {message}", fix) from None


def job_key(spec: JobSpec) -> str:
    """sha256 over the canonical spec and the identities of what it reads (README, Job specs)."""
    payload = {"spec": spec.canonical(), "identity": spec.identity_parts()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: the usual loaders keep
    the last value silently, so `sparsity: 0.5` then `sparsity: 0.7` would run at 0.7 without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise SpecError(f"key {key!r} is given twice (line {key_node.start_mark.line + 1})",
                                "keep one of them")
            seen.add(key if isinstance(key, (str, int, float, bool)) else id(key_node))
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, what: str = "spec") -> Any:
    """YAML text as data, refusing duplicate keys; SpecError naming the line on bad syntax."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: builds plain data only
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise SpecError(f"{what} is not valid YAML{where}", "fix the YAML syntax (indentation, colons)") from None


def _read_yaml(path: Path) -> Any:
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"spec file {path} is a directory", "give the path of a YAML spec file inside it")
    if not path.is_file():
        raise SpecError(f"spec file {path} does not exist", "give the path of a YAML spec file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(f"spec file {path} is not UTF-8 text (byte {err.start} cannot be decoded)",
                        "save the spec as UTF-8") from None
    except OSError as err:
        raise SpecError(f"spec file {path} cannot be read ({err.strerror})", "check its permissions") from None
    return parse_yaml(text, f"spec file {path}")


def load_spec(path: Path) -> JobSpec:
    return parse_spec(_read_yaml(path))


class SweepSpec(StrictModel):
    """A base spec and a grid: every combination of the grid's values, applied over the base.

    ```yaml
    base: {model: smollm2-135m, data: shakespeare}
    grid: {method: [magnitude, wanda], sparsity: [0.5, 0.7]}
    include: [{method: dense}]          # extra specs, merged over base
    ```
    Grid keys may be dotted (``calibration.samples``) to reach nested fields.
    """

    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    include: list[dict[str, Any]] = Field(default_factory=list)

    def expand(self) -> list[JobSpec]:
        empty = [key for key, values in self.grid.items() if not values]
        if empty:
            raise SpecError(f"sweep grid value {empty[0]!r} is an empty list, so the grid has no job",
                            "give it at least one value, or drop it from the grid")
        combos: list[dict[str, Any]] = []
        if self.grid:
            keys = list(self.grid)
            for values in itertools.product(*(self.grid[k] for k in keys)):
                combos.append(dict(zip(keys, values)))
        elif not self.include:
            combos.append({})
        specs, seen = [], set()
        for overrides in [*combos, *self.include]:
            data = json.loads(json.dumps(self.base))
            for dotted, value in overrides.items():
                _set_dotted(data, dotted, value)
            spec = parse_spec(data)
            if spec.canonical_json() not in seen:
                seen.add(spec.canonical_json())
                specs.append(spec)
        return specs


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for depth, part in enumerate(parents):
        data = data.setdefault(part, {})
        if not isinstance(data, dict):
            where = ".".join(parents[: depth + 1])
            raise SpecError(f"sweep key {dotted!r} reaches into {where!r}, which is a {type(data).__name__}, not a mapping",
                            f"set {where!r} as a whole, or make it a mapping in the base")
    data[leaf] = value


def parse_sweep(data: Any) -> list[JobSpec]:
    if not isinstance(data, dict):
        raise SpecError("a sweep must be a mapping with `base`, `grid` and/or `include`", "see README, Sweeps")
    try:
        sweep = SweepSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(f"invalid sweep: {_format_validation_error(err)}", "a sweep has keys base, grid, include") from None
    return sweep.expand()


def load_sweep(path: Path) -> list[JobSpec]:
    return parse_sweep(_read_yaml(path))
