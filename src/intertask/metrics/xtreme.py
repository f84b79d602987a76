"""Aggregates across languages, and XTREME's aggregation as google-research/xtreme's evaluate.py computes
it (task scores over its language lists, group and overall means)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

MEAN_ALL = "mean_all"  # mean over every evaluated language


def mean_over_languages(values: Mapping[str, float], exclude: tuple[str, ...] = ()) -> float | None:
    """Unweighted mean over languages (each language counts once, as XTREME averages)."""
    kept = [v for lang, v in values.items() if lang not in exclude]
    return float(np.mean(kept)) if kept else None


XTREME_GROUPS = {
    "classification": ("pawsx", "xnli"),
    "structured_prediction": ("udpos", "panx"),
    "qa": ("xquad", "mlqa", "tydiqa"),
    "retrieval": ("bucc2018", "tatoeba"),
}
_XTREME_LANGUAGE_LISTS = {
    "pawsx": "de en es fr ja ko zh",
    "xnli": "ar bg de el en es fr hi ru sw th tr ur vi zh",
    "panx": "ar he vi id jv ms tl eu ml ta te af nl en de el bn hi mr ur fa fr it pt es bg ru ja ka ko th sw yo my "
    "zh kk tr et fi hu",
    "udpos": "af ar bg de el en es et eu fa fi fr he hi hu id it ja kk ko mr nl pt ru ta te th tl tr ur vi yo zh",
    "bucc2018": "de fr ru zh",
    "tatoeba": "ar he vi id jv tl eu ml ta te af nl de el bn hi mr ur fa fr it pt es bg ru ja ka ko th sw zh kk tr et "
    "fi hu",
    "xquad": "en es de el ru tr ar vi th zh hi",
    "mlqa": "en es de ar hi vi zh",
    "tydiqa": "en ar bn fi id ko ru sw te",
}
XTREME_LANGUAGES = {task: tuple(langs.split()) for task, langs in _XTREME_LANGUAGE_LISTS.items()}


def xtreme_task_score(task: str, per_language: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Per metric the mean over languages (`avg_<metric>`), and `avg_metric`: (EM + F1) / 2 for QA, else
    F1 when the task has it, else accuracy."""
    metric_names = {m for scores in per_language.values() for m in scores}
    out = {
        f"avg_{m}": float(np.mean([s[m] for s in per_language.values() if m in s]))
        for m in sorted(metric_names)
    }
    if task in XTREME_GROUPS["qa"]:
        out["avg_metric"] = (out["avg_exact_match"] + out["avg_f1"]) / 2
    elif "avg_f1" in out:
        out["avg_metric"] = out["avg_f1"]
    elif "avg_accuracy" in out:
        out["avg_metric"] = out["avg_accuracy"]
    return out


def xtreme_aggregate(task_metric: Mapping[str, float]) -> dict[str, float]:
    """Group scores for groups whose tasks are all present, and `overall` only when all nine are."""
    out = {}
    for group, tasks in XTREME_GROUPS.items():
        if all(t in task_metric for t in tasks):
            out[group] = float(np.mean([task_metric[t] for t in tasks]))
    every = [t for tasks in XTREME_GROUPS.values() for t in tasks]
    if all(t in task_metric for t in every):
        out["overall"] = float(np.mean([task_metric[t] for t in every]))
    return out
