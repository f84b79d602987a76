"""The metric registry and the metrics of labels, tags and mined pairs (the label kinds:
the package's docstring).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from intertask.names import Registry

SINGLE, MULTI, TAGS, SPANS, BITEXT = "single_label", "multi_label", "tags", "spans", "bitext"


@dataclass
class Metric:
    name: str
    description: str
    fns: dict[str, Callable] = field(default_factory=dict)  # label kind -> fn(pred, gold, **options)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.fns)


METRICS: Registry[Metric] = Registry("metric")


def register(name: str, kind: str, description: str):
    """Register `fn` as the implementation of metric `name` for one label kind."""

    def wrap(fn):
        metric = METRICS.get(name) if name in METRICS else METRICS.add(name, Metric(name, description))
        metric.fns[kind] = fn
        return fn

    return wrap


def score(kind: str, names: tuple[str, ...], pred, gold, **options) -> dict[str, float]:
    return {name: float(METRICS.get(name).fns[kind](pred, gold, **options)) for name in names}


def f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
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


@register("accuracy", SINGLE, "share of exact matches")
def accuracy(pred, gold, **_) -> float:
    return float((np.asarray(pred) == np.asarray(gold)).mean())


@register("accuracy", MULTI, "subset accuracy: every label of the example right")
def subset_accuracy(pred, gold, **_) -> float:
    return float((np.asarray(pred) == np.asarray(gold)).all(axis=1).mean())


@register("macro_f1", SINGLE, "unweighted mean of per-label F1")
@register("macro_f1", MULTI, "unweighted mean of per-label F1")
def macro_f1(pred, gold, **_) -> float:
    return float(f1_from_counts(*_counts(pred, gold)).mean())


@register("micro_f1", MULTI, "F1 of the pooled label decisions")
def micro_f1(pred, gold, **_) -> float:
    tp, fp, fn = (c.sum() for c in _counts(pred, gold))
    return float(f1_from_counts(np.array(tp), np.array(fp), np.array(fn)))


def chunks(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first, last) spans of a tag sequence, read like seqeval's default mode.

    A tag is split into its first character (B/I/E/S/O or anything else) and the type after the first
    '-' ("B-PER" -> B, PER). A chunk ends and a new one starts on B/S, after E/S, on O, and whenever the
    type changes -- so POS tags without prefixes ("NOUN" -> N, "OUN") form one chunk per run of equal
    tags, which is how XTREME's seqeval-based UD-POS F1 counts them.
    """
    out, start, prev_tag, prev_type = [], 0, "O", ""
    for i, chunk in enumerate([*tags, "O"]):
        tag = chunk[0]
        type_ = chunk[1:].split("-", maxsplit=1)[-1] or "_"
        if _chunk_ends(prev_tag, tag, prev_type, type_):
            out.append((prev_type, start, i - 1))
        if _chunk_starts(prev_tag, tag, prev_type, type_):
            start = i
        prev_tag, prev_type = tag, type_
    return out


def _chunk_ends(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != type_


def _chunk_starts(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != type_


def chunk_counts(pred: list[list[str]], gold: list[list[str]]) -> tuple[int, int, int]:
    """(correct, predicted, gold) chunk counts over all sentences, each sentence closed by an O."""
    flat_pred = [t for sentence in pred for t in [*sentence, "O"]]
    flat_gold = [t for sentence in gold for t in [*sentence, "O"]]
    p, g = set(chunks(flat_pred)), set(chunks(flat_gold))
    return len(p & g), len(p), len(g)


def _precision_recall_f1(correct: int, predicted: int, gold: int) -> tuple[float, float, float]:
    # F1 = 2PR / (P + R) = 2 correct / (predicted + gold); every ratio 0 when its denominator is
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    return precision, recall, (2 * correct / (predicted + gold) if correct else 0.0)


def _register_counted(kind: str, counts: Callable, what: str) -> None:
    """precision, recall and f1 for `kind`, from a (correct, predicted, gold) counting function."""
    for position, name in enumerate(("precision", "recall", "f1")):

        def fn(pred, gold, _position=position, **_) -> float:
            return _precision_recall_f1(*counts(pred, gold))[_position]

        register(name, kind, f"{name} of {what}")(fn)


# micro over chunks: entity-level for NER; for UD-POS, how XTREME scores it
_register_counted(TAGS, chunk_counts, "chunks (seqeval, micro)")


@register("accuracy", TAGS, "share of tokens tagged right")
def token_accuracy(pred, gold, **_) -> float:
    pairs = [(p, g) for ps, gs in zip(pred, gold, strict=True) for p, g in zip(ps, gs, strict=True)]
    return sum(p == g for p, g in pairs) / len(pairs) if pairs else 0.0


def _pair_counts(pred: set, gold: set) -> tuple[int, int, int]:
    return len(pred & gold), len(pred), len(gold)


_register_counted(BITEXT, _pair_counts, "mined pairs against the gold pairs")
