"""README's MLflow UI screenshots, taken from a finished study's own store (the demo's by default):
what a user of the main job sees after `make demo`.

    make demo                                            # the study: ./mlflow.db, experiment "demo"
    .venv/bin/python docs/ui_screenshots.py [--store mlflow.db] [--experiment demo] [--out docs/images]

Starts `mlflow server` on the store (127.0.0.1, a free port), drives Debian's chromium with Playwright
(as tests/test_ui.py does) and writes parent-run.png (the study's answer: headline and per-language
gains with their intervals, in the parent run's description), run-tree.png (main, its arms, their
stages) and arm-comparison.png (Compare of the arms: coordinates, headline scores and gains).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

EXPAND = 'button[data-component-id$="runnamecellrenderer.tsx_46"]'  # a parent run's +/- in the runs table


def serve(store: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "mlflow", "server", "--app-name", "intertask"]
    command += ["--backend-store-uri", f"sqlite:///{store}"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(command, cwd=store.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return proc, uri
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"mlflow server on {store} did not start")


def shoot(uri: str, experiment: str, out: Path) -> None:
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"no experiment {experiment!r} in the store: run the study first (make demo)")
    (parent, *_) = client.search_runs(
        [found.experiment_id],
        "tags.`intertask.stage` = 'main' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)
        base = f"{uri}/#/experiments/{found.experiment_id}"
        open_page(
            page, f"{base}/runs/{parent.info.run_id}?workflowType=machine_learning", parent.info.run_name
        )
        page.get_by_text("Show more", exact=True).first.click()  # the description, folded after two lines
        page.locator("table", has_text="95 % interval").last.wait_for(state="visible")
        page.screenshot(path=str(out / "parent-run.png"), full_page=True)
        open_page(page, f"{base}/runs?workflowType=machine_learning", parent.info.run_name)
        page.locator("[role=row]", has_text=parent.info.run_name).first.locator(EXPAND).click()
        arms = page.locator("[role=row]", has_text="arm ")
        arms.first.wait_for()
        for i in range(arms.count()):
            arms.nth(i).locator(EXPAND).click()
        page.get_by_text("evaluate ").first.wait_for()
        page.locator("[role=row]", has_text=parent.info.run_name).first.scroll_into_view_if_needed()
        page.screenshot(path=str(out / "run-tree.png"))
        arms = client.search_runs(
            [found.experiment_id],
            f"tags.`intertask.stage` = 'arm' and tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
        )
        ids = json.dumps([r.info.run_id for r in sorted(arms, key=lambda r: r.info.run_name)])
        compare = f"{uri}/#/compare-runs?runs={ids}&experiments={json.dumps([found.experiment_id])}"
        open_page(page, f"{compare}&workflowType=machine_learning", "Run details")
        page.get_by_text("Visualizations", exact=True).first.click()  # folded: params and metrics come up
        page.get_by_text("headline_gain_low/", exact=False).first.wait_for(state="visible")
        page.set_viewport_size({"width": 1400, "height": 1400})
        page.screenshot(path=str(out / "arm-comparison.png"))
        browser.close()


def open_page(page, url: str, wait_for: str) -> None:
    """Go to `url`, wait for `wait_for`, and close the assistant's side panel if it opened."""
    page.goto(url, wait_until="load")
    page.get_by_text(wait_for, exact=True).first.wait_for()
    close = page.get_by_role("button", name="Close")  # the assistant's side panel, open on first visit
    if close.count():
        close.first.click()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", default="mlflow.db", help="the SQLite tracking store")
    parser.add_argument("--experiment", default="demo")
    parser.add_argument("--out", default="docs/images")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    proc, uri = serve(Path(args.store).resolve())
    try:
        shoot(uri, args.experiment, out)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"wrote {out / 'parent-run.png'}, {out / 'run-tree.png'} and {out / 'arm-comparison.png'}")


if __name__ == "__main__":
    main()
