"""`intertask predict`: transferability estimates for every (model, intermediate choice, target) of a
study's grid, computed before training it (or beside a trained one), logged on one run, and ranked.

Per model and target (estimators in transferability/scores.py; higher = predicted to help more):
- `embedding_similarity`: cosine of the mean sentence embeddings of the intermediate and target training
  sets under the base model (SEmb / TextEmb);
- `vocabulary_overlap`, `neg_js_divergence`, `neg_mmd`: the report's divergences, signs turned;
- `logme_intermediate`: LogME of the target's training features (mean-pooled sentence embeddings;
  a pair's two texts joined) under each intermediate model the tracking store already holds for this
  exact stage (found by content key), averaged over the seeds found; without one the row says so;
- `logme_base`: LogME under the base model, the same for every choice of a target (its row has
  intermediate `none`): a reference point, not a ranking.
LogME reads class labels: a classification target's sentence features, or for a tagging target
(UD-POS, PAN-X) token-level features (each word's first sub-token, its tag; up to 5,000 words). QA and
multiple-choice targets get the embedding and divergence estimators only, and a note saying why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from intertask import report, tracking
from intertask.config import NONE, ExperimentConfig, resolve
from intertask.report import ESTIMATE_COLUMNS, divergence
from intertask.study import grid
from intertask.study.identity import metric_part
from intertask.study.workspace import Workspace
from intertask.transferability import scores as transferability

RANKED = ("embedding_similarity", "vocabulary_overlap", "neg_js_divergence", "neg_mmd", "logme_intermediate")


@dataclass(frozen=True)
class Predicted:
    run_id: str | None
    estimates: pd.DataFrame  # ESTIMATE_COLUMNS
    seconds: float


def triples(cfg: ExperimentConfig) -> list[tuple[str, tuple[str, ...], str]]:
    """(model, intermediate tasks, target) of every transfer cell of the grid, seeds aside."""
    return sorted(
        {(c.model, c.intermediate, c.target) for c in grid.cells(cfg) if c.intermediate and c.target}
    )


def _texts(ws: Workspace, task: str, size: int) -> tuple[list[str], list]:
    """(texts, examples) of the seeded sample of the task's training set the divergences read too."""
    examples = report.training_sample(ws.cfg, ws, task, size)
    return [report.text_of(e) for e in examples], examples


MAX_WORDS = 5000  # words whose features token-level LogME reads (a tagging target)


