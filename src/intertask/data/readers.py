"""Line- and record-oriented readers (TSV, CSV, JSONL, JSON, RTE XML, one-file-per-document folders).

A reader turns one file into records: a dict of fields plus where it came from.

Every reader fails with a DataError naming the file and the line (or member file) and what was expected;
none skips a broken line.
"""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from intertask.errors import DataError


@dataclass(frozen=True)
class Record:
    fields: dict[str, Any]  # strings, or lists of strings (tokens and tags, answers)
    file: str
    where: str  # "line 12", or a member file name for folder datasets


@dataclass(frozen=True)
class ReadOptions:
    header: bool = False  # first line names the columns
    columns: tuple[str, ...] = ()  # column names when there is no header
    encoding: str = "utf-8"
    delimiter: str | None = None  # tsv/csv: None = a tab / a comma
    quotechar: str | None = None  # tsv/csv: None = no quoting in tsv, '"' in csv


def decoded_lines(path: Path, encoding: str) -> list[str]:
    """The file's lines, decoded; DataError names the line of an undecodable byte."""
    if not path.is_file():
        raise DataError.at(path, "", "data file not found", expected="an existing file")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError.at(path, "", "data file is empty", expected="at least one record")
    lines = []
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            lines.append(line.decode(encoding))
        except UnicodeDecodeError as err:
            raise DataError.at(
                path,
                f"line {number}",
                f"cannot be decoded as {encoding} at byte {err.start}",
                got=line[max(0, err.start - 10) : err.start + 10],
                expected=f"{encoding} text (set the task's `encoding` if the file uses another)",
            ) from None
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    return lines


def tab_fields(path: Path, number: int, line: str, expected: str, count: int = 2) -> list[str]:
    """A line split at its tabs; DataError naming the file and line unless it has `count` fields."""
    parts = line.split("\t")
    if len(parts) != count:
        raise DataError.at(
            path, f"line {number}", "wrong number of tab-separated columns", len(parts), expected
        )
    return parts


def _column_names(
    path: Path, rows: list[tuple[int, list[str]]], options: ReadOptions
) -> tuple[list[str], int]:
    """Column names and the number of rows they consumed (1 for a header line)."""
    if options.header:
        return [c.strip() for c in rows[0][1]], 1
    if not options.columns:
        raise DataError.at(path, "", "no column names", expected="`header: true` or a `columns:` list")
    return list(options.columns), 0


def _records_from_rows(
    path: Path, rows: list[tuple[int, list[str]]], options: ReadOptions, sep: str, unquoted: bool = False
) -> list[Record]:
    """rows: (the line the row starts on, its fields); `unquoted`: read without a quote character."""
    names, skip = _column_names(path, rows, options)
    records = []
    for number, row in rows[skip:]:
        if row == [] or row == [""]:
            continue  # blank line
        if len(row) != len(names):
            quoted = unquoted and any("'" in f or '"' in f for f in row)
            raise DataError.at(
                path,
                f"line {number}",
                f"wrong number of {sep}-separated columns",
                got=len(row),
                expected=f"{len(names)} columns ({', '.join(names)})"
                + (
                    "; the line holds quotes: if its fields are quoted (a separator or a line break "
                    "inside quotes), declare the task's `quotechar` (e.g. quotechar: '\"')"
                    if quoted
                    else ""
                ),
            )
        records.append(Record(dict(zip(names, row, strict=True)), str(path), f"line {number}"))
    if not records:
        raise DataError.at(path, "", "no records after the header", expected="at least one record")
    return records


def read_tsv(path: Path, options: ReadOptions) -> list[Record]:
    """Tab-separated (or `delimiter`), by default without quoting: the XTREME files contain bare
    quotes. With a `quotechar`, quoted fields may hold separators and newlines (Blitzer's reviews)."""
    delimiter = options.delimiter or "\t"
    if options.quotechar is not None:
        return _read_quoted(path, options, delimiter, options.quotechar)
    lines = decoded_lines(path, options.encoding)
    rows = [(n, line.split(delimiter)) for n, line in enumerate(lines, 1)]
    return _records_from_rows(path, rows, options, _separator(delimiter), unquoted=True)


def read_csv(path: Path, options: ReadOptions) -> list[Record]:
    """RFC 4180 CSV (or another `delimiter` / `quotechar`); a record's line is the file line it starts
    on (a quoted field may span lines)."""
    return _read_quoted(path, options, options.delimiter or ",", options.quotechar or '"')


def _read_quoted(path: Path, options: ReadOptions, delimiter: str, quotechar: str) -> list[Record]:
    """Python's csv parser with the given separator and quote (a doubled quote inside a quoted field
    is one quote); errors name the file line the bad record starts on."""
    text = io.StringIO("\n".join(decoded_lines(path, options.encoding)))
    reader = csv.reader(text, delimiter=delimiter, quotechar=quotechar, strict=True)
    rows, consumed = [], 0
    try:
        for row in reader:
            rows.append((consumed + 1, row))
            consumed = reader.line_num
    except csv.Error as err:
        raise DataError.at(
            path,
            f"line {consumed + 1}",
            ("malformed CSV" if delimiter == "," else f"malformed {_separator(delimiter)}-separated file")
            + f": {err}",
            expected=f"fields separated by {delimiter!r}, quoted with {quotechar!r} where they hold one",
        ) from None
    return _records_from_rows(path, rows, options, _separator(delimiter))


