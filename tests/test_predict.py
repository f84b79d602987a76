"""Transferability estimators (`intertask predict`): LogME against an independent computation, the
ranking scores on hand-worked cases, the report's scoring of estimators against measured gains, and the
entry point on a tiny study against a real `mlflow server` (metrics, tables, `train_top_k`)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy import optimize

from intertask import cli
from intertask.config import ReportConfig
from intertask.config.validate import load_experiment
from intertask.errors import InputError
from intertask.report import estimator_scores
from intertask.report.estimators import score_bounds, simultaneous_box
from intertask.transferability import scores as transferability

from .conftest import main_against, mlflow_run, write_experiment

TINY_GRID = {  # three intermediate choices and the baseline for one target, two seeds
    "grid": {"intermediate": ["none", "rte", "sst2", "movie_reviews"], "target": ["pawsx"], "seeds": [1, 2]},
    "training": {"epochs": 1},
    "intermediate": {"task": "rte", "max_examples": {"train": 48, "dev": 16}},
    "target": {"task": "pawsx", "max_examples": {"train": 48, "dev": 16}},
    "evaluation": {"languages": ["en", "de"], "max_examples": 32},
    "predict": {"max_examples": 64},
    "report": {"bootstrap": 200},
}


def _searched_evidence(features, target) -> float:
    """The evidence maximised over (log10 alpha, log10 beta): a grid, then Nelder-Mead from its best
    point -- no fixed-point iteration, no SVD."""
    grid = np.linspace(-6, 6, 49)
    best = max(
        (transferability.log_evidence(features, target, 10**a, 10**b), a, b) for a in grid for b in grid
    )
    found = optimize.minimize(
        lambda p: -transferability.log_evidence(features, target, 10 ** p[0], 10 ** p[1]),
        [best[1], best[2]],
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000},
    )
    return -found.fun


def test_logme_equals_the_evidence_maximised_by_search():
    """LogME's fixed point (on one SVD) reaches the maximum of the directly computed evidence, to 1e-4
    per example, for class targets and for a real-valued target."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(150, 12))
    labels = rng.integers(0, 3, 150)
    searched = np.mean([_searched_evidence(features, (labels == k).astype(float)) for k in range(3)])
    assert transferability.logme(features, labels) == pytest.approx(searched, abs=1e-4)
    values = features @ rng.normal(size=12) + rng.normal(size=150)
    assert transferability.logme(features, values, regression=True) == pytest.approx(
        _searched_evidence(features, values), abs=1e-4
    )


def test_features_that_separate_the_labels_score_higher_than_shuffled_labels():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    features = rng.normal(size=(300, 8)) + 2.0 * labels[:, None]
    assert (
        transferability.logme(features, labels)
        > transferability.logme(features, rng.permutation(labels)) + 0.05
    )


def test_ranking_scores_on_hand_worked_cases():
    """Gains 3, 1, 2 (choice A best); an estimator ranking B, C, A: relevance = gain - 1 = 2, 0, 1.
    DCG@2 = 0/log2(2) + 1/log2(3); ideal = 2/log2(2) + 1/log2(3). Regret@1 = 3 - 1 = 2, regret@2 =
    3 - 2 = 1, regret@3 = 0."""
    gains = [3.0, 1.0, 2.0]
    scores = [0.1, 0.9, 0.5]  # B > C > A
    assert transferability.ndcg_at_k(scores, gains, 2) == pytest.approx(
        (1 / np.log2(3)) / (2 + 1 / np.log2(3))
    )
    assert transferability.ndcg_at_k(gains, gains, 2) == 1.0  # the true order
    assert transferability.ndcg_at_k(scores, [1.0, 1.0, 1.0], 2) == 1.0  # nothing to rank
    assert [transferability.regret_at_k(scores, gains, k) for k in (1, 2, 3)] == [2.0, 1.0, 0.0]
    assert transferability.spearman(scores, gains) == pytest.approx(-1.0)  # ranks (1,3,2) vs (3,1,2)
    assert transferability.embedding_similarity(np.eye(2), np.eye(2)) == pytest.approx(1.0)