def word_features(encoder, tokenizer, examples: list, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """For a tagging task: the last-layer state of each word's first sub-token, and the word's tag
    (token-level LogME), for up to MAX_WORDS words."""
    import torch

    features, tags = [], []
    encoder.eval()
    for start in range(0, len(examples), 16):
        batch = examples[start : start + 16]
        encoded = tokenizer(
            [list(e.texts) for e in batch],
            is_split_into_words=True,
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            inputs = {k: v.to(encoder.device) for k, v in encoded.items()}
            hidden = encoder(**inputs).last_hidden_state.float().cpu().numpy()
        for row, example in enumerate(batch):
            seen = set()
            for position, word in enumerate(encoded.word_ids(row)):
                if word is not None and word not in seen:
                    seen.add(word)
                    features.append(hidden[row, position])
                    tags.append(example.label[word])
        if len(tags) >= MAX_WORDS:
            break
    return np.asarray(features[:MAX_WORDS]), np.asarray(tags[:MAX_WORDS])


def _logme_under(ws: Workspace, kind: str, sample: tuple, encoder, tokenizer) -> float:
    """LogME of a target sample (texts, examples) under an encoder: sentence features and class labels,
    or for a tagging task word features and tags."""
    from intertask import stages

    texts, examples = sample
    if kind == "tagging":
        return transferability.logme(*word_features(encoder, tokenizer, examples, ws.cfg.model.max_length))
    features = stages.embed_with(ws, encoder, tokenizer, texts)
    return transferability.logme(features, np.asarray([e.label for e in examples]))


def estimate(ws: Workspace, intermediate_models: dict | None = None) -> pd.DataFrame:
    """The estimates table (ESTIMATE_COLUMNS). `intermediate_models`: (model, intermediate label) ->
    model references of finished intermediate stages of this study (foresight.intermediate_models)."""
    from intertask import stages
    from intertask.compute import modeling

    cfg = ws.cfg
    size = cfg.predict.max_examples
    catalog = resolve.catalog(cfg)
    rows = []
    for model in sorted({m for m, _, _ in triples(cfg)}):
        mws = replace(ws, cfg=replace(cfg, model=replace(cfg.model, name_or_path=model)), _encoder=None)
        cells = [(i, t) for m, i, t in triples(cfg) if m == model]
        tasks = {t for _, t in cells} | {p for i, _ in cells for p in i}
        texts = {task: _texts(mws, task, size) for task in sorted(tasks)}
        vectors = {task: stages.embed_texts(mws, texts[task][0]) for task in sorted(tasks)}
        for target in sorted({t for _, t in cells}):
            spec = catalog.spec(target)
            labelled = spec.type in ("classification", "tagging")
            why = "" if labelled else f"LogME needs a label per text or per word; {target} is {spec.type}"
            if labelled:  # under the base model, which embed_texts loaded already
                value = _logme_under(mws, spec.type, texts[target], *mws._encoder)
                rows.append(
                    (model, target, NONE, "logme_base", value, "reference: the same for every choice")
                )
            for inter in sorted({i for i, t in cells if t == target}):
                label = "+".join(inter)
                a_texts = [x for p in inter for x in texts[p][0]]
                a_vec = np.concatenate([vectors[p] for p in inter])
                measured = divergence.between(
                    a_texts, a_vec, texts[target][0], vectors[target], cfg.report.top_k_words
                )
                cheap = {  # the report's divergences, turned so that higher means closer
                    "embedding_similarity": 1 - measured["embedding_cosine_distance"],
                    "vocabulary_overlap": measured["vocabulary_overlap"],
                    "neg_js_divergence": -measured["js_divergence"],
                    "neg_mmd": -measured["mmd"],
                }
                rows += [(model, target, label, name, value, "") for name, value in cheap.items()]
                found = (intermediate_models or {}).get((model, label), [])
                if not labelled:
                    rows.append((model, target, label, "logme_intermediate", np.nan, why))
                elif not found:
                    note = "no intermediate model of this stage in the tracking store yet"
                    rows.append((model, target, label, "logme_intermediate", np.nan, note))
                else:
                    values = []
                    for reference in found:
                        files = tracking.download_model(tracking.resolve_reference(reference))
                        encoder = modeling.load_encoder(files.model_dir).to(modeling.device())
                        tokenizer = modeling.load_tokenizer(str(files.tokenizer_dir))
                        values.append(_logme_under(mws, spec.type, texts[target], encoder, tokenizer))
                    note = f"mean over {len(values)} seed(s)"
                    rows.append((model, target, label, "logme_intermediate", float(np.mean(values)), note))
    return pd.DataFrame(rows, columns=ESTIMATE_COLUMNS)


def ranked(estimates: pd.DataFrame) -> pd.DataFrame:
    """Each ranking estimator's order of the intermediate choices per model and target (1 = best)."""
    rows = estimates[estimates.estimator.isin(RANKED) & estimates.value.notna()]
    return rows.assign(
        rank=rows.groupby(["model", "target", "estimator"]).value.rank(ascending=False, method="min")
    ).sort_values(["model", "target", "estimator", "rank"])


MIN_CHOICES = 3  # a ranking of fewer intermediate choices says nothing an estimator could be judged on


def rankable(order: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """The ranks of the (model, target) pairs with at least MIN_CHOICES intermediate choices, and a
    notice for each pair left out (one choice is "ranked" 1 by every estimator)."""
    if order.empty:
        return order, []
    choices = order.groupby(["model", "target"]).intermediate.transform("nunique")
    notices = [
        (
            f"nothing_to_rank.{target}",
            f"predict: {target} ({model}) has {n} intermediate choice(s): nothing to rank (ranks need "
            f"{MIN_CHOICES} or more); its estimates are logged, its ranks are not",
        )
        for (model, target), n in order[choices < MIN_CHOICES]
        .groupby(["model", "target"])
        .intermediate.nunique()
        .items()
    ]
    return order[choices >= MIN_CHOICES], notices


def top_k(estimates: pd.DataFrame, by: str, k: int) -> dict[tuple[str, str], list[str]]:
    """(model, target) -> the k best intermediate labels by estimator `by`."""
    order = ranked(estimates)
    chosen = order[(order.estimator == by) & (order["rank"] <= k)]
    return {key: list(group.intermediate) for key, group in chosen.groupby(["model", "target"])}


def run(
    ws: Workspace, intermediate_models: dict | None = None, parent_run_id: str | None = None
) -> Predicted:
    """Estimate (timed), then log it all on one run (`log`)."""
    start = time.perf_counter()
    estimates = estimate(ws, intermediate_models)
    seconds = time.perf_counter() - start
    return Predicted(log(ws, estimates, seconds, parent_run_id), estimates, seconds)


def log(ws: Workspace, estimates: pd.DataFrame, seconds: float, parent_run_id: str | None = None) -> str:
    """The predict run: metrics estimate/<model>/<target>/<intermediate>/<estimator>, the tables
    predict/estimates and predict/ranked (CSV + HTML), the rank chart, and the wall time."""
    from intertask.report import plots

    tags = {
        tracking.TAG + "stage": "predict",
        tracking.DESCRIPTION: (
            "Transferability estimates for every (model, intermediate task, target) of the grid, before "
            "training: embedding similarity, vocabulary overlap, JS divergence, MMD and LogME. The report "
            "scores them against the measured gains."
        ),
    }
    title = f"predict {ws.cfg.name}"
    with tracking.run(title, experiment_id=ws.experiment(), parent_run_id=parent_run_id, tags=tags) as run_id:
        tracking.log_config(ws.cfg, ws.config_file)
        tracking.log_provenance()
        values = {
            f"estimate/{metric_part(r.model)}/{r.target}/{r.intermediate}/{r.estimator}": r.value
            for r in estimates.itertuples()
        }
        tracking.log_metrics(values | {"predict_seconds": seconds})
        tracking.log_table(estimates, "predict/estimates")
        order, notices = rankable(ranked(estimates))
        tracking.record_notices(notices)
        if not order.empty:
            tracking.log_table(order, "predict/ranked")
            figure = plots.estimator_ranks(order)
            tracking.log_figure(figure, "predict/ranks.png")
            plots.close(figure)
    return run_id


def latest(experiment_id: str) -> pd.DataFrame | None:
    """The estimates of the experiment's newest finished predict run, if any."""
    found = tracking.find_runs(experiment_id, tracking.TAG + "stage", "predict", status="FINISHED")
    return tracking.read_run_table(found[0].info.run_id, "predict/estimates.csv") if found else None
