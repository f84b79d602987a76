"""Multi-task sampling weights (jiant's samplers) and checkpoint selection."""

import pytest

from intertask.config import SamplingConfig
from intertask.training import TrainPart, sampling_weights, selection_score

SIZES = {"small": 1000, "large": 9000}


@pytest.mark.parametrize(
    "sampling, expected",
    [
        (SamplingConfig(strategy="proportional"), {"small": 0.1, "large": 0.9}),
        (SamplingConfig(strategy="uniform"), {"small": 0.5, "large": 0.5}),
        (
            SamplingConfig(strategy="temperature", temperature=2.0),
            {"small": 0.25, "large": 0.75},
        ),  # sqrt: 31.6 : 94.9
        (SamplingConfig(strategy="temperature", temperature=1.0), {"small": 0.1, "large": 0.9}),
        (SamplingConfig(strategy="proportional", examples_cap=2000), {"small": 1 / 3, "large": 2 / 3}),
    ],
)
def test_sampling_weights(sampling, expected):
    weights = sampling_weights(SIZES, sampling)
    assert weights == pytest.approx(expected, abs=1e-9)
    assert sum(weights.values()) == pytest.approx(1.0)


def _part(name, metric):
    return TrainPart(name, None, None, None, None, None, metric)


def test_selection_on_a_named_task_or_the_mean():
    parts = [_part("xnli", "accuracy"), _part("tydiqa", "f1"), _part("udpos", "f1")]
    dev = {"xnli": {"accuracy": 0.6}, "tydiqa": {"f1": 0.3, "exact_match": 0.1}, "udpos": {"f1": 0.9}}
    assert selection_score(dev, parts, None) == pytest.approx(0.6)  # (0.6 + 0.3 + 0.9) / 3
    assert selection_score(dev, parts, "tydiqa") == pytest.approx(0.3)
