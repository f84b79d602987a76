"""Every metric recomputed from per-example statistics on a bootstrap resample equals the metric of that
resample computed directly (seqeval itself for tags; the SQuAD v1.1 / MLQA definitions for spans)."""

import warnings

import numpy as np
import pytest

from intertask import metrics

RESAMPLES = 25


def _resamples(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, n) for _ in range(RESAMPLES)]


def _from_stats(kind, name, stats, index):
    sums = {k: np.asarray(v)[index].sum() for k, v in stats.items()}
    return float(metrics.from_sums(kind, name, sums, len(index)))


@pytest.mark.parametrize("labels", [2, 3, 7])
def test_single_label_accuracy_and_macro_f1(labels):
    rng = np.random.default_rng(labels)
    gold = rng.integers(0, labels, 120)
    pred = np.where(rng.random(120) < 0.5, gold, rng.integers(0, labels, 120))
    stats = metrics.example_stats(metrics.SINGLE, pred, gold)
    for index in _resamples(len(gold), labels):
        direct = metrics.score(metrics.SINGLE, ("accuracy", "macro_f1"), pred[index], gold[index])
        for name, value in direct.items():
            assert _from_stats(metrics.SINGLE, name, stats, index) == pytest.approx(value, abs=1e-12), name


def test_multi_label_metrics():
    rng = np.random.default_rng(3)
    gold = (rng.random((90, 12)) < 0.1).astype(int)
    pred = np.where(rng.random((90, 12)) < 0.85, gold, 1 - gold)
    pred[:, 4] = 0
    gold[:, 9] = pred[:, 9] = 0  # a label neither true nor predicted counts as F1 0, as sklearn does
    stats = metrics.example_stats(metrics.MULTI, pred, gold)
    for index in _resamples(len(gold), 3):
        direct = metrics.score(metrics.MULTI, ("accuracy", "macro_f1", "micro_f1"), pred[index], gold[index])
        for name, value in direct.items():
            assert _from_stats(metrics.MULTI, name, stats, index) == pytest.approx(value, abs=1e-12), name


@pytest.mark.parametrize(
    "tags",
    [["B-PER", "I-PER", "B-LOC", "I-LOC", "O", "O"], ["NOUN", "VERB", "ADJ", "DET", "PUNCT", "ADP"]],
    ids=["iob", "pos"],
)
def test_tag_metrics_against_seqeval_on_the_resample(tags):
    from seqeval import metrics as sq

    rng = np.random.default_rng(7)
    gold = [list(rng.choice(tags, size=rng.integers(1, 14))) for _ in range(80)]
    pred = [[t if rng.random() < 0.7 else str(rng.choice(tags)) for t in sentence] for sentence in gold]
    stats = metrics.example_stats(metrics.TAGS, pred, gold)
    for index in _resamples(len(gold), 7):
        g, p = [gold[i] for i in index], [pred[i] for i in index]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # seqeval: POS tags "seem not to be NE tags"
            expected = {
                "f1": sq.f1_score(g, p),
                "precision": sq.precision_score(g, p),
                "recall": sq.recall_score(g, p),
                "accuracy": sq.accuracy_score(g, p),
            }
        for name, value in expected.items():
            assert _from_stats(metrics.TAGS, name, stats, index) == pytest.approx(value, abs=1e-12), name


SPANS = [
    ("the Eiffel Tower", ["Eiffel Tower", "the tower"]),
    ("in 1889", ["1889"]),
    ("Paris, France", ["Paris"]),
    ("", ["a gold answer"]),
    ("Gustave Eiffel's company", ["Gustave Eiffel"]),
    ("the", ["The"]),
    ("北京大学", ["北京", "北京大学"]),
    ("der Bahnhof", ["Bahnhof"]),
]


SQUAD_V2 = ("has_answer_exact_match", "has_answer_f1", "no_answer_exact_match")


@pytest.mark.parametrize(
    "normalization, language", [("squad", "en"), ("mlqa", "zh"), ("mlqa", "de"), ("squad_v2", "en")]
)
def test_span_metrics(normalization, language):
    spans = SPANS + ([("", [""]), ("Paris", [""]), ("", [""])] if normalization == "squad_v2" else [])
    pred, gold = [p for p, _ in spans] * 5, [g for _, g in spans] * 5
    options = {"normalization": normalization, "language": language}
    stats = metrics.example_stats(metrics.SPANS, pred, gold, **options)
    for index in _resamples(len(gold), 11):
        direct = metrics.score(
            metrics.SPANS,
            ("exact_match", "f1", *(SQUAD_V2 if normalization == "squad_v2" else ())),
            [pred[i] for i in index],
            [gold[i] for i in index],
            **options,
        )
        for name, value in direct.items():
            assert _from_stats(metrics.SPANS, name, stats, index) == pytest.approx(value, abs=1e-12), name


def test_mined_pairs_per_source_sentence():
    rng = np.random.default_rng(5)
    sources = [f"s{i}" for i in range(40)]
    gold = {(s, f"t{i}") for i, s in enumerate(sources) if rng.random() < 0.8}
    mined = {
        (s, f"t{i}" if rng.random() < 0.7 else f"t{i + 1}")
        for i, s in enumerate(sources)
        if rng.random() < 0.9
    }
    stats = metrics.example_stats(metrics.BITEXT, mined, gold, sources=sources)
    for index in _resamples(len(sources), 5):
        # a source drawn twice is two sources: its pairs are copied under a new name per draw
        copies = [(sources[i], f"#{k}") for k, i in enumerate(index)]
        g = {(s + c, t) for s, c in copies for (a, t) in gold if a == s}
        m = {(s + c, t) for s, c in copies for (a, t) in mined if a == s}
        direct = metrics.score(metrics.BITEXT, ("precision", "recall", "f1"), m, g)
        for name, value in direct.items():
            assert _from_stats(metrics.BITEXT, name, stats, index) == pytest.approx(value, abs=1e-12), name


def test_the_full_set_gives_back_the_logged_metric():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, 50)
    pred = np.where(rng.random(50) < 0.6, gold, rng.integers(0, 3, 50))
    stats = metrics.example_stats(metrics.SINGLE, pred, gold)
    index = np.arange(50)
    assert _from_stats(metrics.SINGLE, "macro_f1", stats, index) == pytest.approx(
        metrics.macro_f1(pred, gold)
    )
