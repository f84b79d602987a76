"""Transferability predicted before a study trains (`report.predict_first`): the estimates for every
(model, intermediate, target), logged on the study's parent before the first stage starts."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import pandas as pd

from intertask import tracking
from intertask.config import ExperimentConfig
from intertask.errors import DataError, Problem
from intertask.study.planning import Plan
from intertask.study.workspace import Workspace


@dataclass(frozen=True)
class Foresight:
    """`predict` before training: the estimates, and with train_top_k the narrowed config."""

    estimates: pd.DataFrame
    seconds: float
    config: ExperimentConfig
    skipped: tuple[tuple[str, str], ...] = ()  # (intermediate, target) pairs not trained


def intermediate_models(ws: Workspace, study: Plan) -> dict[tuple[str, str], list[str]]:
    """(model, intermediate label) -> references of this study's finished intermediate stages that
    logged their model (found by content key: the same config, data and code)."""
    out: dict[tuple[str, str], list[str]] = {}
    if ws.known_experiment() is None:
        return out
    for job in study.jobs:
        if job.kind == "intermediate":
            found = tracking.finished_stage(ws.experiment(), study.keys[job.id])
            if found is not None and tracking.holds_model(found):
                label = job.cell.intermediate_label
                out.setdefault((job.cell.model, label), []).append(tracking.reference_of(found))
    return out


def predict_first(ws: Workspace, study: Plan, done_before: bool) -> Foresight:

    from intertask.transferability import predict

    cfg = ws.cfg
    start = time.perf_counter()
    estimates = predict.estimate(ws, intermediate_models(ws, study) if done_before else {})
    seconds = time.perf_counter() - start
    k = cfg.predict.train_top_k
    if not k:
        return Foresight(estimates, seconds, cfg)
    by = cfg.predict.rank_by
    rows = estimates[estimates.estimator == by]
    if rows.empty or rows.value.isna().any():
        missing = sorted(set(rows[rows.value.isna()].target)) or ["every target"]
        raise DataError(
            [
                Problem(
                    "<config>",
                    "predict.rank_by",
                    f"no {by} estimate for {', '.join(missing)} before training",
                    by,
                    "an estimator computed without training (embedding_similarity, vocabulary_overlap, "
                    "neg_js_divergence, neg_mmd), or logme_intermediate once the intermediate models exist",
                )
            ]
        )
    kept = predict.top_k(estimates, by, k)
    pairs = {("+".join(inter), target) for _, inter, target in predict.triples(cfg)}
    keep = {(label, target) for (_, target), labels in kept.items() for label in labels}
    skipped = tuple(sorted(pairs - keep))
    narrowed = replace(cfg, grid=replace(cfg.grid, exclude=tuple(cfg.grid.exclude) + skipped))
    return Foresight(estimates, seconds, narrowed, skipped)


def log_foresight(ws: Workspace, foresight: Foresight, parent: str) -> None:
    from intertask.transferability import predict

    predict.log(ws, foresight.estimates, foresight.seconds, parent)
    if foresight.skipped:
        k, by = ws.cfg.predict.train_top_k, ws.cfg.predict.rank_by
        lines = [f"{i} -> {t}: not among the top {k} by {by}" for i, t in foresight.skipped]
        with tracking.logging_to(parent):
            tracking.log_text("\n".join(lines) + "\n", "predict/skipped.txt")
            tracking.log_metrics({"predict/skipped_pairs": len(foresight.skipped)})
