"""Run searches (issue 29): any tag value is matched exactly, quotes included, and every page is read."""

import mlflow
import pytest
from mlflow import MlflowClient

from intertask import tracking


@pytest.fixture
def experiment(tmp_path):
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        yield mlflow.create_experiment('bob\'s "quoted" study')
    finally:
        mlflow.set_tracking_uri(before)  # no process state left changed


def test_a_tag_value_with_quotes_is_found_exactly(experiment):
    client = MlflowClient()
    values = ["bob's study#0", 'the "best" study#1', "both ' and \"#2", "plain#3", "bob"]
    ids = {v: client.create_run(experiment, tags={"intertask.trial_key": v}).info.run_id for v in values}
    for value in values:
        found = tracking.find_runs(experiment, "intertask.trial_key", value)
        assert [r.info.run_id for r in found] == [ids[value]], value
    assert tracking.find_runs(experiment, "intertask.trial_key", "bob's") == []
    assert tracking.filter_literal("it's") == '"it\'s"' and tracking.filter_literal("both ' \"") is None


@pytest.mark.slow
def test_every_page_is_read(experiment):
    client = MlflowClient()
    for i in range(1003):  # MLflow returns at most 1,000 runs a page
        client.create_run(experiment, tags={"intertask.stage_key": "k" if i % 2 else "other"})
    assert len(tracking.search_pages([experiment], "")) == 1003
    assert len(tracking.find_runs(experiment, "intertask.stage_key", "k")) == 501
