"""`mlflow server --app-name intertask` (and `mlflow ui --app-name intertask`): MLflow's own tracking
server, unchanged but for the page it serves first, so that its UI opens an experiment on its runs.

How MLflow 3.17's UI chooses (read in its bundle, mlflow/server/js): every experiment page is shown in
the view `workflowType` names -- the URL's `?workflowType=` if given, else the browser's
localStorage key `mlflow.workflowType_v1`, else "genai". The experiment's `mlflow.experimentKind` tag
is not read while the UI's feature flag that ties the kind to the view is on (it is, in 3.17). So a
fresh browser lands on the GenAI overview from the home page and from a bare experiment URL, whatever
the experiment says. This app adds one line to index.html that stores "machine_learning" under that
key when the browser has no choice stored yet: a user who switches to the GenAI view keeps it.

The links intertask prints carry `?workflowType=machine_learning` as well, which any server honours.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

WORKFLOW_KEY = "mlflow.workflowType_v1"
DEFAULT_VIEW = "machine_learning"
APP_NAME = "intertask"  # the entry point in pyproject's [project.entry-points."mlflow.app"]

_KEY, _VALUE = json.dumps(WORKFLOW_KEY), json.dumps(json.dumps(DEFAULT_VIEW))  # JS literals
DEFAULT_VIEW_SCRIPT = (
    f"<script>try{{const s=window.localStorage;if(!s.getItem({_KEY})){{s.setItem({_KEY},{_VALUE})}}}}"
    "catch(e){}</script>"
)


def index_html(original: str) -> str:
    """MLflow's index.html with the default-view script first in <head> (before the UI's bundle)."""
    return original.replace("<head>", f"<head>{DEFAULT_VIEW_SCRIPT}", 1)


def create_app():
    """The app factory `mlflow server --app-name intertask` calls: MLflow's Flask app with its index
    view replaced; wrapped in MLflow's FastAPI app when the server runs under uvicorn (its default)."""
    from flask import Response
    from mlflow.server import app

    index = Path(app.static_folder) / "index.html"

    def serve():
        if not index.is_file():  # a source install of MLflow without its built UI: MLflow's own answer
            return original()
        return Response(index_html(index.read_text(encoding="utf-8")), mimetype="text/html")

    original = app.view_functions["serve"]
    app.view_functions["serve"] = serve
    if os.environ.get("_MLFLOW_SGI_NAME") == "uvicorn":
        from mlflow.server.fastapi_app import create_fastapi_app

        return create_fastapi_app(app)
    return app
