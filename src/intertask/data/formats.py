"""Every format a task declaration can name, and the reader for it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from intertask.data.bitext import read_bucc, read_tatoeba
from intertask.data.readers import (
    ReadOptions,
    Record,
    read_csv,
    read_folders,
    read_json,
    read_jsonl,
    read_rte_xml,
    read_tsv,
)
from intertask.data.sequences import read_conll, read_conllu, read_xtreme_tags
from intertask.data.squad import read_squad_json

READERS: dict[str, Callable[[Path, ReadOptions], list[Record]]] = {
    "tsv": read_tsv,
    "csv": read_csv,
    "jsonl": read_jsonl,
    "json": read_json,
    "rte_xml": read_rte_xml,
    "folders": read_folders,
    "xtreme_tags": read_xtreme_tags,
    "conllu": read_conllu,
    "conll": read_conll,
    "squad_json": read_squad_json,
    "tatoeba": read_tatoeba,
    "bucc": read_bucc,
}
