"""The result vocabulary every reader shares (CLI, notebook API, Jupyter widgets, Streamlit app).

One place answers: which way a metric is better, which metrics are a run's quality and its headline
columns, what a run is called on screen, which runs form the Pareto front, and how much two masks
overlap (SAD, IoU) when they are kept bit-packed as the store keeps them. It imports neither torch,
nor the store, nor streamlit, so any layer can import it.

- Directions: ``LOWER_IS_BETTER`` (metric -> True when a smaller value is better), and for downstream
  task scores (``<task>/<metric>``) ``TASK_LOWER_IS_BETTER`` by the harness's metric name. A metric
  missing from both has no direction: ``lower_is_better`` raises ``UnknownMetricError`` rather than
  guess; so does a standard error (``<task>/acc_stderr``), the spread of another metric, not a quality.
- Names: ``QUALITY_METRICS`` (what a job reports about the pruned or trained model's quality) and
  ``HEADLINE_METRICS`` (the metrics readers show as columns beside each run). Every name is one a job
  emits (``workbench/jobs``, ``workbench/training``). ``quality_metrics`` adds the task scores among
  given names (what a reader offers as "quality"); ``task_scores`` lays out a run's scores per task.
- Labels: ``job_label`` (what a spec asks for: ``magnitude 50% 2:4 owl``), ``run_label`` /
  ``run_labels`` (that, the model and the first 8 characters of the run id).
- Fronts: ``pareto_front`` over a runs table; sparsities within ``SPARSITY_TOLERANCE`` of each other
  count as equal (a 2:4 mask measures 0.50000003, not 0.5).
- Overlap: ``PackedMask`` (numpy packbits of the flattened mask, zero padding: the store's encoding
  before compression), ``overlap`` of two runs' masks and ``Overlap`` (SAD, IoU, SAD fraction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from workbench.errors import SpecError

# ---------------------------------------------------------------- which way is better

LOWER_IS_BETTER: Mapping[str, bool] = MappingProxyType({
    # quality of the pruned or trained model
    "perplexity": True, "embedding_cosine": False, "neighbour_agreement": False, "accuracy": False,
    # training curves (the loss and its parts, logged per step)
    "loss": True, "loss_task": True, "test_loss": True,
    # sparsity: more zeros is the point of the exercise
    "sparsity": False, "achieved_sparsity": False, "target_sparsity": False, "mask_sparsity": False,
    # speed
    "speedup": False, "best_speedup": False, "median_us": True, "tokens_per_s": False,
    # size: a structured run's model after its heads, channels or blocks went
    "parameters": True,
    # per-layer fidelity
    "recon_error": True,
    # cost
    "prune_seconds": True, "eval_seconds": True, "train_seconds": True, "bench_seconds": True,
    "peak_memory_mb": True, "peak_gpu_memory_mb": True,
})


VS_DENSE = "_vs_dense"  # suffix of a metric divided by the dense run's value of the same model and data


class UnknownMetricError(SpecError):
    """A metric whose better direction nobody wrote down."""


# ---------------------------------------------------------------- downstream task scores
# A prune spec's ``evaluation.tasks`` stores each task's scores under lm-evaluation-harness's metric names:
# ``<task>/<metric>`` (``<task>/<metric>/<filter>`` under a filter other than ``none``), each with its
# standard error ``<task>/<metric>_stderr``, and ``<task>/documents`` (how many documents were scored).

TASK_SEPARATOR = "/"
STDERR_SUFFIX = "_stderr"
TASK_DOCUMENTS = "documents"

# The harness's metric names of a task's score, and which way is better (its own ``higher_is_better``).
TASK_LOWER_IS_BETTER: Mapping[str, bool] = MappingProxyType({
    "acc": False, "acc_norm": False, "acc_mutual_info": False, "exact_match": False, "f1": False, "mcc": False,
    "bleu": False, "chrf": False, "ter": True, "brier_score": True,
    "perplexity": True, "word_perplexity": True, "byte_perplexity": True, "bits_per_byte": True,
})


@dataclass(frozen=True)
class TaskMetric:
    """One stored task metric name taken apart: ``<task>/<metric>[_stderr][/<filter>]``."""

    task: str
    metric: str  # the harness's name, ``_stderr`` removed: acc, acc_norm, exact_match
    filter: str | None = None
    stderr: bool = False

    @classmethod
    def parse(cls, name: str) -> "TaskMetric | None":
        """The parts of a task metric's name, or None for a name that is no task's."""
        parts = str(name).split(TASK_SEPARATOR)
        if len(parts) not in (2, 3) or not all(parts):
            return None
        metric, stderr = parts[1], parts[1].endswith(STDERR_SUFFIX)
        if stderr:
            metric = metric[: -len(STDERR_SUFFIX)]
        return cls(parts[0], metric, parts[2] if len(parts) == 3 else None, stderr)

    @property
    def score(self) -> str:
        """The score's own name (``<task>/<metric>[/<filter>]``), as a quality column is called."""
        return TASK_SEPARATOR.join(p for p in (self.task, self.metric, self.filter) if p)

    @property
    def spread(self) -> str:
        """The name of the score's standard error (``<task>/<metric>_stderr[/<filter>]``)."""
        return TASK_SEPARATOR.join(p for p in (self.task, self.metric + STDERR_SUFFIX, self.filter) if p)

    @property
    def is_score(self) -> bool:
        """A score with a known direction (not its standard error, not the document count)."""
        return not self.stderr and self.metric in TASK_LOWER_IS_BETTER


