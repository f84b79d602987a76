"""The code MLflow logs with every intertask model (models from code): loading the model runs this
file, which names the model class; nothing is pickled. The class lives in intertask.tracking.serving;
the model carries intertask's source as one file, code/intertask.zip (one upload, not one per module),
unpacked on first load beside it -- or in a temporary folder where the model's folder is read-only --
and put first on sys.path, so that a model loads where intertask is not installed."""

import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from mlflow.models import set_model


def _unpack_own_code() -> None:
    if "intertask" in sys.modules:  # the process that logged it: its intertask is this code
        return
    packed = Path(__file__).resolve().parent / "code" / "intertask.zip"
    if not packed.is_file():
        return
    target = packed.with_suffix("")
    if not (target / "intertask" / "__init__.py").is_file():
        try:
            scratch = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=packed.parent))
        except OSError:  # a read-only model folder
            target = Path(tempfile.mkdtemp(prefix="intertask-model-code-"))
            scratch = None
        with zipfile.ZipFile(packed) as archive:
            archive.extractall(scratch or target)
        if scratch is not None:
            try:
                scratch.rename(target)  # atomic: two processes loading at once leave one copy
            except OSError:  # the other one was first
                shutil.rmtree(scratch, ignore_errors=True)
    sys.path.insert(0, str(target))


_unpack_own_code()

from intertask.tracking.serving import TaskModel  # noqa: E402 -- after its code is on sys.path

set_model(TaskModel())
