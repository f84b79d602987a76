"""Where data lives: one setting (env INTERTASK_DATA or the config's data.root), default ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "INTERTASK_DATA"
DEFAULT_ROOT = "../shared/data"
_CHECKOUT = Path(__file__).resolve().parents[3]  # repository root when run from a source checkout


def data_root(configured: str | None = None) -> Path:
    """The data root: the config value, else $INTERTASK_DATA, else ../shared/data.

    A relative default is looked up from the working directory first and then from the source checkout,
    so tests and `mlflow run` find ../shared/data whichever folder they start in.
    """
    value = configured or os.environ.get(DATA_ENV)
    if value:
        return Path(value).expanduser().resolve()
    for base in (Path.cwd(), _CHECKOUT):
        candidate = (base / DEFAULT_ROOT).resolve()
        if candidate.is_dir():
            return candidate
    return (Path.cwd() / DEFAULT_ROOT).resolve()
