"""Domain divergence between two datasets (the rank correlations that relate it to transfer gains are
transferability/scores.py's, with scipy).

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
from scipy.spatial import distance

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
    """JS(P, Q) = (KL(P||M) + KL(Q||M)) / 2 with M = (P + Q) / 2, in bits (scipy's Jensen-Shannon
    distance, squared); 1 when a side has no words."""
    vocab = sorted(set(a) | set(b))
    p = np.array([a[w] for w in vocab], dtype=float)
    q = np.array([b[w] for w in vocab], dtype=float)
    if p.sum() == 0 or q.sum() == 0:
        return 1.0
    return float(min(1.0, max(0.0, distance.jensenshannon(p, q, base=2) ** 2)))


def mean_embedding_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cosine similarity of the two sets' mean embeddings (scipy's cosine distance)."""
    return float(distance.cosine(a.mean(axis=0), b.mean(axis=0)))


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


def between(a_texts: list[str], a_vectors: np.ndarray, b_texts: list[str], b_vectors: np.ndarray, top_k: int):
    """Every measure here for two sets of texts and their sentence embeddings."""
    a, b = word_counts(a_texts), word_counts(b_texts)
    return {
        "vocabulary_overlap": vocabulary_overlap(a, b, top_k),
        "js_divergence": js_divergence(a, b),
        "embedding_cosine_distance": mean_embedding_distance(a_vectors, b_vectors),
        "mmd": mmd_rbf(a_vectors, b_vectors),
    }
