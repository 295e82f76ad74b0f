"""The popularity baseline: rank items by their training count at each level."""

from __future__ import annotations

import numpy as np


def popularity_counts(
    items: np.ndarray, levels: np.ndarray, n_items: int, n_levels: int
) -> np.ndarray:
    """counts[i, c−1] = training rows of item i with level ≥ c, shape (n_items, T)."""
    counts = np.zeros((n_items, n_levels), dtype=np.float64)
    for c in range(1, n_levels + 1):
        counts[:, c - 1] = np.bincount(items[levels >= c], minlength=n_items)
    return counts
