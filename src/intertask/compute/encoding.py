"""Tokenization with an on-disk cache keyed by content.

Cache key = task type and version + data fingerprint (files and selected examples) + tokenizer
fingerprint + max_length. Files are .npz (no pickle), written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from intertask.tasks.base import EncodedSet, ExampleSet, TaskType

_TOKENIZER_DIGESTS: dict[int, str] = {}
_SEP = "|"


def tokenizer_fingerprint(tokenizer) -> str:
    key = id(tokenizer)
    if key not in _TOKENIZER_DIGESTS:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
        extra = f"{type(tokenizer).__name__}|{tokenizer.all_special_tokens}|{tokenizer.padding_side}"
        _TOKENIZER_DIGESTS[key] = hashlib.sha256((text + extra).encode()).hexdigest()
    return _TOKENIZER_DIGESTS[key]


def _cache_file(
    cache_dir: Path, task: TaskType, data: ExampleSet, tokenizer, max_length: int, extra: str
) -> Path:
    parts = [
        type(task).__name__,
        str(task.version),
        data.fingerprint,
        tokenizer_fingerprint(tokenizer),
        str(max_length),
        extra,
    ]
    return cache_dir / f"{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:32]}.npz"


def _put_ragged(arrays: dict, key: str, rows: list[np.ndarray]) -> None:
    arrays[f"{key}{_SEP}flat"] = np.concatenate([r.ravel() for r in rows]) if rows else np.zeros(0, np.int64)
    arrays[f"{key}{_SEP}shapes"] = np.array([r.shape for r in rows], np.int64).reshape(len(rows), -1)


def _get_ragged(z, key: str) -> list[np.ndarray]:
    flat, shapes = z[f"{key}{_SEP}flat"], z[f"{key}{_SEP}shapes"]
    sizes = np.prod(shapes, axis=1) if len(shapes) else np.zeros(0, np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    return [flat[starts[i] : starts[i + 1]].reshape(shapes[i]) for i in range(len(shapes))]


def _save(path: Path, encoded: EncodedSet) -> None:
    arrays = {"uids": encoded.uids}
    for name, rows in encoded.inputs.items():
        _put_ragged(arrays, f"inputs{_SEP}{name}", rows)
    for name, rows in encoded.meta.items():
        _put_ragged(arrays, f"meta{_SEP}{name}", rows)
    for name, target in encoded.targets.items():
        if isinstance(target, np.ndarray):
            arrays[f"target{_SEP}{name}"] = target
        else:
            _put_ragged(arrays, f"targets{_SEP}{name}", target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _load(path: Path) -> EncodedSet:
    with np.load(path, allow_pickle=False) as z:
        groups: dict[str, dict] = {"inputs": {}, "meta": {}, "targets": {}}
        for key in z.files:
            parts = key.split(_SEP)
            if parts[0] == "target":
                groups["targets"][parts[1]] = z[key]
            elif parts[0] in groups and parts[2] == "flat":
                groups[parts[0]][parts[1]] = _get_ragged(z, f"{parts[0]}{_SEP}{parts[1]}")
        return EncodedSet(groups["inputs"], groups["targets"], z["uids"], groups["meta"])


def encode(
    task: TaskType, data: ExampleSet, tokenizer, max_length: int, cache_dir: Path | None, **options
) -> EncodedSet:
    """Tokenize `data` for `task`, reusing a cached result for the same content and tokenizer."""
    if cache_dir is None:
        return task.encode(data, tokenizer, max_length, **options)
    path = _cache_file(cache_dir, task, data, tokenizer, max_length, repr(sorted(options.items())))
    if path.is_file():
        cached = _load(path)
        if set(cached.uids.tolist()) == set(data.uids.tolist()):  # the key covers the selection already
            return cached
    encoded = task.encode(data, tokenizer, max_length, **options)
    _save(path, encoded)
    return encoded
