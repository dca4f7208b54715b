"""The runs table's query box: a tiny filter language applied in pandas, never turned into SQL.

    method=wanda|sparsegpt  achieved_sparsity>=0.5  perplexity<40  pattern~2:  hamlet

Terms are separated by spaces, commas or the word ``and``; every term must hold. A term is
``field op value`` with op one of ``= == != < <= > >= ~`` (``~``: contains), or a bare word that must
appear in one of the text columns. ``|`` separates alternatives (``=`` / ``~`` only); ``50%`` means 0.5.
Text compares case-insensitively; numbers numerically; times as timestamps; tags one by one
(``tags=baseline``: runs with that tag, ``tags!=baseline``: runs without it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from workbench.errors import WorkbenchError

OPERATORS = ("<=", ">=", "!=", "==", "=", "<", ">", "~")
ALIASES = {"target": "target_sparsity", "achieved": "achieved_sparsity", "ppl": "perplexity",
           "sparsity": "achieved_sparsity", "id": "run_id", "run": "run_id"}
TEXT_COLUMNS = ("run_id", "name", "kind", "model", "data", "method", "pattern", "allocation", "status", "error", "label",
                "tags", "note")

_TERM = re.compile(
    r"""\s*(?:(?P<field>[A-Za-z_][\w.]*)\s*(?P<op><=|>=|!=|==|=|<|>|~)\s*)?
        (?P<value>"[^"]*"|'[^']*'|[^\s,]+)\s*,?""", re.VERBOSE)


class FilterError(WorkbenchError):
    """A query-box term that cannot be applied."""


@dataclass(frozen=True)
class Term:
    field: str | None  # None: a bare word searched in the text columns
    op: str
    value: str


def parse(query: str) -> list[Term]:
    terms, position, query = [], 0, query.strip()
    while position < len(query):
        match = _TERM.match(query, position)
        if not match or match.end() == position:
            raise FilterError(f"cannot read the query at {query[position:position + 20]!r}",
                              "write terms like method=wanda perplexity<40, separated by spaces")
        position = match.end()
        value = match["value"]
        if value[:1] in "\"'" and value[-1:] == value[:1] and len(value) >= 2:
            value = value[1:-1]
        elif value.lower() == "and" and match["field"] is None:
            continue
        terms.append(Term(match["field"], match["op"] or "~", value))
    return terms


def _resolve(field: str, columns: list[str]) -> str:
    by_lower = {c.lower(): c for c in columns}
    name = field.lower()
    name = name if name in by_lower else ALIASES.get(name, name)
    if name not in by_lower:
        shown = ", ".join(sorted(c for c in columns if c != "label"))
        raise FilterError(f"unknown field {field!r}", f"use one of: {shown}")
    return by_lower[name]


def _number(text: str, field: str) -> float:
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise FilterError(f"{field} is numeric but {text!r} is not a number", f"write e.g. {field}>=0.5") from None


def _compare(series: pd.Series, op: str, value: object) -> pd.Series:
    if op in ("=", "=="):
        return series == value
    if op == "!=":
        return series != value
    return {"<": series < value, "<=": series <= value, ">": series > value, ">=": series >= value}[op]


def _tag_mask(tags: pd.Series, term: Term) -> pd.Series:
    """Runs with a tag that equals (``=``, ``!=``: none does) or contains (``~``) one of the term's values."""
    if term.op not in ("=", "==", "!=", "~"):
        raise FilterError(f"tags compare with = != ~ only, not {term.op}", "write tags=baseline or tags~base")
    wanted = [a.lower() for a in term.value.split("|")]
    hit = (lambda tag, value: value in tag) if term.op == "~" else (lambda tag, value: tag == value)
    mask = tags.map(lambda each: any(hit(str(t).lower(), v) for t in each for v in wanted)).astype(bool)
    return ~mask if term.op == "!=" else mask


def _term_mask(frame: pd.DataFrame, term: Term) -> pd.Series:
    if term.field is None:
        needle = term.value.lower()
        mask = pd.Series(False, index=frame.index)
        for column in (c for c in TEXT_COLUMNS if c in frame):
            mask |= frame[column].astype("string").str.lower().str.contains(needle, regex=False).fillna(False).astype(bool)
        return mask
    column = _resolve(term.field, list(frame.columns))
    series = frame[column]
    if column == "tags":
        return _tag_mask(series, term)
    alternatives = term.value.split("|")
    if len(alternatives) > 1 and term.op not in ("=", "==", "~"):
        raise FilterError(f"alternatives ({term.value!r}) work with = and ~ only", f"write {column}=a|b")
    if pd.api.types.is_bool_dtype(series):
        wanted = [a.lower() in ("1", "true", "yes") for a in alternatives]
        mask = series.isin(wanted)
        return ~mask if term.op == "!=" else mask
    if pd.api.types.is_numeric_dtype(series) and term.op != "~":
        mask = pd.Series(False, index=frame.index)
        for alternative in alternatives:
            mask |= _compare(series, term.op, _number(alternative, column)).fillna(False).astype(bool)
        return mask
    if pd.api.types.is_datetime64_any_dtype(series) and term.op != "~":
        try:
            stamp = pd.Timestamp(term.value)
        except ValueError:
            raise FilterError(f"{term.value!r} is not a time", f"write e.g. {column}>=2026-01-31") from None
        return _compare(series, term.op, stamp).fillna(False).astype(bool)
    text = series.astype("string").str.lower()
    if term.op == "!=":
        return ~(text == term.value.lower()).fillna(False).astype(bool)
    mask = pd.Series(False, index=frame.index)
    for alternative in alternatives:
        needle = alternative.lower()
        hit = text.str.contains(needle, regex=False) if term.op == "~" else _compare(text, term.op, needle)
        mask |= hit.fillna(False).astype(bool)
    return mask


def apply(frame: pd.DataFrame, query: str) -> pd.DataFrame:
    """The rows of ``frame`` that satisfy every term of ``query`` (FilterError on a term that cannot apply)."""
    keep = pd.Series(True, index=frame.index)
    for term in parse(query):
        keep &= _term_mask(frame, term)
    return frame[keep.to_numpy(dtype=bool)] if len(frame) else frame

