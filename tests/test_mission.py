"""pipelines/mission_cpu.yaml in miniature: the same file, its tasks, targets, evaluation sets and report,
with the tiny model, three intermediate tasks and three seeds; every answer the README's Results reads
comes out of it: divergence slopes with intervals and power, families and the same-family contrast with
intervals, degradation, estimators beside baselines, and the learnt table for intermediate stages.
(Spearman's rho needs 4 cells per target, and a model-group contrast a second model: both are tested on
simulated studies in test_pooling.py, the grid's model triples in test_config.py.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from intertask import cli

from .conftest import REPO


@pytest.mark.slow
def test_a_small_mission_study_answers_every_question(tiny_model, tmp_path, local_store, capsys):
    first = str(tiny_model)
    overrides = [
        f"model.name_or_path={first}",
        "model.max_length=64",
        "training.batch_size=16",
        "training.learning_rate=1.0e-3",
        "intermediate.max_examples={train: 40, dev: 20}",
        "target.max_examples={train: 40, dev: 20}",
        "target.training={epochs: 1, learning_rate: 1.0e-3}",
        "training_per_task={udpos: {epochs: 1}}",
        f"grid.models=[{first}]",
        f"grid.model_groups={{base: [{first}]}}",
        "grid.intermediate=[none, ud, xnli, sst2]",
        "grid.seeds=[1, 2, 3]",
        "grid.exclude=[]",
        "evaluation.tasks=[{task: udpos, languages: [de, fr, es], max_examples: 12}, {task: ud, languages: [en]},"
        " {task: conll2003, languages: [en]}, {task: conll2002, languages: [es, nl]}]",
        "evaluation.max_examples=24",
        "predict.max_examples=30",
        "report.divergence_examples=30",
        "report.bootstrap=200",
    ]
    assert cli.main(["main", str(REPO / "pipelines" / "mission_cpu.yaml"), *overrides]) == 0
    out = capsys.readouterr().out
    assert "gain against divergence" in out and "cross-lingual drop" in out
    client = MlflowClient()
    (experiment,) = [e for e in client.search_experiments() if e.name == "mission-cpu"]
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`intertask.stage` = 'main'")

    def table(name: str) -> pd.DataFrame:
        return pd.read_csv(client.download_artifacts(parent.info.run_id, f"report/{name}.csv", str(tmp_path)))

    answers = table("correlations")
    pooled = answers[(answers.scope == "all targets") & (answers.model == first)]
    assert set(pooled.measure) == {"vocabulary_overlap", "js_divergence", "embedding_cosine_distance", "mmd"}
    assert (pooled.cells == 6).all()  # 3 intermediate tasks x 2 targets
    assert np.isfinite(pooled[["slope", "slope_low", "slope_high", "slope_p", "slope_mde"]].to_numpy()).all()
    assert (pooled.slope_low <= pooled.slope).all() and (pooled.slope <= pooled.slope_high).all()
    assert {"rho", "rho_low", "rho_high", "rho_p", "detectable_rho"} <= set(pooled.columns)
    assert set(answers.scope) == {"all targets", "udpos", "conll2003"}
    groups = table("groups")
    assert {"ci_low", "ci_high", "p"} <= set(groups.columns) and set(groups.model_group) == {"base"}
    assert set(groups.family) == {"pos", "nli", "sentiment"}
    assert np.isfinite(groups[groups.family == "nli"][["ci_low", "ci_high"]].to_numpy()).all()
    contrasts = table("contrasts").set_index("contrast")
    same = contrasts.loc["same family - other family"]
    assert same.scope == "udpos" and same.cells == 3 and same.ci_low <= same.estimate <= same.ci_high
    degradation = table("degradation")
    summary = degradation[degradation.intermediate == "all"]
    assert {("udpos", "ud/en", "udpos/mean_all"), ("conll2003", "conll2003/en", "conll2002/mean_all")} <= set(
        zip(summary.target, summary.source, summary.zero_shot, strict=True)
    )
    rows = degradation[(degradation.intermediate == "ud") & (degradation.zero_shot == "udpos/de")]
    assert np.allclose(rows.change, rows.transfer_drop - rows.baseline_drop)
    estimators = table("estimators")
    udpos = estimators[(estimators.target == "udpos") & (estimators.model == first)]
    assert {"random choice", "own family"} <= set(udpos.estimator)
    assert {"spearman", "ndcg_at_2", "regret_at_1", "regret_at_2"} <= set(udpos.score)
    assert "own family" not in set(estimators[estimators.target == "conll2003"].estimator)  # no NER choice
    learnt = table("learnt")
    assert set(learnt[learnt.stage == "intermediate"].intermediate) >= {"ud", "xnli", "sst2"}
    metrics = client.get_run(parent.info.run_id).data.metrics
    assert any(k.startswith("divergence/") and k.endswith("/slope_low") for k in metrics)
    assert any(k.startswith("degradation/") for k in metrics) and any(
        k.startswith("contrast/") for k in metrics
    )
    with open(
        client.download_artifacts(parent.info.run_id, "report/report.html", str(tmp_path)), encoding="utf-8"
    ) as f:
        html = f.read()
    assert "Does the gain fall as the tasks diverge?" in html and "<h2>divergence</h2>" in html
