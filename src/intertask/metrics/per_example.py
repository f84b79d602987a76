"""Per-example statistics: a metric from sums over examples, for resampling.

example_stats gives per-example columns whose sums over any multiset of the examples (a bootstrap
resample) give back each metric of that multiset through from_sums, exactly: accuracy from correct
counts, macro-F1 from per-label tp/fp/fn, seqeval F1 from chunk counts per sentence (sentences never
share a chunk), SQuAD/MLQA EM and F1 from each question's best score, BUCC from pair counts per
source sentence. tests/test_metrics.py checks from_sums against the metric computed directly."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import numpy as np

from intertask.metrics.answers import answer_exact, answer_f1, best_per_question, has_answer
from intertask.metrics.scoring import BITEXT, MULTI, SINGLE, SPANS, TAGS, chunk_counts, f1_from_counts

EXAMPLE_KEYS = ["task", "split", "language", "uid"]  # the columns of a per-example row besides its statistics
EXAMPLES_ARTIFACT = "evaluation/examples.parquet"  # where an evaluation run logs them
BEST_DEV = "best_dev"  # a training run's metrics best_dev/<task>/<metric>: the kept epoch's dev scores
REFERENCE_DEV = "reference_dev"  # reference_dev/<task>/<metric>: a model that learnt nothing, on that dev set


def learnt_margin(dev, reference: float, n: float) -> tuple[float, float]:
    """(mean dev score - reference, twice its standard error sqrt(s^2 / S + m (1 - m) / n)): a model
    whose margin is not above that noise learnt nothing (report/controls.py). `dev`: the seeds' dev
    scores (one seed: the binomial part alone)."""
    dev = np.atleast_1d(np.asarray(dev, float))
    mean = float(dev.mean())
    sd = float(dev.std(ddof=1)) if len(dev) > 1 else 0.0
    m = min(max(mean, 0.0), 1.0)
    binomial = m * (1 - m) / n if n and n > 0 else 0.0
    return mean - reference, 2 * float(np.sqrt(sd**2 / len(dev) + binomial))


def example_stats(kind: str, pred, gold, **options) -> dict[str, np.ndarray]:
    """Per-example statistic columns (name -> array over examples) for every metric of `kind`."""
    if kind == SINGLE:
        pred, gold = np.asarray(pred), np.asarray(gold)
        columns = {"correct": (pred == gold).astype(np.int64)}
        for label in np.union1d(pred, gold):
            p, g = pred == label, gold == label
            columns |= {f"tp:{label}": p & g, f"fp:{label}": p & ~g, f"fn:{label}": ~p & g}
        return {k: np.asarray(v, np.int64) for k, v in columns.items()}
    if kind == MULTI:
        p, g = np.asarray(pred).astype(bool), np.asarray(gold).astype(bool)
        columns = {"correct": (p == g).all(axis=1)}
        for j in range(p.shape[1]):
            columns |= {
                f"tp:{j}": p[:, j] & g[:, j],
                f"fp:{j}": p[:, j] & ~g[:, j],
                f"fn:{j}": ~p[:, j] & g[:, j],
            }
        return {k: np.asarray(v, np.int64) for k, v in columns.items()}
    if kind == TAGS:
        counts = np.array([chunk_counts([p], [g]) for p, g in zip(pred, gold, strict=True)], np.int64)
        counts = counts.reshape(-1, 3)
        return {
            "correct": counts[:, 0],
            "predicted": counts[:, 1],
            "gold": counts[:, 2],
            "tokens_correct": np.array(
                [sum(a == b for a, b in zip(p, g, strict=True)) for p, g in zip(pred, gold, strict=True)],
                np.int64,
            ),
            "tokens": np.array([len(g) for g in gold], np.int64),
        }
    if kind == SPANS:
        columns = {
            "exact_match": best_per_question(answer_exact, pred, gold, **options),
            "f1": best_per_question(answer_f1, pred, gold, **options),
        }
        if options.get("normalization") == "squad_v2":  # HasAns / NoAns parts
            answerable = np.array([has_answer(g) for g in gold], dtype=np.int64)
            columns |= {
                "has_answer": answerable,
                "has_answer_exact_match": columns["exact_match"] * answerable,
                "has_answer_f1": columns["f1"] * answerable,
            }
        return columns
    if kind == BITEXT:  # pred, gold: sets of (source, target) pairs; options["sources"]: one key per example
        sources = options["sources"]
        count = lambda pairs: Counter(s for s, _ in pairs)  # noqa: E731
        correct, predicted, wanted = count(pred & gold), count(pred), count(gold)
        return {
            "correct": np.array([correct[s] for s in sources], np.int64),
            "predicted": np.array([predicted[s] for s in sources], np.int64),
            "gold": np.array([wanted[s] for s in sources], np.int64),
        }
    raise ValueError(f"no per-example statistics for label kind {kind!r}")


def from_sums(kind: str, name: str, sums: Mapping[str, np.ndarray], n) -> np.ndarray:
    """Metric `name` of every resample from its summed statistics (arrays over resamples) and its size n."""
    n = np.asarray(n, float)
    if name == "accuracy":
        if kind == TAGS:
            return _ratio(sums["tokens_correct"], sums["tokens"])
        if kind in (SPANS, BITEXT):
            raise ValueError(f"metric accuracy has no {kind} form")
        return _ratio(sums["correct"], n)
    if name in ("exact_match", "f1") and kind == SPANS:
        return _ratio(sums[name], n)
    if name in ("has_answer_exact_match", "has_answer_f1") and kind == SPANS:
        return _ratio(sums[name], sums["has_answer"])
    if name == "no_answer_exact_match" and kind == SPANS:
        return _ratio(
            np.asarray(sums["exact_match"], float) - sums["has_answer_exact_match"],
            n - np.asarray(sums["has_answer"], float),
        )
    if name in ("macro_f1", "micro_f1"):
        labels = sorted({k.split(":", 1)[1] for k in sums if k.startswith("tp:")}, key=str)
        tp, fp, fn = (
            np.stack([np.asarray(sums[f"{c}:{lab}"], float) for lab in labels], -1)
            for c in ("tp", "fp", "fn")
        )
        if name == "micro_f1":
            return f1_from_counts(tp.sum(-1), fp.sum(-1), fn.sum(-1))
        f1 = f1_from_counts(tp, fp, fn)
        if kind == MULTI:  # every label column counts, as for the full set
            return f1.mean(-1)
        present = (tp + fp + fn) > 0  # single label: labels present in the resample (sklearn's union)
        return _ratio((f1 * present).sum(-1), present.sum(-1))
    if name in ("precision", "recall", "f1") and kind in (TAGS, BITEXT):
        correct, predicted, gold = (np.asarray(sums[k], float) for k in ("correct", "predicted", "gold"))
        if name == "precision":
            return _ratio(correct, predicted)
        if name == "recall":
            return _ratio(correct, gold)
        return _ratio(2 * correct, predicted + gold)
    raise ValueError(f"metric {name!r} has no form from per-example sums for label kind {kind!r}")


def _ratio(a, b) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b > 0)
