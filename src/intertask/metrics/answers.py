"""Extractive QA: the SQuAD v1.1 and MLQA evaluation scripts' definitions (answer normalisation per
language, exact match, token F1 against the best gold answer, SQuAD v2.0's HasAns / NoAns parts).
Written here, not imported: the official scripts are not packages; tests/test_metrics.py runs them on
the same predictions and requires the same values."""

from __future__ import annotations

import functools
import re
import string
import sys
import unicodedata
from collections import Counter

import numpy as np

from intertask.metrics.scoring import SPANS, register


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


def answer_f1(prediction: str, truth: str, **options) -> float:
    pred_tokens = normalize_answer(prediction, **options).split()
    gold_tokens = normalize_answer(truth, **options).split()
    if options.get("normalization") == "squad_v2" and not (pred_tokens and gold_tokens):
        return float(pred_tokens == gold_tokens)  # v2.0: "no answer" scores 1 only against "no answer"
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def best_per_question(fn, predictions: list[str], answers: list[list[str]], **options) -> np.ndarray:
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
    scores = best_per_question(fn, predictions, answers, **options)
    return float(scores.mean()) if len(scores) else 0.0


def answer_exact(prediction: str, truth: str, **options) -> float:
    return float(normalize_answer(prediction, **options) == normalize_answer(truth, **options))


@register("exact_match", SPANS, "normalised answer equals a gold answer (SQuAD v1.1 / MLQA)")
def exact_match(pred, gold, normalization="squad", language="en") -> float:
    return _best_over_answers(answer_exact, pred, gold, normalization=normalization, language=language)


@register("f1", SPANS, "token-overlap F1 with the best gold answer (SQuAD v1.1 / MLQA)")
def span_f1(pred, gold, normalization="squad", language="en") -> float:
    return _best_over_answers(answer_f1, pred, gold, normalization=normalization, language=language)


def has_answer(answers: list[str]) -> bool:
    """SQuAD v2.0: a question has an answer unless its gold answers are all empty ("no answer")."""
    return any(a.strip() for a in answers)


def _answerable_mean(fn, pred, gold, answerable: bool, **options) -> float:
    scores = best_per_question(fn, pred, gold, **options)
    mask = np.array([has_answer(g) == answerable for g in gold], dtype=bool)
    return float(scores[mask].mean()) if mask.any() else 0.0


@register(
    "has_answer_exact_match", SPANS, "exact match over the questions that have an answer (SQuAD v2.0 HasAns)"
)
def has_answer_exact_match(pred, gold, normalization="squad_v2", language="en") -> float:
    return _answerable_mean(answer_exact, pred, gold, True, normalization=normalization, language=language)


@register("has_answer_f1", SPANS, "F1 over the questions that have an answer (SQuAD v2.0 HasAns)")
def has_answer_f1(pred, gold, normalization="squad_v2", language="en") -> float:
    return _answerable_mean(answer_f1, pred, gold, True, normalization=normalization, language=language)


@register(
    "no_answer_exact_match", SPANS, "share of unanswerable questions predicted as such (SQuAD v2.0 NoAns)"
)
def no_answer_exact_match(pred, gold, normalization="squad_v2", language="en") -> float:
    return _answerable_mean(answer_exact, pred, gold, False, normalization=normalization, language=language)
