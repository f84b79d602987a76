"""Transferability estimators, and how well an estimator's ranking of intermediate tasks agrees with the
gains a study measured.

Estimators (higher = the intermediate task is predicted to help more):
- LogME (You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning"):
  the log marginal evidence of a Bayesian linear model from features to (one-hot) labels, per example,
  maximised over the prior precision alpha and the noise precision beta by the paper's fixed-point
  iteration on one SVD of the features. Bassignana et al. 2022 find it positively correlated with
  fine-tuned performance in 94 % of their NLP setups. `log_evidence` is the same evidence computed
  directly (matrix inverse and log-determinant, no SVD), which the tests maximise by search to check
  the iteration against.
- Embedding similarity (TextEmb / SEmb, Vu et al. 2020; Poth et al. 2021): the cosine of the two
  tasks' mean sentence embeddings under the base model (divergence.mean_embedding_distance, negated).
- The divergences the report computes already (Kashyap et al. 2021: Jensen-Shannon divergence of word
  distributions is a strong baseline): vocabulary overlap, JS divergence and MMD, signs turned so that
  higher means closer.

Ranking scores of an estimator against measured gains, for one target: Spearman's rho
(scipy.stats.spearmanr), NDCG@k (relevance = gain above the worst choice's gain) and regret@k (the gain
lost by taking the best of the estimator's top k instead of the truly best choice, in metric points).

`hf-dataset-selector` (PyPI, 0.2.1) was considered for LogME / ESM-LogME: it declares numpy==2.0.0
(installing it would downgrade the numpy this stack needs) and ESM-LogME's maps come from the Hub, so
LogME is written here from the paper's equations (a test checks it against `log_evidence` maximised by
search, not against a second copy of the iteration).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from intertask.report import divergence


def _one_hot(labels: np.ndarray) -> np.ndarray:
    classes = np.unique(labels)
    return (labels[:, None] == classes[None, :]).astype(np.float64)


def log_evidence(features: np.ndarray, target: np.ndarray, alpha: float, beta: float) -> float:
    """log p(target | features, alpha, beta) / n for y = F m + noise, m ~ N(0, I/alpha), noise ~
    N(0, I/beta), computed directly: A = alpha I + beta F'F, m = beta A^-1 F'y."""
    f = np.asarray(features, np.float64)
    y = np.asarray(target, np.float64)
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    residual = float(np.sum((f @ m - y) ** 2))
    _, logdet = np.linalg.slogdet(a)
    value = (
        n / 2 * np.log(beta)
        + d / 2 * np.log(alpha)
        - n / 2 * np.log(2 * np.pi)
        - beta / 2 * residual
        - alpha / 2 * float(m @ m)
        - logdet / 2
    )
    return float(value / n)


def _fixed_point(
    u: np.ndarray, s: np.ndarray, d: int, y: np.ndarray, tol: float = 1e-8, steps: int = 1000
) -> float:
    """LogME's iteration for one target column, on the SVD F = U diag(s) V' of the features."""
    n = u.shape[0]
    sigma = s**2
    z = u.T @ y
    outside = max(float(y @ y - z @ z), 0.0)  # the part of y no feature direction reaches
    alpha, beta = 1.0, 1.0
    for _ in range(steps):
        scale = alpha + beta * sigma
        gamma = float(np.sum(beta * sigma / scale))
        m2 = float(np.sum((beta * s * z / scale) ** 2))
        residual = float(np.sum((alpha * z / scale) ** 2)) + outside
        new_alpha, new_beta = gamma / max(m2, 1e-12), (n - gamma) / max(residual, 1e-12)
        done = abs(new_alpha - alpha) / alpha < tol and abs(new_beta - beta) / beta < tol
        alpha, beta = new_alpha, new_beta
        if done:
            break
    scale = alpha + beta * sigma
    m2 = float(np.sum((beta * s * z / scale) ** 2))
    residual = float(np.sum((alpha * z / scale) ** 2)) + outside
    logdet = float(np.sum(np.log(scale))) + (d - len(s)) * np.log(alpha)
    value = (
        n / 2 * np.log(beta)
        + d / 2 * np.log(alpha)
        - n / 2 * np.log(2 * np.pi)
        - beta / 2 * residual
        - alpha / 2 * m2
        - logdet / 2
    )
    return float(value / n)


def logme(features: np.ndarray, labels: np.ndarray, regression: bool = False) -> float:
    """LogME of features (n x d) for labels: class indices (one-hot targets, evidence averaged over
    classes), or real values with `regression`. Per example; higher is better."""
    f = np.asarray(features, np.float64)
    targets = np.asarray(labels, np.float64)[:, None] if regression else _one_hot(np.asarray(labels))
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    return float(np.mean([_fixed_point(u, s, f.shape[1], targets[:, k]) for k in range(targets.shape[1])]))


def embedding_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the mean embeddings of two sets (SEmb / TextEmb-style task similarity): one minus
    the report's mean-embedding distance."""
    return 1 - divergence.mean_embedding_distance(np.asarray(a, np.float64), np.asarray(b, np.float64))


