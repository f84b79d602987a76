"""The leakage guard: evaluation leaves out what training saw.

XNLI's and PAWS-X's files of different languages are translations of the same examples, line by line.
A model trained on English line i has seen the meaning of line i in every language, so zero-shot
evaluation must leave out every line a training stage used (train and dev, since dev picked the
epoch). Each training stage records the uids it used, merged with those of the model it started from,
and a digest of each example's content; evaluation drops an example whose uid was used (same source
set: any language of a parallel task, else the training language) or whose content a training stage
of the same task saw under any split name (one file declared as both `train:` and `test:`).
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
    digests = sorted(set(entry.get("digests", ())) | set(data.content_digests))
    return {**seen, key: {**entry, "uids": uids, "languages": languages, "digests": digests}}


def merge(*records: Seen) -> Seen:
    out: Seen = {}
    for rec in records:
        for key, entry in rec.items():
            if key in out:
                entry = {
                    **entry,
                    "uids": sorted(set(out[key]["uids"]) | set(entry["uids"])),
                    "languages": sorted(set(out[key]["languages"]) | set(entry["languages"])),
                    "digests": sorted(set(out[key].get("digests", ())) | set(entry.get("digests", ()))),
                }
            out[key] = entry
    return out


def exclude_seen(data: ExampleSet, seen: Seen) -> tuple[ExampleSet, int]:
    """Drop examples a training stage used (see `left_out`). Returns the kept set and the number
    dropped."""
    kept, reasons = left_out(data, seen)
    return kept, sum(reasons.values())


def left_out(data: ExampleSet, seen: Seen) -> tuple[ExampleSet, dict[str, int]]:
    """Drop examples a training stage used: by uid in the same source set (for any language of a
    parallel task, and for the training language itself of any task: the same rows), and by content
    under any source of the same task. Returns the kept set and the number dropped per reason (an
    example found both ways counts under the first). (Records written before content digests were kept
    are matched by uid only.)"""
    by_uid = np.zeros(len(data), dtype=bool)
    entry = seen.get(f"{data.task}|{data.source}")
    if entry is not None and (entry["parallel"] or data.language in entry["languages"]):
        by_uid = np.isin(data.uids, np.array(entry["uids"], dtype=np.int64))
    by_content = np.zeros(len(data), dtype=bool)
    digests = {d for e in seen.values() if e["task"] == data.task for d in e.get("digests", ())}
    if digests:
        by_content = np.array([d in digests for d in data.content_digests], dtype=bool)
    used = by_uid | by_content
    reasons = {
        REASONS["uid"]: int(by_uid.sum()),
        REASONS["content"]: int((by_content & ~by_uid).sum()),
    }
    reasons = {k: n for k, n in reasons.items() if n}
    if not used.any():
        return data, {}
    return select(data, data.uids[~used], "leakage-guard"), reasons


REASONS = {
    "uid": "the same line of the source set was used in training (any language of a parallel set)",
    "content": "the same text was seen in training under another split or file",
}


def notices(data: ExampleSet, reasons: dict[str, int]) -> list[tuple[str, str]]:
    """(what, line) per reason examples of `data` are left out: what the evaluation stage records, and
    what `intertask validate` foresees from the planned sets."""
    return [
        (
            f"leakage_guard.{data.task}.{data.language}",
            f"leakage guard: {n} of {len(data)} {data.task} {data.split} examples in {data.language} "
            f"left out: {why}",
        )
        for why, n in reasons.items()
    ]