def lower_is_better(metric: str) -> bool:
    """True when a smaller value of ``metric`` is better; an unknown metric is an error, never a guess.

    Every ``loss_<part>`` (a training loss term) is lower-is-better; ``<metric>_vs_dense`` (a metric
    divided by its dense baseline, ``relative_to_dense``) points the way ``<metric>`` does; a task score
    ``<task>/<metric>`` points the way ``TASK_LOWER_IS_BETTER`` says (accuracies: higher). A standard
    error (``<task>/acc_stderr``) has no direction: it is the spread of another metric."""
    if metric.endswith(VS_DENSE):
        metric = metric[: -len(VS_DENSE)]
    if metric in LOWER_IS_BETTER:
        return LOWER_IS_BETTER[metric]
    if metric.startswith("loss_"):
        return True
    task = TaskMetric.parse(metric)
    if task is not None and task.stderr:
        raise UnknownMetricError(f"{metric!r} is the standard error of {task.score!r}, a spread, not a quality "
                                 "with a better direction", f"compare runs on {task.score!r} itself")
    if task is not None and task.is_score:
        return TASK_LOWER_IS_BETTER[task.metric]
    raise UnknownMetricError(f"no direction is known for metric {metric!r}",
                             "pass lower_is_better=True or False, or add the metric to "
                             "workbench.results.LOWER_IS_BETTER (a task's metric to TASK_LOWER_IS_BETTER)")


_metric_lower_is_better = lower_is_better  # reachable where a parameter of that name shadows it


def better(metric: str) -> str:
    """``"lower"`` or ``"higher"``: the words an axis title uses."""
    return "lower" if lower_is_better(metric) else "higher"


# ---------------------------------------------------------------- which metrics readers show

# What a job reports about quality: perplexity (causal LMs, prune and train jobs), embedding fidelity
# (encoders), accuracy (classifiers in training jobs).
QUALITY_METRICS: tuple[str, ...] = ("perplexity", "embedding_cosine", "neighbour_agreement", "accuracy")

# Final metrics shown as columns beside each run (the rest stay in the long metrics table).
HEADLINE_METRICS: tuple[str, ...] = ("sparsity", *QUALITY_METRICS, "prune_seconds", "peak_memory_mb", "nm_valid",
                                     "speedup", "parameters")


def is_task_score(name: str) -> bool:
    """True for a downstream task's score with a known direction (``<task>/acc``, ``<task>/acc_norm``...),
    False for its standard error, its document count and every other name."""
    task = TaskMetric.parse(name)
    return task is not None and task.is_score