# --- an estimator's ranking against measured gains ------------------------------------------------------


def _order(scores: np.ndarray) -> np.ndarray:
    """Choices by predicted score, best first (ties: the earlier choice first)."""
    return np.argsort(-np.asarray(scores, np.float64), kind="stable")


def ndcg_at_k(scores, gains, k: int) -> float:
    """NDCG@k of the estimator's order, relevance = gain - the smallest gain (1.0 when all are equal)."""
    g = np.asarray(gains, np.float64)
    relevance = g - g.min()
    discounts = 1 / np.log2(np.arange(2, k + 2))
    ideal = float(np.sort(relevance)[::-1][:k] @ discounts[: min(k, len(g))])
    if ideal == 0:
        return 1.0
    return float(relevance[_order(scores)][:k] @ discounts[: min(k, len(g))]) / ideal


def regret_at_k(scores, gains, k: int) -> float:
    """Best gain minus the best gain among the estimator's top k (0 when the best is among them)."""
    g = np.asarray(gains, np.float64)
    return float(g.max() - g[_order(scores)[:k]].max())


def spearman(scores, gains) -> float:
    if len(scores) < 2 or np.ptp(scores) == 0 or np.ptp(gains) == 0:
        return float("nan")
    return float(stats.spearmanr(scores, gains).statistic)


def ranking_scores(scores, gains, k: int) -> dict[str, float]:
    """Spearman's rho, NDCG@k, regret@1 (points lost by taking the top choice instead of the best)
    and regret@k."""
    return {
        "spearman": spearman(scores, gains),
        f"ndcg_at_{k}": ndcg_at_k(scores, gains, k),
        "regret_at_1": regret_at_k(scores, gains, 1),
        f"regret_at_{k}": regret_at_k(scores, gains, k),
    }


def ranking_scores_many(scores, gains: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """`ranking_scores` of one estimator's scores (K,) against every row of `gains` (N, K) at once:
    arrays (N,); or of D orders at once, `scores` (D, K): arrays (N, D)."""
    g = np.atleast_2d(np.asarray(gains, np.float64))
    s = np.asarray(scores, np.float64)
    one = s.ndim == 1
    s = np.atleast_2d(s)
    order = np.argsort(-s, axis=1, kind="stable")  # (D, K): choices best first, as _order
    relevance = g - g.min(axis=1, keepdims=True)
    discounts = 1 / np.log2(np.arange(2, k + 2))[: min(k, g.shape[1])]
    ideal = (np.sort(relevance, axis=1)[:, ::-1][:, :k] @ discounts)[:, None]
    found = relevance[:, order[:, :k]] @ discounts  # (N, D)
    ndcg = np.where(ideal == 0, 1.0, found / np.where(ideal == 0, 1.0, ideal))
    best = g.max(axis=1, keepdims=True)
    regret = best - g[:, order[:, :k]].max(axis=2)
    regret_1 = best - g[:, order[:, 0]]
    x = stats.rankdata(s, axis=1)
    y = stats.rankdata(g, axis=1)
    xc, yc = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    norm = np.sqrt((yc**2).sum(axis=1))[:, None] * np.sqrt((xc**2).sum(axis=1))[None, :]
    rho = np.where(norm > 0, (yc @ xc.T) / np.where(norm > 0, norm, 1.0), np.nan)
    rho[:, np.ptp(x, axis=1) == 0] = np.nan  # one choice, or every choice scored alike
    out = {"spearman": rho, f"ndcg_at_{k}": ndcg, "regret_at_1": regret_1, f"regret_at_{k}": regret}
    return {name: values[:, 0] for name, values in out.items()} if one else out
