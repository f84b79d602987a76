"""Domain divergence between two datasets, and the rank correlation used to relate it to transfer gains.

- vocabulary overlap: Jaccard similarity of the k most frequent word types of each set (1 = same words);
- Jensen-Shannon divergence of the unigram distributions, base 2, in [0, 1] (0 = same distribution);
- embedding distances with the base model: 1 - cosine of the mean sentence embeddings, and the squared
  maximum mean discrepancy (MMD) with an RBF kernel whose width is the median pairwise distance
  (biased V-statistic, so identical sets give exactly 0).
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)


def word_counts(texts: list[str]) -> Counter:
    """Lower-cased word-type counts (runs of word characters)."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(_WORD.findall(text.lower()))
    return counts


def vocabulary_overlap(a: Counter, b: Counter, k: int) -> float:
    """|top_k(a) & top_k(b)| / |top_k(a) | top_k(b)|; ties at the cut are broken alphabetically."""

    def top(counts: Counter) -> set[str]:
        return {w for w, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:k]}

    ta, tb = top(a), top(b)
    union = ta | tb
    return len(ta & tb) / len(union) if union else 1.0


def js_divergence(a: Counter, b: Counter) -> float:
    """JS(P, Q) = (KL(P||M) + KL(Q||M)) / 2 with M = (P + Q) / 2, in bits."""
    vocab = sorted(set(a) | set(b))
    p = np.array([a[w] for w in vocab], dtype=float)
    q = np.array([b[w] for w in vocab], dtype=float)
    if p.sum() == 0 or q.sum() == 0:
        return 1.0
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))

    return max(0.0, (kl(p) + kl(q)) / 2)


def mean_embedding_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cosine similarity of the two sets' mean embeddings."""
    ma, mb = a.mean(axis=0), b.mean(axis=0)
    return float(1 - ma @ mb / (np.linalg.norm(ma) * np.linalg.norm(mb) + 1e-12))


def _squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum((x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T, 0.0)


def mmd_rbf(a: np.ndarray, b: np.ndarray) -> float:
    """Squared MMD with k(x, y) = exp(-|x - y|^2 / (2 s^2)), s = median distance over both sets."""
    both = np.concatenate([a, b])
    d = _squared_distances(both, both)
    positive = d[d > 0]
    s2 = float(np.median(positive)) if positive.size else 1.0
    k = np.exp(-d / (2 * s2))
    n = len(a)
    value = k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()
    return float(max(value, 0.0))


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x, y) -> float:
    """Spearman's rank correlation (NaN with fewer than 3 pairs or a constant side)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def between(a_texts: list[str], a_vectors: np.ndarray, b_texts: list[str], b_vectors: np.ndarray, top_k: int):
    """Every measure here for two sets of texts and their sentence embeddings."""
    a, b = word_counts(a_texts), word_counts(b_texts)
    return {
        "vocabulary_overlap": vocabulary_overlap(a, b, top_k),
        "js_divergence": js_divergence(a, b),
        "embedding_cosine_distance": mean_embedding_distance(a_vectors, b_vectors),
        "mmd": mmd_rbf(a_vectors, b_vectors),
    }