def _separator(delimiter: str) -> str:
    return {"\t": "tab", ",": "comma"}.get(delimiter, repr(delimiter))


def flatten(obj: dict) -> dict:
    """Nested JSON objects as dotted fields, so a task names any field by its path: {"input":
    {"premise": ...}} -> input.premise; a list of objects gives one list per key ({"choices": [{"text":
    "a"}, {"text": "b"}]} -> choices.text = ["a", "b"]), as the hub's features do (SQuAD's
    answers.text)."""
    out = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in flatten(value).items()})
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            rows = [flatten(v) for v in value]
            for name in dict.fromkeys(k for row in rows for k in row):
                out[f"{key}.{name}"] = [row.get(name) for row in rows]
        else:
            out[key] = value
    return out


def read_jsonl(path: Path, options: ReadOptions) -> list[Record]:
    """One JSON object per line; nested objects are read as dotted fields (`flatten`)."""
    records = []
    for number, line in enumerate(decoded_lines(path, options.encoding), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError.at(
                path, f"line {number}", f"invalid JSON: {err.msg} at column {err.colno}", got=line[:60]
            ) from None
        if not isinstance(obj, dict):
            raise DataError.at(
                path, f"line {number}", "not a JSON object", got=obj, expected="{...} per line"
            )
        records.append(_json_record(obj, path, f"line {number}"))
    if not records:
        raise DataError.at(path, "", "no JSON records", expected="one JSON object per line")
    return records


def json_document(path: Path, encoding: str):
    """A whole JSON file, decoded; DataError names the line and column of a syntax error."""
    try:
        return json.loads("\n".join(decoded_lines(path, encoding)))
    except json.JSONDecodeError as err:
        raise DataError.at(
            path, f"line {err.lineno}, column {err.colno}", f"invalid JSON: {err.msg}"
        ) from None


def read_json(path: Path, options: ReadOptions) -> list[Record]:
    """A JSON array of objects, or an object holding one such array (`{"data": [...]}`); nested
    objects are read as dotted fields (`flatten`). A record is named by its position: `item 3`."""
    data = json_document(path, options.encoding)
    if isinstance(data, dict):
        arrays = [k for k, v in data.items() if isinstance(v, list)]
        if len(arrays) != 1:
            raise DataError.at(
                path,
                "",
                "a JSON object without exactly one array of records",
                got=sorted(data)[:10],
                expected='a JSON array of objects, or one object holding one ({"data": [...]})',
            )
        data = data[arrays[0]]
    if not isinstance(data, list) or not data:
        raise DataError.at(path, "", "no JSON records", expected="a non-empty JSON array of objects")
    records = []
    for number, obj in enumerate(data, start=1):
        if not isinstance(obj, dict):
            raise DataError.at(path, f"item {number}", "not a JSON object", got=obj, expected="{...}")
        records.append(_json_record(obj, path, f"item {number}"))
    return records


def _json_record(obj: dict, path: Path, where: str) -> Record:
    return Record({k: _as_value(v) for k, v in flatten(obj).items()}, str(path), where)


def _as_value(value: object) -> str | list[str]:
    if isinstance(value, list):
        return ["" if v is None else str(v) for v in value]
    return "" if value is None else str(value)


def read_rte_xml(path: Path, options: ReadOptions) -> list[Record]:
    """RTE 1-3: <pair value|entailment="..."><t>text</t><h>hypothesis</h></pair>."""
    if not path.is_file():
        raise DataError.at(path, "", "data file not found", expected="an existing file")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        line, col = err.position
        raise DataError.at(path, f"line {line}, column {col}", f"malformed XML: {err}") from None
    records = []
    for i, pair in enumerate(root.iter("pair"), start=1):
        label = pair.get("value") or pair.get("entailment")
        t, h = pair.findtext("t"), pair.findtext("h")
        if label is None or t is None or h is None:
            raise DataError.at(
                path, f"pair {i} (id {pair.get('id')})", "incomplete pair", expected="<t>, <h> and a label"
            )
        records.append(Record({"t": t.strip(), "h": h.strip(), "label": label}, str(path), f"pair {i}"))
    if not records:
        raise DataError.at(path, "", "no <pair> elements", expected="RTE XML")
    return records


def read_folders(path: Path, options: ReadOptions) -> list[Record]:
    """One document per file; the sub-folder name is the label (movie_reviews/pos/*.txt)."""
    if not path.is_dir():
        raise DataError.at(
            path, "", "data folder not found", expected="a folder with one sub-folder per label"
        )
    records = []
    for member in sorted(p for p in path.glob("*/*") if p.is_file()):
        try:
            text = member.read_text(encoding=options.encoding)
        except UnicodeDecodeError as err:
            raise DataError.at(
                member, "", f"cannot be decoded as {options.encoding} at byte {err.start}"
            ) from None
        records.append(
            Record({"text": " ".join(text.split()), "label": member.parent.name}, str(member), "file")
        )
    if not records:
        raise DataError.at(path, "", "no documents in label sub-folders", expected="<label>/<doc>.txt files")
    return records