@pytest.mark.parametrize("choices", [2, 5])
def test_ranking_scores_of_many_orders_and_gain_vectors_at_once_are_each_pair_scored_alone(choices):
    """ranking_scores_many (what the report's tie-breaks and score bounds use) against ranking_scores
    (scipy's Spearman, one order and one gain vector at a time) for every pair of D orders and N gain
    vectors -- with tied gains, an order that ties every choice (no rho) and, at two choices, k = 1."""
    rng = np.random.default_rng(choices)
    orders = rng.normal(size=(4, choices))
    orders[1] = 0.0  # every choice scored alike
    gains = rng.integers(0, 3, size=(6, choices)).astype(float)  # ties within a vector
    gains[0] = 1.0  # all equal: nothing to rank
    k = min(3, choices - 1)
    many = transferability.ranking_scores_many(orders, gains, k)
    for d, order in enumerate(orders):
        alone = transferability.ranking_scores_many(order, gains, k)
        for n, gain in enumerate(gains):
            for name, value in transferability.ranking_scores(order, gain, k).items():
                assert many[name].shape == (len(gains), len(orders)) and alone[name].shape == (len(gains),)
                for got in (many[name][n, d], alone[name][n]):
                    assert got == pytest.approx(value, nan_ok=True), (name, d, n)


def _gains(values: dict[str, tuple[float, float]], n_seeds: int = 3) -> pd.DataFrame:
    """A gains table of one target: choice -> (gain, its standard error), on mean_all."""
    rows = [
        ("m", choice, "pawsx", "pawsx", "test", "mean_all", "accuracy", gain, se, 2.0, n_seeds)
        for choice, (gain, se) in values.items()
    ]
    columns = ["model", "intermediate", "target", "task", "split", "language", "metric", "gain", "se", "df"]
    return pd.DataFrame(rows, columns=[*columns, "n_seeds"])


def test_the_report_scores_an_estimator_against_the_measured_gains(tiny_config):
    """Gains told apart (a > b > c, intervals far from each other): a perfect estimator gets rho 1,
    NDCG 1 and regret 0 with intervals at those points; a reversed one rho -1 and the regret of picking
    the worst. Gains within each other's noise: the score is not estimable and its interval spans what
    the box allows. With two choices the report says why it scores nothing."""
    from dataclasses import replace

    cfg = replace(load_experiment(tiny_config()), report=ReportConfig(bootstrap=100))
    gains = _gains({"a": (0.10, 0.002), "b": (0.05, 0.002), "c": (-0.01, 0.002)})
    estimates = pd.DataFrame(
        [("m", "pawsx", c, "good", v, "") for c, v in (("a", 3.0), ("b", 2.0), ("c", 1.0))]
        + [("m", "pawsx", c, "bad", v, "") for c, v in (("a", 1.0), ("b", 2.0), ("c", 3.0))],
        columns=["model", "target", "intermediate", "estimator", "value", "note"],
    )
    table, why = estimator_scores(cfg, gains, estimates)
    assert why == "" and set(table.languages) == {"mean_all"} and table.estimable.all()
    good = table[table.estimator == "good"].set_index("score")
    assert good.loc["spearman", ["value", "ci_low", "ci_high"]].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert good.loc["regret_at_2", ["value", "ci_low", "ci_high"]].tolist() == [0.0, 0.0, 0.0]
    bad = table[table.estimator == "bad"].set_index("score")
    assert bad.loc["spearman", "value"] == -1.0
    assert bad.loc["regret_at_2", "value"] == pytest.approx(0.10 - 0.05)  # best of {c, b} is b
    assert bad.loc["regret_at_2", "ci_low"] < 0.05 < bad.loc["regret_at_2", "ci_high"]
    assert good.loc["regret_at_1", "value"] == 0.0 and bad.loc["regret_at_1", "value"] == pytest.approx(0.11)
    random = table[table.estimator == "random choice"].set_index("score")  # the baseline every estimator gets
    assert random.loc["regret_at_1", "value"] == pytest.approx(0.10 - np.mean([0.10, 0.05, -0.01]), abs=2e-3)
    assert random.loc["spearman", "value"] == pytest.approx(0.0, abs=0.03)
    assert (
        random.loc["regret_at_1", "ci_low"]
        <= random.loc["regret_at_1", "value"]
        <= random.loc["regret_at_1", "ci_high"]
    )
    assert "own family" not in set(table.estimator)  # no choice of the target's family (paraphrase)
    close = _gains({"a": (0.02, 0.02), "b": (0.01, 0.02), "c": (0.0, 0.02)})
    table, _ = estimator_scores(cfg, close, estimates)
    good = table[table.estimator == "good"].set_index("score")
    assert not good.estimable.any()
    assert good.loc["spearman", ["ci_low", "ci_high"]].tolist() == pytest.approx([-1.0, 1.0])
    empty, why = estimator_scores(cfg, gains[gains.intermediate != "c"], estimates)
    assert empty.empty and "fewer than 3 intermediate choices" in why and "pawsx (2 choices)" in why
    assert "run `intertask predict`" in estimator_scores(cfg, gains, None)[1]


