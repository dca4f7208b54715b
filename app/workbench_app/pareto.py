"""The Pareto front of a two-objective comparison (e.g. sparsity up, perplexity down).

A point is on the front when no other point is at least as good in both objectives and strictly better
in one. Sorting by the first objective (best first, ties broken by the second) and keeping each point
that beats every point kept before it in the second objective finds the front in O(n log n).
"""

from __future__ import annotations

import numpy as np


def pareto_front(x: np.ndarray, y: np.ndarray, maximize_x: bool = True, maximize_y: bool = True) -> np.ndarray:
    """Positions of the non-dominated points, ordered by ascending ``x``; NaN points never qualify."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    valid = np.flatnonzero(~(np.isnan(x) | np.isnan(y)))
    if valid.size == 0:
        return valid
    gx = x[valid] if maximize_x else -x[valid]
    gy = y[valid] if maximize_y else -y[valid]
    order = np.lexsort((-gy, -gx))  # best x first; among equal x, best y first
    front, best_y = [], -np.inf
    for position in order:
        if gy[position] > best_y:
            front.append(valid[position])
            best_y = gy[position]
    front = np.asarray(front, dtype=int)
    return front[np.argsort(x[front], kind="stable")]