def quality_metrics(names: Iterable[str]) -> list[str]:
    """The quality metrics among ``names``: those of ``QUALITY_METRICS`` in its order, then the task scores
    (``is_task_score``) sorted by name. What a reader offers where a user picks the quality to compare."""
    present = set(names)
    return [m for m in QUALITY_METRICS if m in present] + sorted(n for n in present if is_task_score(n))


def quality_metric(names: Iterable[str]) -> str | None:
    """The first of ``quality_metrics(names)`` (perplexity before any task score), or None."""
    return next(iter(quality_metrics(names)), None)


def task_scores(metrics: Mapping[str, float]) -> pd.DataFrame:
    """A run's downstream task scores from its final metrics ({name: value}): one row per task and score,
    ``task``, ``metric`` (``acc``, ``acc_norm``, ``exact_match/strict-match`` under a filter), ``value``,
    ``stderr`` (NaN where the harness gave none) and ``documents``; sorted by task, then metric."""
    rows = []
    for name, value in metrics.items():
        task = TaskMetric.parse(name)
        if task is not None and task.is_score:
            metric = TASK_SEPARATOR.join(p for p in (task.metric, task.filter) if p)
            rows.append({"task": task.task, "metric": metric, "value": float(value),
                         "stderr": float(metrics.get(task.spread, np.nan)),
                         "documents": metrics.get(f"{task.task}{TASK_SEPARATOR}{TASK_DOCUMENTS}", np.nan)})
    frame = pd.DataFrame(rows, columns=["task", "metric", "value", "stderr", "documents"])
    frame["documents"] = pd.to_numeric(frame["documents"], errors="coerce").astype("Int64")
    return frame.sort_values(["task", "metric"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------- run labels

def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return value is pd.NA or value is pd.NaT or (isinstance(value, str) and not value)


def job_label(method: Any = None, kind: Any = None, target_sparsity: Any = None, pattern: Any = None,
              allocation: Any = None, name: Any = None) -> str:
    """What a job asks for, short: its name (else method, else kind), then the target sparsity (not
    for dense), an N:M pattern and a non-uniform allocation: ``magnitude 50% 2:4 owl``."""
    parts = [str(next((v for v in (name, method, kind) if not _missing(v)), "run"))]
    if not _missing(target_sparsity) and method != "dense":
        parts.append(f"{float(target_sparsity):.0%}")
    if not _missing(pattern) and pattern != "unstructured":
        parts.append(str(pattern))
    if not _missing(allocation) and allocation != "uniform":
        parts.append(str(allocation))
    return " ".join(parts)


def describe(spec: Any) -> str:
    """``job_label`` of a job spec (anything with ``kind``, ``name`` and ``summary()``)."""
    summary = spec.summary()
    return job_label(summary.get("method"), spec.kind, summary.get("target_sparsity"), summary.get("pattern"),
                     summary.get("allocation"), spec.name)


def run_label(row: Any) -> str:
    """One run's label: ``job_label`` · model · the first 8 characters of the run id. ``row`` is a
    mapping or a row object (``itertuples``) with the store's run columns; missing ones count as unset."""
    get = row.get if isinstance(row, Mapping) else (lambda field: getattr(row, field, None))
    what = job_label(get("method"), get("kind"), get("target_sparsity"), get("pattern"), get("allocation"),
                     get("name"))
    return " · ".join(p for p in (what, "" if _missing(get("model")) else str(get("model")),
                                  str(get("run_id") or "")[:8]) if p)


def run_labels(frame: pd.DataFrame) -> pd.Series:
    """``run_label`` of every row of a runs table, on the frame's index."""
    columns = ["method", "kind", "target_sparsity", "pattern", "allocation", "name", "model", "run_id"]
    values = {c: frame[c].tolist() if c in frame else [None] * len(frame) for c in columns}
    labels = [run_label(dict(zip(columns, row))) for row in zip(*values.values())]
    return pd.Series(labels, index=frame.index, dtype=object)



def age_text(seconds: float) -> str:
    """A duration as a running row's age or lease shows it: 45s, 12m, 3h05m or 2d04h."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def lease_text(age_s: Any, expired: Any) -> str:
    """A running row's lease: how long ago its worker renewed it, ``expired``, or ``none`` (no claim: a killed
    job's leftover)."""
    if _missing(age_s):
        return "none"
    return "expired" if expired else f"{age_text(age_s)} ago"


# ---------------------------------------------------------------- Pareto fronts

# Achieved sparsities closer than this are the same sparsity: a 2:4 mask measured over a model is
# 0.50000003, an unstructured 50% one 0.5, and the better of the two at "50%" should win.
SPARSITY_TOLERANCE = 1e-3


def front_positions(x: Any, y: Any, *, higher_x: bool = True, higher_y: bool = True,
                    tolerance: float = SPARSITY_TOLERANCE) -> np.ndarray:
    """Positions of the non-dominated points, ordered by ascending ``x`` (NaN points never qualify).

    Point j dominates point i when j is at least as good in x (allowing ``tolerance``: x_j may fall
    short of x_i by up to it) and strictly better in y, or clearly better in x (by more than
    ``tolerance``) and at least as good in y. Identical points do not dominate each other.
    O(n log n): one sort by x and a running best of y from the best x down."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    valid = np.flatnonzero(~(np.isnan(x) | np.isnan(y)))
    if valid.size == 0:
        return valid
    gx = x[valid] if higher_x else -x[valid]  # larger is better on both, from here on
    gy = y[valid] if higher_y else -y[valid]
    order = np.argsort(gx, kind="stable")
    sx, sy = gx[order], gy[order]
    best_from = np.maximum.accumulate(sy[::-1])[::-1]  # best y among the points at or beyond each position
    best_from = np.append(best_from, -np.inf)
    within = best_from[np.searchsorted(sx, gx - tolerance, side="left")]  # x_j >= x_i - tolerance
    beyond = best_from[np.searchsorted(sx, gx + tolerance, side="right")]  # x_j > x_i + tolerance
    keep = valid[~((within > gy) | (beyond >= gy))]
    return keep[np.argsort(x[keep], kind="stable")]


def pareto_front(frame: pd.DataFrame, x: str = "sparsity", y: str = "perplexity",
                 lower_is_better: bool | None = None, *, higher_x: bool = True,
                 tolerance: float = SPARSITY_TOLERANCE) -> pd.DataFrame:
    """The rows of ``frame`` no other row beats on both axes: higher ``x`` (sparsity, or speedup) and
    better ``y`` (quality), ordered by ascending ``x``; rows missing either value never qualify.

    ``lower_is_better`` (for ``y``) defaults from ``LOWER_IS_BETTER`` (perplexity lower, accuracy
    higher...). Values of ``x`` within ``tolerance`` of each other count as equal."""
    lower = _metric_lower_is_better(y) if lower_is_better is None else lower_is_better
    if frame.empty or x not in frame or y not in frame:
        return frame.iloc[0:0]
    positions = front_positions(frame[x].to_numpy(dtype=float, na_value=np.nan),
                                frame[y].to_numpy(dtype=float, na_value=np.nan),
                                higher_x=higher_x, higher_y=not lower, tolerance=tolerance)
    return frame.iloc[positions]


# ---------------------------------------------------------------- dense baselines and seeds

# What a dense run of a model looks like in a runs table: its method is ``dense``.
DENSE_METHOD = "dense"
# Spec fields that only reseed a run (calibration windows drawn, initialisation): runs that differ in them
# alone are repeats of one setting, averaged by ``seed_summary``.
SEED_FIELDS: tuple[str, ...] = ("calibration.seed", "seed")


def relative_name(metric: str) -> str:
    """The column name of ``metric`` divided by its dense baseline (``perplexity_vs_dense``)."""
    return f"{metric}{VS_DENSE}"


def dense_baselines(frame: pd.DataFrame, metric: str, by: Iterable[str] = ("model", "data")) -> dict[tuple, float]:
    """The mean ``metric`` of the dense runs of each ``by`` group ({(model, data): value}); groups
    without a dense run are absent."""
    by = [c for c in by if c in frame]
    if frame.empty or metric not in frame or "method" not in frame:
        return {}
    dense = frame[(frame["method"] == DENSE_METHOD) & frame[metric].notna()]
    if dense.empty:
        return {}
    keys = [dense[c].astype(str) for c in by] if by else [pd.Series("", index=dense.index)]
    means = dense.groupby(keys, sort=True)[metric].mean()
    return {(k if isinstance(k, tuple) else (k,)): float(v) for k, v in means.items()}


def relative_to_dense(frame: pd.DataFrame, metric: str, by: Iterable[str] = ("model", "data")) -> pd.Series:
    """``metric`` divided by the dense baseline of each row's ``by`` group (NaN where none ran dense)."""
    by = [c for c in by if c in frame]
    baselines = dense_baselines(frame, metric, by)
    keys = (list(zip(*[frame[c].astype(str) for c in by])) if by else [("",)] * len(frame))
    base = np.array([baselines.get(tuple(k), np.nan) for k in keys], dtype=float)
    return pd.Series(frame[metric].to_numpy(dtype=float, na_value=np.nan) / base, index=frame.index)


def setting_keys(frame: pd.DataFrame, settings: Iterable[str]) -> pd.Series:
    """One integer per row naming its combination of ``settings`` (missing values count as one value):
    grouping on one integer column is many times faster than on a dozen text columns."""
    settings = [c for c in settings if c in frame]
    if not settings or frame.empty:
        return pd.Series(0, index=frame.index, dtype="int64")
    codes = np.stack([pd.factorize(frame[c], use_na_sentinel=False)[0] for c in settings], axis=1)
    _, inverse = np.unique(codes, axis=0, return_inverse=True)
    return pd.Series(inverse.reshape(-1), index=frame.index, dtype="int64")


def seed_summary(frame: pd.DataFrame, settings: Iterable[str], values: Iterable[str]) -> pd.DataFrame:
    """One row per setting (the distinct combinations of ``settings``; missing values count as one
    value): each of ``values`` as its mean over the setting's runs, ``<value>_std`` its sample standard
    deviation (NaN for one run), ``seeds`` the number of runs and ``run_ids`` their ids; every other
    column keeps the first run's value. Rows keep the order of their first run."""
    settings = [c for c in dict.fromkeys(settings) if c in frame]
    values = [c for c in dict.fromkeys(values) if c in frame]
    if frame.empty:
        return frame.assign(**{f"{v}_std": pd.Series(dtype=float) for v in values}, seeds=pd.Series(dtype=int),
                            run_ids=pd.Series(dtype=object))
    groups = frame.groupby(setting_keys(frame, settings), sort=False)
    summary = groups.head(1).copy()
    order = groups.ngroup()
    first_of = order.loc[summary.index].to_numpy()
    numbers = frame[values].apply(pd.to_numeric, errors="coerce")
    means = numbers.groupby(order).mean()
    stds = numbers.groupby(order).std(ddof=1)
    for value in values:
        summary[value] = means[value].to_numpy()[first_of]
        summary[f"{value}_std"] = stds[value].to_numpy()[first_of]
    summary["seeds"] = order.value_counts().reindex(first_of).to_numpy()
    ids = frame["run_id"].tolist() if "run_id" in frame else [str(i) for i in frame.index]
    members: dict[int, list] = {}
    for group, run_id in zip(order.tolist(), ids):
        members.setdefault(group, []).append(run_id)
    summary["run_ids"] = [members[g] for g in first_of]
    return summary.reset_index(drop=True)


# ---------------------------------------------------------------- SAD and IoU of packed masks

# set bits of every byte value: popcount by table lookup works on any numpy version
_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def popcount(bits: np.ndarray) -> int:
    """Set bits in a uint8 array."""
    return int(_POPCOUNT[np.asarray(bits, dtype=np.uint8)].sum(dtype=np.int64))


@dataclass(frozen=True)
class Overlap:
    """How two masks (or two models' worth of masks) agree, from three counts.

    SAD (sparse architecture divergence, Zhou et al. 2021) = positions whose kept/pruned state differs
    = ``either - both``; IoU = ``both / either`` over the kept positions (1 when neither keeps any)."""

    both: int  # kept in both
    either: int  # kept in at least one
    numel: int  # positions compared

    @property
    def sad(self) -> int:
        return self.either - self.both

    @property
    def iou(self) -> float:
        return self.both / self.either if self.either else 1.0

    @property
    def sad_fraction(self) -> float:
        return self.sad / self.numel if self.numel else 0.0

    def __add__(self, other: "Overlap") -> "Overlap":
        return Overlap(self.both + other.both, self.either + other.either, self.numel + other.numel)

    @classmethod
    def of_counts(cls, kept_a: int, kept_b: int, sad: int, numel: int) -> "Overlap":
        """From the kept counts of each mask and their SAD (what the store's tables keep): with
        SAD = |A xor B|, both = (k_a + k_b - SAD) / 2 and either = both + SAD, exactly."""
        both = (int(kept_a) + int(kept_b) - int(sad)) // 2
        return cls(both, both + int(sad), int(numel))

    def as_dict(self) -> dict[str, float]:
        return {"sad": self.sad, "numel": self.numel, "sad_fraction": self.sad_fraction, "iou": self.iou}


@dataclass(frozen=True)
class PackedMask:
    """A mask at 1 bit per weight: numpy packbits of the flattened bool mask (True = kept), zero padding
    in the last byte, as the store encodes it before compressing."""

    bits: np.ndarray
    shape: tuple[int, ...]

    @classmethod
    def of(cls, mask: Any) -> "PackedMask":
        mask = np.asarray(mask, dtype=bool)
        return cls(np.packbits(mask.ravel()), mask.shape)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))

    @property
    def kept(self) -> int:
        return popcount(self.bits)


