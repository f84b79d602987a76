"""A stage's checkpoints in its run's artifacts, for retries on another machine (a Ray node whose disk
the next node does not see).

Each local checkpoint (compute/checkpoints.py) is also uploaded into one of two artifact folders,
`checkpoint/a` and `checkpoint/b` in turn, and only then `checkpoint/latest.json` names it: a process
killed mid-upload leaves the previous one whole. A stage that finds no local checkpoint looks at the
earlier runs of the same content key (killed, failed, or still RUNNING with a dead process) and
downloads the newest one's latest checkpoint into its local folder; a finished stage deletes its own
(where the artifact store allows deleting).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from intertask.errors import redact
from intertask.tracking.connection import TAG
from intertask.tracking.runs import find_runs

FOLDER = "checkpoint"
POINTER = f"{FOLDER}/latest.json"


def wanted(setting: str, uri: str) -> bool:
    """tracking.checkpoint_artifacts: `always`, `never`, or `auto` -- with a tracking server (http,
    https), whose artifact store every node reaches while their disks may differ."""
    return setting == "always" or (setting == "auto" and uri.startswith(("http://", "https://")))


class Uploader:
    """Called with each checkpoint folder the stage saved: into the active run's artifacts."""

    def __init__(self) -> None:
        self.saved = 0

    def __call__(self, folder: Path, step: int) -> None:
        slot = "ab"[self.saved % 2]
        mlflow.log_artifacts(str(folder), f"{FOLDER}/{slot}")
        mlflow.log_dict({"slot": slot, "step": step, "name": folder.name}, POINTER)
        self.saved += 1


def fetch(experiment_id: str, key: str, local: Path, excluding: str | None = None) -> str | None:
    """Put the newest checkpoint an earlier, unfinished run of stage `key` uploaded into `local` (as
    a checkpoint folder: step-N and `latest`); returns that run's id, or None where there is none."""
    for found in find_runs(experiment_id, f"{TAG}stage_key", key):
        run_id = found.info.run_id
        if found.info.status == "FINISHED" or run_id == excluding:
            continue
        try:
            pointer = mlflow.artifacts.load_dict(f"runs:/{run_id}/{POINTER}")
        except (MlflowException, OSError, ValueError):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            got = Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=f"{FOLDER}/{pointer['slot']}", dst_path=tmp
                )
            )
            local.mkdir(parents=True, exist_ok=True)
            target = local / pointer["name"]
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(got, target)
        (local / "latest").write_text(pointer["name"])
        print(
            f"note: resuming from the checkpoint at step {pointer['step']} that run {run_id} left in the "
            "artifact store",
            file=sys.stderr,
        )
        return run_id
    return None


def remove(run_id: str) -> None:
    """Delete a finished stage's checkpoint artifacts (nothing to resume); said where the store
    cannot delete."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        uri = mlflow.get_run(run_id).info.artifact_uri
        get_artifact_repository(uri).delete_artifacts(FOLDER)
    except Exception as err:  # noqa: BLE001 -- only space is lost; said
        print(
            f"note: the checkpoint artifacts of run {run_id} stay ({redact(str(err))[:160]}): the artifact "
            "store does not delete",
            file=sys.stderr,
        )
