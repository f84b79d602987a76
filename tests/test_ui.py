"""The MLflow UI in a real browser: Playwright for Python driving Debian's `chromium` on a finished tiny
study run by `mlflow run` (its own experiment on the session's real `mlflow server`). Skipped, saying why, when Playwright is not
installed or no Chromium starts. Screenshots go to $INTERTASK_UI_SCREENSHOTS (default: a temporary
folder, printed). README's arm comparison comes from

    INTERTASK_UI_SCREENSHOTS=docs/images HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/test_ui.py -k comparing

and its run tree and parent run page from the demo itself (docs/ui_screenshots.py).
"""

import json
import os
import shutil
from pathlib import Path

import pytest

from docs.ui_screenshots import EXPAND, open_page
from intertask import tracking

from .conftest import fast_guard, missing_component, mlflow_run, write_experiment

pytestmark = pytest.mark.slow  # a browser, a server and `mlflow run`: not in `make test-fast`

TIMEOUT_MS = 60_000  # a cold UI on a busy 2-core machine


def _chromium() -> str | None:
    return (
        os.environ.get("INTERTASK_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )


@pytest.fixture(scope="module")
def browser():
    from playwright import sync_api  # a dev dependency: missing is an error, not a skip

    executable = _chromium()
    fast_guard("a browser")
    if executable is None:
        missing_component("no Chromium on PATH (Debian: apt-get install chromium; or set INTERTASK_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        try:
            launched = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        except Exception as error:  # noqa: BLE001 -- any failure to start means: no browser here
            missing_component(f"Chromium at {executable} did not start: {str(error).splitlines()[0]}")
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def study(browser, tiny_model, mlflow_server, tmp_path_factory):
    """The study the pages show (after the browser fixture: nothing runs when the test skips);
    returns (client, runs, registered names by task chain)."""
    from mlflow.tracking import MlflowClient

    config = write_experiment(
        tmp_path_factory.mktemp("ui-study"),
        tiny_model,
        "ui",
        evaluation={"languages": ["en", "de", "fr", "ja"]},
        tracking={"system_metrics_interval_seconds": 1},  # short stages still get samples
        grid={"seeds": [7, 8]},  # two seeds: Compare shows arms that differ by seed
    )
    # through `mlflow run`, as `make demo` runs the main job: the experiment is set up there too
    done = mlflow_run("main", config, mlflow_server, "ui", tmp_path_factory.mktemp("ui-run"))
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("ui").experiment_id
    names = {c: tracking.registered_name("ui", str(tiny_model), c.split("-")) for c in ("xnli-pawsx",)}
    return client, client.search_runs([experiment], max_results=100), names


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("INTERTASK_UI_SCREENSHOTS") or tmp_path_factory.mktemp("ui-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"UI screenshots: {folder}")
    return folder


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 820})
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    page.close()


def _by_stage(runs, stage: str) -> list:
    return [r for r in runs if r.data.tags.get("intertask.stage") == stage]


def _run_page(server: str, run) -> str:
    return f"{server}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}?workflowType=machine_learning"


def test_the_experiment_link_opens_the_run_tree_in_the_model_training_view(study, mlflow_server, page, shots):
    """The link intertask prints opens the experiment on its runs (not MLflow 3's GenAI overview); the
    parent run holds its arms, named seed first, each arm its stages."""
    client, runs, _ = study
    (parent,) = _by_stage(runs, "main")
    page.goto(tracking.experiment_page(mlflow_server, parent.info.experiment_id), wait_until="load")
    page.get_by_text("main ui", exact=True).wait_for()
    assert "workflowType=machine_learning" in page.url and "/runs" in page.url
    assert page.get_by_text("No data available for the selected time range").count() == 0  # GenAI's
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()
    page.locator("[role=row]", has_text="main ui").locator(EXPAND).click()
    for arm in ("seed 7 · arm baseline", "seed 7 · arm transfer: xnli"):
        page.locator("[role=row]", has_text=arm).locator(EXPAND).click()
    page.get_by_text("intermediate xnli (en)").first.wait_for()
    names = page.locator("[role=row] [col-id='attributes.`Run Name`']").all_inner_texts()
    shown = [n.splitlines()[-1] for n in names[1:]]  # past the header; a name follows its colour label
    assert shown[0] == "main ui"
    arms = [f"seed {s} · arm {a}" for s in (7, 8) for a in ("baseline", "transfer: xnli")]
    assert sorted(shown) == sorted(
        ["main ui", *arms, "intermediate xnli (en)"] + ["finetune pawsx (en)", "evaluate pawsx"] * 2
    )
    page.screenshot(path=str(shots / "run-tree.png"))


@pytest.mark.parametrize("start", ["bare experiment URL", "home page"])
def test_a_fresh_browser_opens_the_experiment_on_its_runs(study, mlflow_server, browser, shots, start):
    """A new browser profile (nothing stored), on the server started as README says (`--app-name
    intertask`): the bare experiment URL, and a click on the experiment from the home page, open the
    model-training runs view -- the runs table, the Model registry link -- not MLflow 3.17's GenAI
    overview (its default for a browser with no stored choice)."""
    client, runs, _ = study
    (parent,) = _by_stage(runs, "main")
    context = browser.new_context(viewport={"width": 1400, "height": 820})  # a fresh profile
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        if start == "home page":
            page.goto(f"{mlflow_server}/", wait_until="load")
            page.get_by_role("link", name="ui", exact=True).first.click()
        else:
            page.goto(f"{mlflow_server}/#/experiments/{parent.info.experiment_id}", wait_until="load")
        page.get_by_text("main ui", exact=True).wait_for()  # the runs table's parent row
        assert "workflowType=machine_learning" in page.url and "/runs" in page.url, page.url
        assert page.get_by_text("Model registry").count() >= 1  # the model-training sidebar
        assert page.get_by_text("Agent versions").count() == 0  # GenAI's name for the Models tab
        page.screenshot(path=str(shots / f"fresh-browser-{start.replace(' ', '-')}.png"))
    finally:
        context.close()


def test_the_parent_run_page_shows_the_headline_gains(study, mlflow_server, page, shots):
    client, runs, _ = study
    (parent,) = _by_stage(runs, "main")
    open_page(page, _run_page(mlflow_server, parent), "main ui")
    page.get_by_text("Show more", exact=True).first.click()  # the description, folded after two lines
    table = page.locator("table", has_text="95 % interval").first
    table.wait_for(state="visible")
    assert "xnli" in table.inner_text() and "pawsx" in table.inner_text()
    page.get_by_text("xnli -> pawsx, pawsx accuracy per language").first.wait_for(state="visible")
    languages = page.locator("table", has_text="language").last  # the answer per language, no artifact
    assert "[" in languages.inner_text() and "en" in languages.inner_text()  # gains with their intervals
    page.screenshot(path=str(shots / "parent-run.png"), full_page=True)


def test_a_stage_page_shows_its_datasets_system_metrics_and_model(study, mlflow_server, page, shots):
    client, runs, names = study
    (transfer,) = [
        r
        for r in _by_stage(runs, "finetune")
        if r.data.tags["intertask.task_chain"] == "xnli-pawsx" and r.data.tags["intertask.cell.seed"] == "7"
    ]
    open_page(page, _run_page(mlflow_server, transfer), "finetune pawsx (en)")
    page.get_by_text("System metrics (").first.wait_for()
    body = page.inner_text("body")
    assert "system/cpu_utilization_percentage" in body
    assert "pawsx/en/train" in body  # the Datasets box (validation set behind its +1)
    assert "Logged models (1)" in body and names["xnli-pawsx"] in body  # the model, registered
    seed = transfer.data.tags["intertask.cell.seed"]
    assert f"xnli-pawsx_target_seed{seed}" in body  # named by its chain, stage and seed, not "model"
    assert transfer.data.tags["mlflow.note.content"].split(";")[0] in body  # the description
    page.screenshot(path=str(shots / "stage-run.png"), full_page=True)


def test_the_registered_model_page_shows_its_alias(study, mlflow_server, page, shots):
    client, _, names = study
    open_page(
        page, f"{mlflow_server}/#/models/{names['xnli-pawsx']}?workflowType=machine_learning", "Version 1"
    )
    row = page.locator("tr, [role=row]", has_text="Version 1").first
    assert "target" in row.inner_text()  # the alias column (and the intertask.stage tag)
    assert "@" in page.inner_text("body") or "Aliases" in page.inner_text("body")
    assert "intertask study 'ui'" in page.inner_text("body")  # the registered model's description
    model = client.get_registered_model(names["xnli-pawsx"])
    assert model.tags["intertask.target"] == "pawsx" and model.tags["intertask.intermediate"] == "xnli"
    version = client.get_model_version(names["xnli-pawsx"], "1")
    assert "seed" in version.description and version.tags["intertask.dev_score"] != "not recorded"
    page.screenshot(path=str(shots / "registered-model.png"))


def test_comparing_the_arms_shows_seeds_and_gains_side_by_side(study, mlflow_server, page, shots):
    """Compare of the four arms (2 seeds x baseline/transfer): the same params on every arm (model,
    intermediate, target, seed, headline -- not a stage's config), the headline score, this seed's gain
    and the cell's gain with its interval as metrics, 0 on the baselines (no empty cell)."""
    client, runs, _ = study
    arms = sorted(_by_stage(runs, "arm"), key=lambda r: r.info.run_name)
    assert [r.info.run_name for r in arms] == [
        f"seed {s} · arm {a}" for s in (7, 8) for a in ("baseline", "transfer: xnli")
    ]
    for arm in arms:
        data = client.get_run(arm.info.run_id).data
        assert set(data.params) == {"model", "intermediate", "target", "seed", "headline"}
        assert data.params["target"] == "pawsx" and data.tags["intertask.cell.target"] == "pawsx"
        assert data.params["seed"] == data.tags["intertask.cell.seed"]
        names = ("headline_score", "headline_gain_this_seed", "headline_gain", "headline_gain_low")
        assert {f"{n}/pawsx" for n in names} <= set(data.metrics), sorted(data.metrics)
        if data.params["intermediate"] == "none":
            assert data.metrics["headline_gain/pawsx"] == data.metrics["headline_gain_high/pawsx"] == 0
        else:
            low, high = data.metrics["headline_gain_low/pawsx"], data.metrics["headline_gain_high/pawsx"]
            assert low <= data.metrics["headline_gain/pawsx"] <= high and low < high
    transfer = [client.get_run(a.info.run_id).data.metrics for a in arms if "transfer" in a.info.run_name]
    assert transfer[0]["headline_gain/pawsx"] == transfer[1]["headline_gain/pawsx"]  # one cell, pooled
    ids = json.dumps([r.info.run_id for r in arms])
    experiment = json.dumps([arms[0].info.experiment_id])
    url = f"{mlflow_server}/#/compare-runs?runs={ids}&experiments={experiment}&workflowType=machine_learning"
    open_page(page, url, "Run details")
    body = page.inner_text("body")
    assert all(r.info.run_name in body for r in arms)
    for section in ("Visualizations",):  # folded: the params and metrics come up
        page.get_by_text(section, exact=True).first.click()
    page.get_by_text("headline_gain_low/pawsx").first.wait_for(state="visible")
    body = page.inner_text("body")
    assert "headline" in body and "intermediate" in body and "[{'task'" not in body
    page.set_viewport_size({"width": 1400, "height": 1400})
    page.screenshot(path=str(shots / "arm-comparison.png"))


def test_the_experiment_page_shows_the_study_description(study, mlflow_server, page, shots):
    """The experiment `mlflow run` made carries the study's description (its banner in the runs view)."""
    client, runs, _ = study
    experiment = client.get_experiment(runs[0].info.experiment_id)
    note = experiment.tags["mlflow.note.content"]
    open_page(page, tracking.experiment_page(mlflow_server, experiment.experiment_id), "main ui")
    question = note.strip().splitlines()[0].split("): ", 1)[1]  # after the bold study name
    page.get_by_text(question[:40]).first.wait_for()
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_logged_model_lists_its_scores_not_its_system_metrics(study, mlflow_server, page, shots):
    """The logged model's page (Models tab): its name, the stage's scores linked to it; the run's
    system metrics stay with the run."""
    client, runs, _ = study
    (transfer,) = [
        r
        for r in _by_stage(runs, "finetune")
        if r.data.tags["intertask.task_chain"] == "xnli-pawsx" and r.data.tags["intertask.cell.seed"] == "7"
    ]
    assert any(k.startswith("system/") for k in client.get_run(transfer.info.run_id).data.metrics)
    (output,) = client.get_run(transfer.info.run_id).outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    assert model.name == f"xnli-pawsx_target_seed{transfer.data.tags['intertask.cell.seed']}"
    linked = {m.key for m in model.metrics}
    assert "best_dev/selection" in linked and not any(k.startswith("system/") for k in linked)
    url = f"{mlflow_server}/#/experiments/{transfer.info.experiment_id}/models/{model.model_id}"
    open_page(page, f"{url}?workflowType=machine_learning", model.name)
    page.get_by_text("best_dev/selection").first.wait_for()
    body = page.inner_text("body")
    assert "system/cpu_utilization_percentage" not in body
    page.screenshot(path=str(shots / "logged-model.png"), full_page=True)


def test_an_html_artifact_shows_non_latin_text(study, mlflow_server, page, shots):
    """The Japanese evaluation's predictions page, in the artifact viewer: the text as written, not
    mojibake (every HTML artifact declares UTF-8)."""
    client, runs, _ = study
    evaluation = next(
        r
        for r in _by_stage(runs, "evaluate")
        if any(
            a.path == "evaluation/predictions.html"
            for a in client.list_artifacts(r.info.run_id, "evaluation")
        )
    )
    url = _run_page(mlflow_server, evaluation).replace("?", "/artifacts/evaluation/predictions.html?")
    open_page(page, url, "predictions.html")
    frame = page.frame_locator("iframe").first
    frame.locator("body").wait_for()
    text = frame.locator("body").inner_text()
    assert any("\u3040" <= c <= "\u30ff" or "\u4e00" <= c <= "\u9fff" for c in text), text[:300]
    assert "ã" not in text and "â€" not in text
    page.screenshot(path=str(shots / "predictions-artifact.png"))


@pytest.mark.parametrize("artifact", ["heatmap.png", "report.html"])
def test_the_report_artifacts_render_in_the_artifact_view(study, mlflow_server, page, shots, artifact):
    """The parent run's heatmap (in points, readable labels) and report page (gains in reading order:
    gain, interval, q and flag before the model and task) in MLflow's artifact view."""
    client, runs, _ = study
    (parent,) = _by_stage(runs, "main")
    url = _run_page(mlflow_server, parent).replace("?", f"/artifacts/report/{artifact}?")
    open_page(page, url, artifact)
    if artifact == "heatmap.png":
        image = page.locator("img[src^='blob:']").first  # the artifact view shows the PNG as a blob
        image.wait_for()
        width = page.evaluate("(img) => img.naturalWidth", image.element_handle())
        assert width >= 900  # 150 dpi: labels of 9-10 pt stay legible at 100 % zoom
    else:
        frame = page.frame_locator("iframe").first
        header = frame.locator("table", has_text="ci_low").first.locator("tr").first.inner_text()
        columns = header.split()
        assert columns.index("gain") < columns.index("model") and columns.index("q") < columns.index("task")
    page.screenshot(path=str(shots / ("heatmap.png" if artifact == "heatmap.png" else "report-page.png")))
