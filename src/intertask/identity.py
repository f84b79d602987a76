"""What makes two stages the same: one content hash, the code version, a base model's identity, the
inputs that shape a training stage (shared by a study's job keys and a checkpoint's resume key), the
table of stage kinds, and the tags that place a run in a study cell."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from intertask import models
from intertask.config import ExperimentConfig
from intertask.schema import to_dict

CELL_TAG = "intertask.cell."  # + model | intermediate | target | seed


def tags_of_cell(model: str, intermediate: str, target: str, seed: int) -> dict[str, str]:
    return {
        f"{CELL_TAG}model": model,
        f"{CELL_TAG}intermediate": intermediate,
        f"{CELL_TAG}target": target,
        f"{CELL_TAG}seed": str(seed),
    }


def cell_tags(tags: dict) -> dict[str, str]:
    """The tags of a run that place it in a study cell."""
    return {k: v for k, v in tags.items() if k.startswith(CELL_TAG)}


def content_hash(value: object) -> str:
    """sha256 of a value's canonical JSON (keys sorted, anything else as its str)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class StageKind:
    job: str  # the job kind in a study's graph
    stage: str  # the config section it trains from (intermediate | target)
    alias: str  # the registry alias its model gets


STAGE_KINDS = {
    "intermediate": StageKind("intermediate", "intermediate", "intermediate"),
    "finetune": StageKind("finetune", "target", "target"),
}
BY_STAGE = {kind.stage: kind for kind in STAGE_KINDS.values()}


@lru_cache(maxsize=1)
def code_version() -> str:
    """sha256 of intertask's own source files and task declarations: a changed line changes every key."""
    root = Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".yaml")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def model_identity(name_or_path: str) -> str:
    """What a base model is: the offline model's source digest, a local folder's config and weight
    sizes, or the hub id."""
    if name_or_path in models.OFFLINE_MODELS:
        return f"{name_or_path}:{models.OFFLINE_MODELS.get(name_or_path).digest()}"
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        files = sorted((p.name, p.stat().st_size) for p in path.iterdir() if p.is_file())
        config = (path / "config.json").read_text() if (path / "config.json").is_file() else ""
        return content_hash([config, files])
    return name_or_path


def training_inputs(config: ExperimentConfig, kind: str) -> dict:
    """What shapes a training stage's model (kind: intermediate | finetune), shared by the job key of a
    study and the resume key of a checkpoint: not evaluation, report or tracking settings."""
    stage = getattr(config, STAGE_KINDS[kind].stage)
    return {
        "kind": kind,
        "model": model_identity(config.model.name_or_path),
        "model_config": to_dict(config.model),
        "peft": to_dict(config.peft) if config.peft else None,
        "seed": config.seed,
        "stage": to_dict(replace(stage, init=None)) if stage else None,
        "fractions": to_dict(config.data.split_fractions),
        "split_seed": config.split_seed,
        "code": code_version(),
    }


def metric_part(label: str) -> str:
    """A label as a metric-key part: MLflow keys allow letters, digits, _ - . / and space; a zero-shot
    cell (no target) reads "zero-shot"."""
    from pathlib import Path

    short = Path(label).name if "/" in label else label
    return "".join(c if c.isalnum() or c in "_-." else "." for c in short) or "zero-shot"
