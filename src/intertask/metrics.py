"""Registered metric functions and the named aggregates across languages.

Single-label metrics take integer arrays (n,); multi-label metrics take 0/1 arrays (n, labels). Results
follow scikit-learn's definitions (tests compare against it), with 0 where a ratio is 0/0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from intertask.registry import Registry

SINGLE, MULTI = "single_label", "multi_label"


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]  # (predictions, gold) -> value
    higher_is_better: bool
    kinds: tuple[str, ...]  # label kinds it applies to
    description: str


METRICS: Registry[Metric] = Registry("metric")


def register(name: str, kinds: tuple[str, ...], description: str, higher_is_better: bool = True):
    def wrap(fn):
        METRICS.add(name, Metric(name, fn, higher_is_better, kinds, description))
        return fn

    return wrap


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    # F1 = 2tp / (2tp + fp + fn); 0 where the denominator is 0 (sklearn's zero_division=0)
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros(np.shape(tp), dtype=float), where=denom > 0)


def _as_indicator(pred: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Single-label arrays -> one-hot columns over the labels present in either (as sklearn does)."""
    if pred.ndim == 2:
        return pred.astype(bool), gold.astype(bool)
    labels = np.union1d(pred, gold)
    return pred[:, None] == labels[None, :], gold[:, None] == labels[None, :]


def _counts(pred: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p, g = _as_indicator(np.asarray(pred), np.asarray(gold))
    return (p & g).sum(0), (p & ~g).sum(0), (~p & g).sum(0)


@register("accuracy", (SINGLE, MULTI), "share of exact matches (subset accuracy for multi-label)")
def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    same = pred == gold
    return float((same.all(axis=1) if same.ndim == 2 else same).mean())


@register("macro_f1", (SINGLE, MULTI), "unweighted mean of per-label F1")
def macro_f1(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(_f1(*_counts(pred, gold)).mean())


@register("micro_f1", (MULTI,), "F1 of the pooled label decisions")
def micro_f1(pred: np.ndarray, gold: np.ndarray) -> float:
    tp, fp, fn = (c.sum() for c in _counts(pred, gold))
    return float(_f1(np.array(tp), np.array(fp), np.array(fn)))


def score(names: tuple[str, ...], pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    return {name: METRICS.get(name).fn(pred, gold) for name in names}


# --- aggregates across languages ------------------------------------------------------------------

MEAN_ALL = "mean_all"  # mean over every evaluated language
MEAN_ZERO_SHOT = "mean_non_en"  # mean over the languages other than the training language (English)


def mean_over_languages(values: Mapping[str, float], exclude: tuple[str, ...] = ()) -> float | None:
    """Unweighted mean over languages (each language counts once, as XTREME averages)."""
    kept = [v for lang, v in values.items() if lang not in exclude]
    return float(np.mean(kept)) if kept else None
