"""Sentence-per-record readers for token tagging: XTREME's `token<TAB>TAG` files, CoNLL-U, and the
whitespace-separated CoNLL-2002/2003 NER files. Each record holds parallel lists of tokens and tags."""

from __future__ import annotations

from pathlib import Path

from intertask.data.readers import ReadOptions, Record, decoded_lines, tab_fields
from intertask.errors import DataError

CONLLU_COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")


def _sentences(path: Path, encoding: str):
    """(first line number, [(line number, line), ...]) per blank-line-separated block."""
    block: list[tuple[int, str]] = []
    for number, line in enumerate(decoded_lines(path, encoding), start=1):
        if line.strip():
            block.append((number, line))
        elif block:
            yield block
            block = []
    if block:
        yield block


def _record(path: Path, block: list[tuple[int, str]], fields: dict[str, list[str]]) -> Record:
    return Record(fields, str(path), f"line {block[0][0]}")


def read_xtreme_tags(path: Path, options: ReadOptions) -> list[Record]:
    """XTREME UD-POS / PAN-X layout: one `token<TAB>TAG` per line, a blank line between sentences."""
    records = []
    for block in _sentences(path, options.encoding):
        tokens, tags = [], []
        for number, line in block:
            parts = tab_fields(path, number, line, "2 columns (token, tag)")
            tokens.append(parts[0])
            tags.append(parts[1].strip())
        records.append(_record(path, block, {"tokens": tokens, "tags": tags}))
    return records


def read_conllu(path: Path, options: ReadOptions) -> list[Record]:
    """CoNLL-U: ten tab-separated columns per word; comments (#), multiword-token ranges (1-2) and empty
    nodes (1.1) are skipped, so every record is the sentence's syntactic words."""
    records = []
    for block in _sentences(path, options.encoding):
        columns: dict[str, list[str]] = {name: [] for name in CONLLU_COLUMNS}
        for number, line in block:
            if line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != len(CONLLU_COLUMNS):
                raise DataError.at(
                    path,
                    f"line {number}",
                    "wrong number of tab-separated columns",
                    len(parts),
                    "10 CoNLL-U columns (ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC)",
                )
            if "-" in parts[0] or "." in parts[0]:
                continue  # multiword-token range or empty node
            for name, value in zip(CONLLU_COLUMNS, parts, strict=True):
                columns[name].append(value)
        if columns["form"]:
            records.append(_record(path, block, columns))
    return records


def read_conll(path: Path, options: ReadOptions) -> list[Record]:
    """CoNLL-2002/2003 NER: whitespace-separated columns; -DOCSTART- lines skipped.

    With `columns` declared, every line must have that many and each becomes a field; without, the token
    is the first column and the tag the last (fields `tokens` and `tags`), whatever the width.
    """
    names = list(options.columns)
    records, width = [], len(names) or None
    for block in _sentences(path, options.encoding):
        values: dict[str, list[str]] = {name: [] for name in (names or ["tokens", "tags"])}
        for number, line in block:
            parts = line.split()
            if parts[0] == "-DOCSTART-":
                continue
            width = width or len(parts)
            if len(parts) != width or width < 2:
                expected = f"{width} columns" + (
                    f" ({', '.join(names)})" if names else ", token first, tag last"
                )
                raise DataError.at(
                    path,
                    f"line {number}",
                    "wrong number of whitespace-separated columns",
                    len(parts),
                    expected,
                )
            for name, value in (
                zip(names, parts, strict=True) if names else (("tokens", parts[0]), ("tags", parts[-1]))
            ):
                values[name].append(value)
        if next(iter(values.values())):
            records.append(_record(path, block, values))
    return records
