"""SQuAD v1.1 JSON (SQuAD, XQuAD, MLQA, TyDiQA-GoldP): one record per question."""

from __future__ import annotations

from pathlib import Path

from intertask.data.readers import ReadOptions, Record, json_document
from intertask.errors import DataError


def _require(obj: object, key: str, kind: type | tuple[type, ...], path: Path, where: str):
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise DataError.at(
            path, where, f"missing or invalid {key!r}", type(value).__name__, f"{names} (SQuAD v1.1 JSON)"
        )
    return value


def read_squad_json(path: Path, options: ReadOptions) -> list[Record]:
    """Records {id, question, context, answers: [text], answer_starts: [int as str]} in file order."""
    document = json_document(path, options.encoding)
    articles = _require(document, "data", list, path, "top level")
    records = []
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(_require(article, "paragraphs", list, path, f"data[{a}]")):
            where = f"data[{a}].paragraphs[{p}]"
            context = _require(paragraph, "context", str, path, where)
            for q, qa in enumerate(_require(paragraph, "qas", list, path, where)):
                records.append(_question(path, f"{where}.qas[{q}]", context, qa))
    if not records:
        raise DataError.at(path, "data", "no questions", expected="articles with paragraphs and qas")
    return records


def _question(path: Path, where: str, context: str, qa: object) -> Record:
    key = str(_require(qa, "id", (str, int), path, where))
    question = _require(qa, "question", str, path, where)
    answers = _require(qa, "answers", list, path, where)
    texts, starts = [], []
    for i, answer in enumerate(answers):
        texts.append(_require(answer, "text", str, path, f"{where}.answers[{i}]"))
        start = _require(answer, "answer_start", int, path, f"{where}.answers[{i}]")
        if context[start : start + len(texts[-1])] != texts[-1]:
            raise DataError.at(
                path,
                f"{where}.answers[{i}] (id {key})",
                "answer text not found at answer_start",
                {"answer_start": start, "text": texts[-1]},
                "context[start:start+len(text)] == text",
            )
        starts.append(str(start))
    fields = {"id": key, "question": question, "context": context, "answers": texts, "answer_starts": starts}
    return Record(fields, str(path), f"question {key}")
