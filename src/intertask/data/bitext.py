"""Sentence retrieval data: Tatoeba pair files and BUCC 2018 mining files.

Both yield records with a `side` field: "source" / "target" sentences ({side, id, text}) and "gold"
pairs ({side, source_id, target_id}).
"""

from __future__ import annotations

from pathlib import Path

from intertask.data.readers import ReadOptions, Record, decoded_lines, tab_fields
from intertask.errors import DataError


def read_tatoeba(path: Path, options: ReadOptions) -> list[Record]:
    """`tatoeba.xxx-eng.xxx` with its English side `tatoeba.xxx-eng.eng`: line i translates line i."""
    english = path.with_suffix(".eng")
    source, target = decoded_lines(path, options.encoding), decoded_lines(english, options.encoding)
    if len(source) != len(target):
        raise DataError.at(
            path,
            "",
            "pair files differ in length",
            {path.name: len(source), english.name: len(target)},
            "one English line per line",
        )
    records = []
    for i, (s, t) in enumerate(zip(source, target, strict=True)):
        records.append(Record({"side": "source", "id": str(i), "text": s}, str(path), f"line {i + 1}"))
        records.append(Record({"side": "target", "id": str(i), "text": t}, str(english), f"line {i + 1}"))
        records.append(
            Record({"side": "gold", "source_id": str(i), "target_id": str(i)}, str(path), f"line {i + 1}")
        )
    return records


def _id_lines(path: Path, options: ReadOptions, side: str) -> list[Record]:
    records = []
    for number, line in enumerate(decoded_lines(path, options.encoding), start=1):
        expected = "2 columns (id, sentence)" if side != "gold" else "2 columns (source id, English id)"
        parts = tab_fields(path, number, line, expected)
        if side == "gold":
            records.append(
                Record(
                    {"side": "gold", "source_id": parts[0], "target_id": parts[1].strip()},
                    str(path),
                    f"line {number}",
                )
            )
        else:
            records.append(
                Record({"side": side, "id": parts[0], "text": parts[1]}, str(path), f"line {number}")
            )
    return records


def read_bucc(path: Path, options: ReadOptions) -> list[Record]:
    """`xx-en.split.xx` (id<TAB>sentence), its `.en` side and the `.gold` pairs (xx id<TAB>en id)."""
    records = _id_lines(path, options, "source") + _id_lines(path.with_suffix(".en"), options, "target")
    gold = path.with_suffix(".gold")
    if not gold.is_file():
        raise DataError.at(
            gold,
            "",
            "gold file not found (BUCC is scored against gold pairs)",
            expected=f"{gold.name} next to {path.name}",
        )
    return records + _id_lines(gold, options, "gold")
