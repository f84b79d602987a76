"""A trained model saved as the weights that changed from its base model, and the whole model put back
together when it is loaded (the folder format; tracking/registry.py decides when it is used:
`tracking.log_weights: changed`).

A stage that freezes the word embeddings (96M of multilingual-e5-small's 118M parameters) or trains a
PEFT adapter (merged into a few projection matrices) leaves most tensors bit-identical to the base
model's. The saved folder keeps every tensor that differs (exact comparison: nothing is rounded) in
`changed.safetensors` and, in `base.json`, the base model's name, which base tensor each omitted one
is, and a SHA-256 of those base tensors' bytes. Loading (`load`) fetches the base model (the hub, a local
folder or an offline model, as training did) into the saved architecture, checks the digest -- a
different base gives a clear error, never a silently different model -- and puts the changed tensors
over it in memory: no whole copy is written to disk for any model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from intertask import pretrained
from intertask.errors import ModelError, Problem

BASE_FILE = "base.json"
CHANGED_FILE = "changed.safetensors"
WEIGHTS_FILE = "model.safetensors"


def base_tensors(base: str) -> dict[str, torch.Tensor]:
    """The base model's own tensors, as training loaded them (hub id, folder or offline name)."""
    from transformers import AutoModel

    from intertask.compute.quiet import quiet_transformers

    quiet_transformers()
    return AutoModel.from_pretrained(pretrained.resolve(base)).state_dict()


def _base_key(key: str, base: dict[str, torch.Tensor]) -> str | None:
    """The base tensor a trained model's tensor started as: the same name, or the name under the head
    model's encoder prefix (`roberta.encoder...` is the base model's `encoder...`)."""
    for candidate in (key, key.split(".", 1)[-1]):
        if candidate in base:
            return candidate
    return None


def _digest(tensors: list[tuple[str, torch.Tensor]]) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        h.update(name.encode())
        h.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Changes:
    """A saved model compared with its base: the tensors to keep, and for each omitted one the base
    tensor it equals (with the SHA-256 of those)."""

    folder: Path
    base: str
    kept: dict[str, torch.Tensor]
    omitted: dict[str, str]
    digest: str
    bytes_omitted: int

    def sizes(self) -> dict[str, int]:
        return {
            "tensors_kept": len(self.kept),
            "tensors_omitted": len(self.omitted),
            "bytes_kept": sum(t.numel() * t.element_size() for t in self.kept.values()),
            "bytes_omitted": self.bytes_omitted,
        }


def changes(folder: Path, base: str) -> Changes:
    """Which tensors of `folder` (a saved model) differ from `base`'s (bit-exact comparison)."""
    trained = load_file(folder / WEIGHTS_FILE)
    reference = base_tensors(base)
    kept, omitted = {}, {}
    for key, tensor in trained.items():
        match = _base_key(key, reference)
        same = match is not None and reference[match].shape == tensor.shape
        if same and reference[match].dtype == tensor.dtype and torch.equal(reference[match], tensor):
            omitted[key] = match
        else:
            kept[key] = tensor
    digest = _digest([(match, reference[match]) for match in omitted.values()])
    omitted_bytes = sum(trained[k].numel() * trained[k].element_size() for k in omitted)
    return Changes(folder, base, kept, omitted, digest, omitted_bytes)


def pinned(base: str) -> str:
    """A hub base as `org/model@<commit>` where the commit is known (a base later updated on the hub
    still loads as trained); folders and offline models as they are."""
    repo = pretrained.split_revision(base)[0]
    if base in pretrained.OFFLINE_MODELS or Path(base).expanduser().exists():
        return base
    commit = pretrained.hub_commit(base)
    return f"{repo}@{commit}" if commit else base


def write_slim(found: Changes, out: Path) -> None:
    """The compared folder copied to `out` with only its kept tensors, and base.json."""
    shutil.copytree(found.folder, out, ignore=shutil.ignore_patterns(WEIGHTS_FILE), dirs_exist_ok=True)
    tensors = {k: v.contiguous() for k, v in found.kept.items()}
    save_file(tensors, out / CHANGED_FILE, metadata={"format": "pt"})
    saved = {"base": pinned(found.base), "omitted": found.omitted, "sha256": found.digest}
    (out / BASE_FILE).write_text(json.dumps(saved, indent=1, sort_keys=True))


