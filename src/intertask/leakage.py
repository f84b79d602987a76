"""The leakage guard for line-parallel datasets.

XNLI's and PAWS-X's files of different languages are translations of the same examples, line by line.
A model trained on English line i has seen the meaning of line i in every language, so zero-shot
evaluation must leave out every line a training stage used (train and dev, since dev picked the
epoch). Each training stage records the uids it used, merged with those of the model it started from;
evaluation drops them.
"""

from __future__ import annotations

import numpy as np

from intertask.tasks.examples import ExampleSet, select

Seen = dict[str, dict]  # "<task>|<source split>" -> {task, source, parallel, languages, uids}


def record(seen: Seen, data: ExampleSet, parallel: bool) -> Seen:
    """`seen` plus the examples of `data` (a new mapping; inputs are not modified)."""
    key = f"{data.task}|{data.source}"
    entry = seen.get(
        key, {"task": data.task, "source": data.source, "parallel": parallel, "languages": [], "uids": []}
    )
    uids = sorted(set(entry["uids"]) | {int(u) for u in data.uids})
    languages = sorted(set(entry["languages"]) | {data.language})
    return {**seen, key: {**entry, "uids": uids, "languages": languages}}


def merge(*records: Seen) -> Seen:
    out: Seen = {}
    for rec in records:
        for key, entry in rec.items():
            if key in out:
                entry = {
                    **entry,
                    "uids": sorted(set(out[key]["uids"]) | set(entry["uids"])),
                    "languages": sorted(set(out[key]["languages"]) | set(entry["languages"])),
                }
            out[key] = entry
    return out


def exclude_seen(data: ExampleSet, seen: Seen) -> tuple[ExampleSet, int]:
    """Drop examples whose uid a training stage used: for any language of a parallel task, and for the
    training language itself of any task (the same rows). Returns the kept set and the number dropped."""
    entry = seen.get(f"{data.task}|{data.source}")
    if entry is None or not (entry["parallel"] or data.language in entry["languages"]):
        return data, 0
    used = np.isin(data.uids, np.array(entry["uids"], dtype=np.int64))
    if not used.any():
        return data, 0
    return select(data, data.uids[~used], "leakage-guard"), int(used.sum())
