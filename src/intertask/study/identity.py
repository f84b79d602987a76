"""What makes two stages the same: one content hash, the code version, a base model's identity, the
inputs that shape a training stage (shared by a study's job keys and a checkpoint's resume key), the
table of stage kinds, and the tags that place a run in a study cell."""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import yaml

from intertask import pretrained
from intertask.compute import machine
from intertask.config import ExperimentConfig
from intertask.config.schema import to_dict
from intertask.data.fingerprint import file_fingerprint

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
    """sha256 of what intertask's own code and task declarations DO: each module's syntax tree without
    its docstrings (comments are not in it), each YAML file's data without its comments. A changed
    line of code changes every key; a documentation edit changes none."""
    root = Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".yaml")):
        h.update(str(path.relative_to(root)).encode())
        h.update(source_digest(path.read_text(encoding="utf-8"), path.suffix).encode())
    return h.hexdigest()


def source_digest(text: str, suffix: str) -> str:
    """What a source file does, as text: a Python module's AST dump without docstrings, a YAML file's
    data as canonical JSON."""
    if suffix == ".yaml":
        return json.dumps(yaml.safe_load(text), sort_keys=True, default=str)
    tree = ast.parse(text)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def model_identity(name_or_path: str) -> str:
    """What a base model is: the offline model's source digest, a local folder's file contents (a
    model retrained in place with the same shapes gets a new identity), or the hub id with the commit
    its revision stands for (asked of the hub, else read from the local cache; `unresolved` when
    neither knows)."""
    if name_or_path in pretrained.OFFLINE_MODELS:
        return f"{name_or_path}:{pretrained.OFFLINE_MODELS.get(name_or_path).digest()}"
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return content_hash(
            sorted(
                (p.name, stored_digest(p))
                for p in path.iterdir()
                if p.is_file() and not p.name.startswith(".")
            )
        )
    commit = pretrained.hub_commit(name_or_path)  # a model updated on the hub gets a new key
    return f"{pretrained.split_revision(name_or_path)[0]}@{commit or 'unresolved'}"


DIGESTS = "file_digests.json"  # in the cache folder: path -> [size, mtime_ns, sha256]


def stored_digest(path: Path) -> str:
    """sha256 of a file's bytes, kept in the cache folder by path, size and modification time, so that
    a model's weights are hashed once, not on every plan of every study that starts from them."""
    stat = path.stat()
    known = pretrained.read_book(DIGESTS)
    key, seen = str(path.resolve()), [stat.st_size, stat.st_mtime_ns]
    if key in known and known[key][:2] == seen:
        return known[key][2]
    digest = file_fingerprint(path)
    known[key] = [*seen, digest]
    pretrained.write_book(DIGESTS, known)  # atomic: concurrent plans never read half a file
    return digest


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
        "precision": resolved_precision(stage.training.precision) if stage else None,
        "code": code_version(),
    }


def resolved_precision(requested: str) -> str:
    """A stage's precision as its key holds it: an explicit choice as it is; `auto` with the facts it
    resolves on here (the GPU models, or native bf16 and oneDNN's cap on a CPU: compute/machine.py),
    so that a bf16 stage is not reused on a machine where auto trains fp32. Read without torch: a
    re-run of a finished study loads no model library."""
    if requested != "auto":
        return requested
    return f"auto@{machine.auto_precision_facts()}"


def metric_part(label: str) -> str:
    """A label as a metric-key part: MLflow keys allow letters, digits, _ - . / and space; a zero-shot
    cell (no target) reads "zero-shot"."""
    from pathlib import Path

    short = Path(label).name if "/" in label else label
    return "".join(c if c.isalnum() or c in "_-." else "." for c in short) or "zero-shot"
