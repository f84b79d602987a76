"""Registered metrics, the aggregates across languages, and XTREME's aggregation.

A metric has one implementation per label kind (a task type declares its kind):
- single_label: integer arrays (n,) (classification, multiple choice, retrieval rank-1 indices);
- multi_label: 0/1 arrays (n, labels);
- tags: lists of tag-string lists (token tagging), scored as seqeval's default mode does;
- spans: predicted answer strings vs lists of gold answers, scored as the official SQuAD v1.1 script
  (or, with normalization="mlqa", MLQA's evaluate script for the given language);
- bitext: sets of mined (source id, target id) pairs vs the gold pairs (BUCC).
Values are fractions in [0, 1]; XTREME reports the same numbers x 100.
"""

from __future__ import annotations

import functools
import re
import string
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping
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


# --- classification -------------------------------------------------------------------------------


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


@register("accuracy", SINGLE, "share of exact matches")
def accuracy(pred, gold, **_) -> float:
    return float((np.asarray(pred) == np.asarray(gold)).mean())


@register("accuracy", MULTI, "subset accuracy: every label of the example right")
def subset_accuracy(pred, gold, **_) -> float:
    return float((np.asarray(pred) == np.asarray(gold)).all(axis=1).mean())


@register("macro_f1", SINGLE, "unweighted mean of per-label F1")
@register("macro_f1", MULTI, "unweighted mean of per-label F1")
def macro_f1(pred, gold, **_) -> float:
    return float(_f1(*_counts(pred, gold)).mean())


@register("micro_f1", MULTI, "F1 of the pooled label decisions")
def micro_f1(pred, gold, **_) -> float:
    tp, fp, fn = (c.sum() for c in _counts(pred, gold))
    return float(_f1(np.array(tp), np.array(fp), np.array(fn)))


# --- sequence labelling: chunks as seqeval's default (IOB) mode reads them --------------------------


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


def _chunk_counts(pred: list[list[str]], gold: list[list[str]]) -> tuple[int, int, int]:
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
_register_counted(TAGS, _chunk_counts, "chunks (seqeval, micro)")


@register("accuracy", TAGS, "share of tokens tagged right")
def token_accuracy(pred, gold, **_) -> float:
    pairs = [(p, g) for ps, gs in zip(pred, gold, strict=True) for p, g in zip(ps, gs, strict=True)]
    return sum(p == g for p, g in pairs) / len(pairs) if pairs else 0.0


# --- extractive QA: the SQuAD v1.1 and MLQA evaluation scripts' definitions -------------------------


@functools.cache
def mlqa_punctuation() -> frozenset[str]:
    """Every Unicode punctuation mark and ASCII's, as MLQA's script removes them (built on first use:
    scanning the code points takes about 0.4 s, which every command paid at import before)."""
    marks = {chr(i) for i in range(sys.maxunicode) if unicodedata.category(chr(i)).startswith("P")}
    return frozenset(marks | set(string.punctuation))


MLQA_ARTICLES = {  # per answer language, as MLQA's evaluate script removes them
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "vi": r"\b(của|là|cái|chiếc|những)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "ar": "\\sال^|ال",
    "hi": None,
    "zh": None,
}
_CJK = re.compile(r"[\u4e00-\u9fa5]")


def _mixed_segmentation(text: str) -> list[str]:
    """zh: every CJK character (and punctuation mark) is a token; other runs split on whitespace."""
    punctuation = mlqa_punctuation()
    tokens, run = [], ""
    for char in text:
        if _CJK.search(char) or char in punctuation:
            tokens.extend(run.split())
            tokens.append(char)
            run = ""
        else:
            run += char
    return tokens + run.split()


