"""Seeded splits by example index.

Splitting by index, with a permutation that depends only on (number of examples, seed), is what keeps
line-parallel translations consistent: line i of every language lands in the same split.
"""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "dev", "test")


def permutation(n: int, seed: int) -> np.ndarray:
    return np.random.Generator(np.random.PCG64(seed)).permutation(n)


def split_indices(n: int, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Partition range(n) into named parts of the given fractions (summing to 1); each part sorted.

    Sizes are floor(n * f) for every part but the first, which takes the remainder, e.g.
    n=2000, {train: .7, dev: .1, test: .2} -> 1400 / 200 / 400.
    """
    order = permutation(n, seed)
    names = list(fractions)
    sizes = [int(n * fractions[name]) for name in names[1:]]
    sizes.insert(0, n - sum(sizes))
    parts, start = {}, 0
    for name, size in zip(names, sizes, strict=True):
        parts[name] = np.sort(order[start : start + size])
        start += size
    return parts


def subsample(indices: np.ndarray, k: int | None, seed: int) -> np.ndarray:
    """A seeded subset of k indices (all if k is None or larger), kept in index order."""
    if k is None or k >= len(indices):
        return indices
    chosen = permutation(len(indices), seed)[:k]
    return np.sort(indices[chosen])
