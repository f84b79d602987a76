"""Metrics equal scikit-learn's reference implementations on the same predictions."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from intertask import metrics


@pytest.fixture(params=range(5))
def single(request):
    rng = np.random.default_rng(request.param)
    n, k = 200, 3 + request.param % 2
    gold = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < 0.6, gold, rng.integers(0, k, n))
    return pred, gold


@pytest.fixture(params=range(5))
def multi(request):
    rng = np.random.default_rng(100 + request.param)
    gold = (rng.random((150, 28)) < 0.08).astype(int)
    pred = np.where(rng.random((150, 28)) < 0.9, gold, 1 - gold)
    pred[:, 5] = 0  # a label never predicted: F1 0 by sklearn's zero_division
    gold[:, 7] = 0
    pred[:, 7] = 0  # a label neither true nor predicted
    return pred, gold


def test_single_label_metrics_match_sklearn(single):
    pred, gold = single
    assert metrics.accuracy(pred, gold) == pytest.approx(accuracy_score(gold, pred), abs=1e-12)
    assert metrics.macro_f1(pred, gold) == pytest.approx(f1_score(gold, pred, average="macro"), abs=1e-12)


def test_macro_f1_counts_labels_present_in_gold_or_predictions_like_sklearn():
    gold = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 2])  # label 2 only predicted
    assert metrics.macro_f1(pred, gold) == pytest.approx(f1_score(gold, pred, average="macro"))


def test_multi_label_metrics_match_sklearn(multi):
    pred, gold = multi
    assert metrics.micro_f1(pred, gold) == pytest.approx(
        f1_score(gold, pred, average="micro", zero_division=0)
    )
    assert metrics.macro_f1(pred, gold) == pytest.approx(
        f1_score(gold, pred, average="macro", zero_division=0)
    )
    assert metrics.accuracy(pred, gold) == pytest.approx(accuracy_score(gold, pred))


def test_registry_names_and_directions():
    assert {"accuracy", "macro_f1", "micro_f1"} <= set(metrics.METRICS.names())
    assert all(metrics.METRICS.get(n).higher_is_better for n in metrics.METRICS.names())
    with pytest.raises(KeyError, match="did you mean 'accuracy'"):
        metrics.METRICS.get("acuracy")


def test_mean_over_languages_is_unweighted_and_excludes():
    values = {"en": 0.9, "de": 0.7, "fr": 0.5}
    assert metrics.mean_over_languages(values) == pytest.approx(0.7)
    assert metrics.mean_over_languages(values, exclude=("en",)) == pytest.approx(0.6)
    assert metrics.mean_over_languages({"en": 1.0}, exclude=("en",)) is None