def mask_overlap(a: PackedMask, b: PackedMask) -> Overlap:
    """The overlap of two packed masks of the same shape (padding bits are zero, so they count nowhere)."""
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    return Overlap(popcount(a.bits & b.bits), popcount(a.bits | b.bits), a.numel)


def overlap(masks_a: Mapping[str, PackedMask], masks_b: Mapping[str, PackedMask]) -> Overlap:
    """The overlap of two runs' masks ({layer: mask}) summed over the layers both hold with the same
    shape (layers of another shape are not the same weights). A whole model stays at 1 bit per weight."""
    total = Overlap(0, 0, 0)
    for layer in sorted(masks_a.keys() & masks_b.keys()):
        if masks_a[layer].shape == masks_b[layer].shape:
            total = total + mask_overlap(masks_a[layer], masks_b[layer])
    return total


def pairwise_overlap(masks: Mapping[str, Mapping[str, PackedMask]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs x runs IoU and SAD fraction of the given runs' masks ({run: {layer: mask}}); NaN where two
    runs share no layer."""
    runs = list(masks)
    iou = pd.DataFrame(np.nan, index=runs, columns=runs)
    sad = pd.DataFrame(np.nan, index=runs, columns=runs)
    for run in runs:
        if masks[run]:
            iou.loc[run, run], sad.loc[run, run] = 1.0, 0.0
    for a, b in combinations(runs, 2):
        both = overlap(masks[a], masks[b])
        if both.numel:
            iou.loc[a, b] = iou.loc[b, a] = both.iou
            sad.loc[a, b] = sad.loc[b, a] = both.sad_fraction
    return iou, sad


__all__ = ["LOWER_IS_BETTER", "UnknownMetricError", "lower_is_better", "better", "QUALITY_METRICS",
           "HEADLINE_METRICS", "VS_DENSE", "DENSE_METHOD", "SEED_FIELDS", "relative_name", "dense_baselines",
           "relative_to_dense", "setting_keys", "seed_summary", "quality_metric", "quality_metrics",
           "TASK_LOWER_IS_BETTER", "TaskMetric", "is_task_score", "task_scores", "job_label", "describe", "run_label",
           "run_labels", "age_text", "lease_text",
           "SPARSITY_TOLERANCE", "front_positions", "pareto_front", "popcount", "Overlap", "PackedMask",
           "mask_overlap", "overlap", "pairwise_overlap"]
