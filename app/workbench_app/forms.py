"""From the Launch page's form to a sweep the CLI runs: plain dicts, validated by ``workbench.spec``.

A single job is a sweep with only a base. A sweep crosses methods x (pattern, sparsity) x seeds; an
N:M pattern fixes its own sparsity, so it pairs with no sparsity value rather than with each of them.
The crossing is written out as the sweep's ``include`` list, so the file that runs shows every job.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from workbench.errors import SpecError
from workbench.spec import JobSpec, parse_spec, parse_sweep


def split_list(text: str) -> list[str]:
    return [part for part in re.split(r"[,\s]+", text.strip()) if part]


def numbers(text: str, what: str, integer: bool = False) -> list[float] | list[int]:
    values = []
    for part in split_list(text):
        try:
            values.append(int(part) if integer else float(part))
        except ValueError:
            raise SpecError(f"{what}: {part!r} is not a{'n integer' if integer else ' number'}",
                            f"list {what} separated by commas, e.g. {'0, 1' if integer else '0.5, 0.7'}") from None
    if not values:
        raise SpecError(f"no {what} given", f"list at least one of the {what}")
    return values


def is_nm(pattern: str) -> bool:
    return ":" in pattern


def build_sweep(common: dict[str, Any], methods: list[str], patterns: list[str], sparsities: list[float],
                seeds: list[int]) -> dict[str, Any]:
    """Every method x (pattern, sparsity) x calibration seed, as a sweep of explicit jobs over ``common``."""
    if not methods:
        raise SpecError("no method chosen", "pick at least one method")
    include = []
    for method in methods:
        for pattern in patterns or ["unstructured"]:
            for sparsity in ([None] if is_nm(pattern) else sparsities):
                for seed in seeds:
                    entry = {"method": method, "pattern": pattern, "calibration.seed": seed}
                    include.append(entry if sparsity is None else {**entry, "sparsity": sparsity})
    return {"base": common, "include": include}


def from_yaml(text: str) -> dict[str, Any]:
    """A pasted spec or sweep; a mapping with ``base``, ``grid`` or ``include`` is a sweep."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise SpecError(f"the YAML is not valid{where}", "fix the YAML syntax (indentation, colons)") from None
    if not isinstance(data, dict):
        raise SpecError("the YAML must be a mapping of `key: value` lines", "paste a spec or a sweep")
    return data if {"base", "grid", "include"} & set(data) else {"base": data}


def expand(sweep: dict[str, Any]) -> list[JobSpec]:
    """The validated jobs of a sweep: exactly what `workbench sweep` would run (SpecError otherwise)."""
    if set(sweep) == {"base"}:
        return [parse_spec(sweep["base"])]
    return parse_sweep(sweep)