def normalize_answer(text: str, normalization: str = "squad", language: str = "en") -> str:
    """Lower-case, drop punctuation and articles, normalise whitespace.

    squad: ASCII punctuation, English articles, whitespace tokens (SQuAD v1.1 evaluate script).
    mlqa: all Unicode punctuation, the answer language's articles, and for zh one token per CJK
    character (MLQA evaluate script; languages en es de ar hi vi zh).
    """
    text = text.lower()
    if normalization in ("squad", "squad_v2"):  # the v2.0 script normalises as v1.1 does
        text = "".join(c for c in text if c not in string.punctuation)
        return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())
    if language not in MLQA_ARTICLES:
        raise ValueError(
            f"MLQA normalization has no rules for language {language!r} (has {sorted(MLQA_ARTICLES)})"
        )
    punctuation = mlqa_punctuation()
    text = "".join(c for c in text if c not in punctuation)
    if MLQA_ARTICLES[language]:
        text = re.sub(MLQA_ARTICLES[language], " ", text)
    tokens = _mixed_segmentation(text) if language == "zh" else text.split()
    return " ".join(t for t in tokens if t.strip())


def _span_f1(prediction: str, truth: str, **options) -> float:
    pred_tokens = normalize_answer(prediction, **options).split()
    gold_tokens = normalize_answer(truth, **options).split()
    if options.get("normalization") == "squad_v2" and not (pred_tokens and gold_tokens):
        return float(pred_tokens == gold_tokens)  # v2.0: "no answer" scores 1 only against "no answer"
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _best_per_question(fn, predictions: list[str], answers: list[list[str]], **options) -> np.ndarray:
    """Each question's best score against any of its gold answers (a question with none scores 0)."""
    return np.array(
        [
            max((fn(p, a, **options) for a in gold), default=0.0)
            for p, gold in zip(predictions, answers, strict=True)
        ],
        dtype=float,
    )


def _best_over_answers(fn, predictions: list[str], answers: list[list[str]], **options) -> float:
    """Mean over questions of the best score against any gold answer."""
    scores = _best_per_question(fn, predictions, answers, **options)
    return float(scores.mean()) if len(scores) else 0.0


def _span_exact(prediction: str, truth: str, **options) -> float:
    return float(normalize_answer(prediction, **options) == normalize_answer(truth, **options))


@register("exact_match", SPANS, "normalised answer equals a gold answer (SQuAD v1.1 / MLQA)")
def exact_match(pred, gold, normalization="squad", language="en") -> float:
    return _best_over_answers(_span_exact, pred, gold, normalization=normalization, language=language)


@register("f1", SPANS, "token-overlap F1 with the best gold answer (SQuAD v1.1 / MLQA)")
def span_f1(pred, gold, normalization="squad", language="en") -> float:
    return _best_over_answers(_span_f1, pred, gold, normalization=normalization, language=language)


def has_answer(answers: list[str]) -> bool:
    """SQuAD v2.0: a question has an answer unless its gold answers are all empty ("no answer")."""
    return any(a.strip() for a in answers)


def _answerable_mean(fn, pred, gold, answerable: bool, **options) -> float:
    scores = _best_per_question(fn, pred, gold, **options)
    mask = np.array([has_answer(g) == answerable for g in gold], dtype=bool)
    return float(scores[mask].mean()) if mask.any() else 0.0


@register(
    "has_answer_exact_match", SPANS, "exact match over the questions that have an answer (SQuAD v2.0 HasAns)"
)
def has_answer_exact_match(pred, gold, normalization="squad_v2", language="en") -> float:
    return _answerable_mean(_span_exact, pred, gold, True, normalization=normalization, language=language)


@register("has_answer_f1", SPANS, "F1 over the questions that have an answer (SQuAD v2.0 HasAns)")
def has_answer_f1(pred, gold, normalization="squad_v2", language="en") -> float:
    return _answerable_mean(_span_f1, pred, gold, True, normalization=normalization, language=language)


@register(
    "no_answer_exact_match", SPANS, "share of unanswerable questions predicted as such (SQuAD v2.0 NoAns)"
)
def no_answer_exact_match(pred, gold, normalization="squad_v2", language="en") -> float:
    return _answerable_mean(_span_exact, pred, gold, False, normalization=normalization, language=language)


# --- bitext mining (BUCC) ---------------------------------------------------------------------------


def _pair_counts(pred: set, gold: set) -> tuple[int, int, int]:
    return len(pred & gold), len(pred), len(gold)


_register_counted(BITEXT, _pair_counts, "mined pairs against the gold pairs")