@pytest.mark.parametrize("choices", [3, 5])
def test_estimator_score_intervals_cover_the_score_of_the_true_gains(choices):
    """Simulated studies: true gains spaced 0, 1 and 4 standard errors apart, measured with that error;
    an estimator that half follows them. The projection interval holds the score the true gains give
    in at least 95 % of studies, ties included (where a bootstrap of the measured gains does not)."""
    rng = np.random.default_rng(choices)
    k = min(3, choices - 1)
    for spacing in (0.0, 1.0, 4.0):
        hits: dict[str, list[bool]] = {}
        for _ in range(150):
            true = np.arange(choices) * spacing
            predicted = true + rng.normal(0, 1.5 * max(spacing, 0.5), choices)
            measured = true + rng.normal(0, 1, choices)
            frame = pd.DataFrame({"gain": measured, "se": 1.0, "df": np.inf, "n_seeds": 5})
            box = simultaneous_box(frame, 0.05)
            bounds = score_bounds(predicted, measured, box, k, seed=0)
            for name, value in transferability.ranking_scores(predicted, true, k).items():
                if not np.isnan(value):
                    hits.setdefault(name, []).append(
                        bounds[name][0] - 1e-9 <= value <= bounds[name][1] + 1e-9
                    )
        assert all(np.mean(h) >= 0.95 for h in hits.values()), (
            spacing,
            {n: np.mean(h) for n, h in hits.items()},
        )


def test_word_features_for_token_level_logme(tiny_model):
    """A tagging target's LogME reads one feature per word (its first sub-token) with the word's tag,
    in order, however the words split into sub-tokens."""
    from intertask.compute import modeling
    from intertask.tasks.base import Example
    from intertask.transferability.predict import word_features

    encoder = modeling.load_encoder(tiny_model)
    tokenizer = modeling.load_tokenizer(str(tiny_model))
    examples = [
        Example(0, ("The", "unbelievably", "long", "sentence"), (1, 2, 3, 1)),
        Example(1, ("Short", "one"), (0, 4)),
    ]
    features, tags = word_features(encoder, tokenizer, examples, max_length=64)
    assert features.shape == (6, encoder.config.hidden_size)
    assert tags.tolist() == [1, 2, 3, 1, 0, 4]
    assert np.isfinite(transferability.logme(features, tags))


def test_train_top_k_by_an_estimator_that_needs_models_fails_before_training(tiny_model, tmp_path, capsys):
    """`predict.rank_by: logme_intermediate` before any intermediate model exists: an error naming the
    field, and no run is created; an exclude entry that is not a pair is refused by the config."""
    config = write_experiment(
        tmp_path, tiny_model, "topk", TINY_GRID, predict={"train_top_k": 2, "rank_by": "logme_intermediate"}
    )
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cli.main(["main", str(config), f"tracking.uri={store}"]) != 0
    err = capsys.readouterr().err
    assert "predict.rank_by" in err and "logme_intermediate" in err
    runs = MlflowClient(store).search_runs(
        [e.experiment_id for e in MlflowClient(store).search_experiments()]
    )
    assert [r for r in runs if r.data.tags.get("intertask.stage") not in (None, "predict")] == []
    bad = write_experiment(
        tmp_path, tiny_model, "pairs", TINY_GRID, grid={**TINY_GRID["grid"], "exclude": [["rte"]]}
    )
    with pytest.raises(InputError, match="exclude"):
        load_experiment(bad)
    unknown = write_experiment(
        tmp_path, tiny_model, "unknown", TINY_GRID, grid={**TINY_GRID["grid"], "exclude": [["qqp", "pawsx"]]}
    )
    with pytest.raises(InputError, match=r"grid\.exclude\[0\].*not a pair of the grid"):
        load_experiment(unknown)
    no_grid = write_experiment(tmp_path, tiny_model, "nogrid", predict={"train_top_k": 1})
    with pytest.raises(InputError, match="predict.train_top_k.*no intermediate choices"):
        load_experiment(no_grid)