def slim_copy(folder: Path, base: str, out: Path) -> dict[str, int]:
    """`folder` (a saved model) copied to `out` with only the tensors that differ from `base`'s;
    returns the tensor counts and bytes kept and omitted."""
    found = changes(folder, base)
    write_slim(found, out)
    return found.sizes()


def is_slim(folder: Path) -> bool:
    return (folder / BASE_FILE).is_file() and (folder / CHANGED_FILE).is_file()


def load(cls, source: str | Path, **kwargs):
    """`cls.from_pretrained(source, **kwargs)`, for a slim folder too, without a whole copy on disk:
    the base model's weights loaded into the folder's architecture (its config.json), checked against
    the SHA-256 saved in base.json, then the changed tensors put over them in memory. `cls` may be the
    bare encoder (AutoModel) of a slim head model: the head's tensors are then left out."""
    folder = Path(source)
    if not is_slim(folder):
        return cls.from_pretrained(str(source), **kwargs)
    from transformers import AutoConfig

    saved = json.loads((folder / BASE_FILE).read_text())
    config = AutoConfig.from_pretrained(str(folder), **kwargs)
    model = cls.from_pretrained(pretrained.resolve(saved["base"]), config=config)
    state = model.state_dict()
    prefix = model.base_model_prefix + "."
    bare = getattr(model, model.base_model_prefix, model) is model

    def placed(key: str) -> str | None:  # a saved tensor's name in this model (a bare encoder's: no prefix)
        if key in state:
            return key
        inner = key.removeprefix(prefix)
        return inner if bare and inner != key and inner in state else None

    places = {k: placed(k) for k in saved["omitted"]}  # None: a tensor this architecture lacks
    values = {k: state[place] for k, place in places.items() if place}
    if len(values) < len(places):
        # tensors this architecture lacks (a tagger saved with the shared encoder's pooler): not used
        # by this model, but part of the digest -- read from the bare base model
        bare_base = base_tensors(saved["base"])
        values |= {k: bare_base[b] for k, b in saved["omitted"].items() if k not in values and b in bare_base}
    missing = sorted(set(saved["omitted"]) - set(values))
    found = [(saved["omitted"][k], tensor) for k, tensor in values.items()]
    key = _checked_key(saved["base"], saved["omitted"])
    known = _checked(key) == saved["sha256"]  # these base files were checked before: not hashed again
    if missing or not (known or _remember(key, _digest(found)) == saved["sha256"]):
        problem = f"tensors missing: {missing[:3]}" if missing else "its tensors differ (SHA-256)"
        raise _base_error(folder, saved["base"], problem)
    changed = {placed(k): v for k, v in load_file(folder / CHANGED_FILE).items() if placed(k)}
    # a saved tensor with no place in the model is left out, as from_pretrained leaves out unexpected
    # keys (a tagger saved with the shared encoder's pooler); a head tensor the file lacks is an error
    uncovered = sorted(set(state) - set(changed) - set(places.values()))
    if uncovered and not bare:
        raise _base_error(folder, saved["base"], f"tensors of the model in neither file: {uncovered[:3]}")
    model.load_state_dict(changed, strict=False)
    return model


CHECKED = "base_tensor_digests.json"  # in the cache folder: base files' identity -> their tensors' SHA-256


def _checked_key(base: str, omitted: dict[str, str]) -> str | None:
    """What the digest of a base model's omitted tensors depends on: its weight files (path, size,
    modification time) and the tensors' names; None for a base that is no local folder (a hub name
    not resolved to files: hashed every time)."""
    folder = Path(pretrained.resolve(base))
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) if folder.is_dir() else []
    if not files:
        return None
    identity = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return hashlib.sha256(json.dumps([identity, sorted(omitted.items())]).encode()).hexdigest()


def _checked(key: str | None) -> str | None:
    """The digest an earlier load computed for the same unchanged base files (0.46 s of SHA-256 over
    e5-small's 384 MB of word embeddings saved on every later load)."""
    return pretrained.read_book(CHECKED).get(key) if key is not None else None


def _remember(key: str | None, digest: str) -> str:
    if key is not None:
        with contextlib.suppress(OSError):  # a read-only cache (a serving container): checked next time
            pretrained.write_book(CHECKED, pretrained.read_book(CHECKED) | {key: digest})
    return digest


def _base_error(folder: Path, base: str, problem: str) -> ModelError:
    return ModelError(
        [
            Problem(
                str(folder / BASE_FILE),
                "base",
                f"the base model this model was logged against is not the one found: {problem}",
                base,
                "the base model (same revision) the stage trained from",
            )
        ]
    )