# --- per-example statistics: a metric from sums over examples, for resampling -----------------------
#
# example_stats gives per-example columns whose sums over any multiset of the examples (a bootstrap
# resample) give back each metric of that multiset through from_sums, exactly: accuracy from correct
# counts, macro-F1 from per-label tp/fp/fn, seqeval F1 from chunk counts per sentence (sentences never
# share a chunk), SQuAD/MLQA EM and F1 from each question's best score, BUCC from pair counts per
# source sentence. tests/test_metrics.py checks from_sums against the metric computed directly.


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
        counts = np.array([_chunk_counts([p], [g]) for p, g in zip(pred, gold, strict=True)], np.int64)
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
            "exact_match": _best_per_question(_span_exact, pred, gold, **options),
            "f1": _best_per_question(_span_f1, pred, gold, **options),
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
            return _f1(tp.sum(-1), fp.sum(-1), fn.sum(-1))
        f1 = _f1(tp, fp, fn)
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


# --- aggregates across languages ------------------------------------------------------------------

MEAN_ALL = "mean_all"  # mean over every evaluated language


def mean_over_languages(values: Mapping[str, float], exclude: tuple[str, ...] = ()) -> float | None:
    """Unweighted mean over languages (each language counts once, as XTREME averages)."""
    kept = [v for lang, v in values.items() if lang not in exclude]
    return float(np.mean(kept)) if kept else None


# --- XTREME (google-research/xtreme evaluate.py) ------------------------------------------------------

XTREME_GROUPS = {
    "classification": ("pawsx", "xnli"),
    "structured_prediction": ("udpos", "panx"),
    "qa": ("xquad", "mlqa", "tydiqa"),
    "retrieval": ("bucc2018", "tatoeba"),
}
_XTREME_LANGUAGE_LISTS = {
    "pawsx": "de en es fr ja ko zh",
    "xnli": "ar bg de el en es fr hi ru sw th tr ur vi zh",
    "panx": "ar he vi id jv ms tl eu ml ta te af nl en de el bn hi mr ur fa fr it pt es bg ru ja ka ko th sw yo my "
    "zh kk tr et fi hu",
    "udpos": "af ar bg de el en es et eu fa fi fr he hi hu id it ja kk ko mr nl pt ru ta te th tl tr ur vi yo zh",
    "bucc2018": "de fr ru zh",
    "tatoeba": "ar he vi id jv tl eu ml ta te af nl de el bn hi mr ur fa fr it pt es bg ru ja ka ko th sw zh kk tr et "
    "fi hu",
    "xquad": "en es de el ru tr ar vi th zh hi",
    "mlqa": "en es de ar hi vi zh",
    "tydiqa": "en ar bn fi id ko ru sw te",
}
XTREME_LANGUAGES = {task: tuple(langs.split()) for task, langs in _XTREME_LANGUAGE_LISTS.items()}


def xtreme_task_score(task: str, per_language: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Per metric the mean over languages (`avg_<metric>`), and `avg_metric`: (EM + F1) / 2 for QA, else
    F1 when the task has it, else accuracy."""
    metric_names = {m for scores in per_language.values() for m in scores}
    out = {
        f"avg_{m}": float(np.mean([s[m] for s in per_language.values() if m in s]))
        for m in sorted(metric_names)
    }
    if task in XTREME_GROUPS["qa"]:
        out["avg_metric"] = (out["avg_exact_match"] + out["avg_f1"]) / 2
    elif "avg_f1" in out:
        out["avg_metric"] = out["avg_f1"]
    elif "avg_accuracy" in out:
        out["avg_metric"] = out["avg_accuracy"]
    return out


def xtreme_aggregate(task_metric: Mapping[str, float]) -> dict[str, float]:
    """Group scores for groups whose tasks are all present, and `overall` only when all nine are."""
    out = {}
    for group, tasks in XTREME_GROUPS.items():
        if all(t in task_metric for t in tasks):
            out[group] = float(np.mean([task_metric[t] for t in tasks]))
    every = [t for tasks in XTREME_GROUPS.values() for t in tasks]
    if all(t in task_metric for t in every):
        out["overall"] = float(np.mean([task_metric[t] for t in every]))
    return out