@pytest.mark.slow
def test_predict_and_a_top_k_study_on_a_real_server(tiny_model, mlflow_server, tmp_path, monkeypatch, capsys):
    """`intertask predict` logs one run with every estimate as a metric, the tables and the chart;
    `main` with predict.train_top_k=2 trains only the two best-ranked choices and the baseline, logs
    what it skipped, and the report says why it cannot score the estimators (2 choices); `mlflow run
    -e predict` runs the entry point."""
    one_seed = {**TINY_GRID["grid"], "seeds": [1]}  # what is trained, not how often
    config = write_experiment(tmp_path, tiny_model, "predict-e2e", TINY_GRID, grid=one_seed)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    assert cli.main(["predict", str(config)]) == 0
    out = capsys.readouterr().out
    assert "transferability estimates for pawsx" in out and "predicted rank of each intermediate task" in out
    assert "embedding_similarity" in out and "see it: open http://127.0.0.1:" in out  # values and the UI
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("predict-e2e").experiment_id
    (run,) = client.search_runs([experiment], "tags.`intertask.stage` = 'predict'")
    keys = set(run.data.metrics)
    for choice in ("rte", "sst2", "movie_reviews"):
        assert f"estimate/{tiny_model.name}/pawsx/{choice}/embedding_similarity" in keys
        assert f"estimate/{tiny_model.name}/pawsx/{choice}/neg_js_divergence" in keys
    assert f"estimate/{tiny_model.name}/pawsx/none/logme_base" in keys and "predict_seconds" in keys
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "predict")}
    assert {"predict/estimates.csv", "predict/ranked.csv", "predict/ranks.png"} <= artifacts
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    main_against(mlflow_server, config, "predict.train_top_k=2")
    runs = client.search_runs([experiment], max_results=200)
    (parent,) = [r for r in runs if r.data.tags.get("intertask.stage") == "main"]
    trained = {
        r.data.tags["intertask.cell.intermediate"]
        for r in runs
        if r.data.tags.get("intertask.stage") == "finetune"
    }
    assert len(trained) == 3 and "none" in trained  # the baseline and the top two
    assert parent.data.metrics["predict/skipped_pairs"] == 1
    skipped = client.download_artifacts(parent.info.run_id, "predict/skipped.txt")
    assert "not among the top 2 by embedding_similarity" in Path(skipped).read_text()
    html = Path(client.download_artifacts(parent.info.run_id, "report/report.html")).read_text()
    assert "Not scored: fewer than 3 intermediate choices" in html
    done = mlflow_run("predict", config, mlflow_server, "predict-e2e", tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(client.search_runs([experiment], "tags.`intertask.stage` = 'predict'")) == 3


def test_fewer_than_three_intermediate_choices_are_not_ranked():
    """One or two choices: every estimator 'ranks' them alike, nothing an estimator can be judged on;
    the ranks are not logged and a notice says so."""
    from intertask.transferability.predict import rankable, ranked

    def rows(target, choices):
        return [
            {
                "model": "m",
                "target": target,
                "intermediate": c,
                "estimator": "embedding_similarity",
                "value": v,
            }
            for c, v in zip(choices, (0.3, 0.2, 0.1), strict=False)
        ]

    estimates = pd.DataFrame(rows("pawsx", ["rte", "sst2"]) + rows("xnli", ["rte", "sst2", "mnli"]))
    order, notices = rankable(ranked(estimates))
    assert set(order.target) == {"xnli"} and len(order) == 3
    ((what, line),) = notices
    assert what == "nothing_to_rank.pawsx" and "2 intermediate choice(s): nothing to rank" in line
