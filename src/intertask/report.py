"""The transfer report: tidy scores of every cell, gains over the baseline with their uncertainty,
flags, aggregates per model group and intermediate-task family, the XTREME aggregate, domain
divergence against the gains, robustness under domain shift, a heatmap and a self-contained HTML page.

Gain of a cell = score(intermediate -> target) - score(target only), same model, seed, evaluation task,
language and metric, averaged over seeds. Its interval, p-value and minimum detectable effect combine
the seeds and a paired bootstrap of the test examples (significance.py: the metric is recomputed on
each resample from the per-example statistics every evaluation logs); q-values are Benjamini-Hochberg
over every gain of the report, and the flag reads q: `positive` / `negative` at q <= report.fdr, else
`no effect` when the study could have detected report.smallest_effect, else `inconclusive`; with fewer
than 3 seeds always `inconclusive` (one seed is not a finding), the reading saying what the test
sample alone shows.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from intertask import divergence, grid, metrics, resolve, significance
from intertask.config import NONE, ExperimentConfig
from intertask.identity import CELL_TAG
from intertask.metrics import EXAMPLE_KEYS

KEYS = ["model", "intermediate", "target", "task", "split", "language", "metric"]
SCORE_COLUMNS = [
    "model",
    "model_group",
    "intermediate",
    "family",
    "target",
    "seed",
    "task",
    "split",
    "language",
    "metric",
    "value",
]


@dataclass
class Report:
    scores: (
        pd.DataFrame
    )  # model, model_group, intermediate, family, target, seed, task, split, language, metric, value
    gains: pd.DataFrame  # GAIN_COLUMNS: KEYS + seeds, examples, transfer, baseline, gain, se, interval, p, q, mde, flag, reading
    groups: pd.DataFrame  # mean gain per model group x intermediate family (summary rows)
    xtreme: pd.DataFrame  # XTREME task / group / overall scores per model, intermediate, target, seed
    divergence: pd.DataFrame  # intermediate x target: overlap, JS, embedding distances, mean gain
    correlations: pd.DataFrame  # Spearman of each divergence measure with the gain
    robustness: pd.DataFrame  # in-domain vs out-of-domain scores of the same model
    probes: pd.DataFrame  # retrieval probes: point, arm, task, language, metric, value
    figures: dict = field(default_factory=dict)  # name -> matplotlib figure
    html: str = ""
    images: dict = field(default_factory=dict)  # name -> PNG bytes (a report read back from its run)
    skipped: dict = field(default_factory=dict)  # why -> how many runs the report left out


# --- building ----------------------------------------------------------------------------------------


def family_of(cfg: ExperimentConfig, intermediate: str) -> str:
    if intermediate == NONE:
        return NONE
    catalog = resolve.catalog(cfg)
    families = [catalog.spec(t).task_family if t in catalog else t for t in intermediate.split("+")]
    return families[0] if len(families) == 1 else "mix(" + "+".join(families) + ")"


def group_of(cfg: ExperimentConfig, model: str) -> str:
    groups = cfg.grid.model_groups if cfg.grid else {}
    return next((g for g, members in groups.items() if model in members), model)


def _cell_of(tags: dict) -> dict:  # a run's cell tags -> the cell's columns
    return {
        "model": tags.get(f"{CELL_TAG}model", ""),
        "intermediate": tags.get(f"{CELL_TAG}intermediate", NONE),
        "target": tags.get(f"{CELL_TAG}target", ""),
        "seed": int(tags.get(f"{CELL_TAG}seed", 0) or 0),
    }


def scores_table(cfg: ExperimentConfig, evaluations: list[tuple]) -> pd.DataFrame:
    """One row per (cell, seed, evaluation task, split, language, metric). `evaluations`: (run tags,
    languages table[, per-example statistics]) per evaluation run."""
    frames = [item[1].assign(**_cell_of(item[0])) for item in evaluations]
    if not frames:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    scores = pd.concat(frames, ignore_index=True)
    scores["model_group"] = scores.model.map(lambda m: group_of(cfg, m))
    scores["family"] = scores.intermediate.map(lambda i: family_of(cfg, i))
    return scores[SCORE_COLUMNS]


def examples_table(evaluations: list[tuple]) -> pd.DataFrame:
    """Every evaluation's per-example statistics, with the cell of its run."""
    frames = [
        item[2].assign(**_cell_of(item[0])) for item in evaluations if len(item) > 2 and item[2] is not None
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def task_kinds(cfg: ExperimentConfig, scores: pd.DataFrame) -> dict[str, str]:
    catalog = resolve.catalog(cfg)
    return {t: catalog.task(t).kind for t in scores.task.unique() if t in catalog}


GAIN_COLUMNS = [
    *KEYS,
    "n_seeds",
    "seed_component",
    "examples",
    "transfer",
    "baseline",
    "gain",
    "se",
    "ci_low",
    "ci_high",
    "p",
    "q",
    "mde",
    "flag",
    "reading",
]
CELL = ["model", "intermediate", "target", "task", "split"]
CELL_KEYS = ["model", "intermediate", "target", "seed"]  # the tags that place a run in a study
QA_SCORE = "xtreme"  # XTREME's score of a QA task: (exact match + F1) / 2


def gains_table(scores: pd.DataFrame, examples: pd.DataFrame, kinds: dict[str, str], options) -> pd.DataFrame:
    """Every transfer cell against its baseline: per language and metric, the cross-language means and,
    for QA tasks, XTREME's (EM + F1) / 2; paired over seeds and test examples (module docstring)."""
    base = scores[scores.intermediate == NONE]
    transfer = scores[scores.intermediate != NONE]
    if base.empty or transfer.empty:
        return pd.DataFrame(columns=GAIN_COLUMNS)
    runs = _runs_by_arm(examples)
    rows = []
    for key, cell in transfer.groupby(CELL, sort=False, dropna=False):
        model, _, target, task, split = key
        baseline = base[
            (base.model == model) & (base.target == target) & (base.task == task) & (base.split == split)
        ]
        seeds = sorted(set(cell.seed) & set(baseline.seed))
        if seeds:
            rows.extend(_cell_gains(key, seeds, cell, baseline, runs, kinds.get(task), options))
    frame = pd.DataFrame(rows, columns=GAIN_COLUMNS)
    frame["q"] = significance.q_values(frame.p.to_numpy(float))
    cells = int(frame.p.notna().sum())
    readings = [
        significance.reading(
            g, p, q, m, options.fdr, options.smallest_effect, 1 - options.confidence, cells, int(n)
        )
        for g, p, q, m, n in zip(frame.gain, frame.p, frame.q, frame.mde, frame.n_seeds, strict=True)
    ]
    frame["flag"] = [f for f, _ in readings]
    frame["reading"] = [r for _, r in readings]
    return frame


def _runs_by_arm(examples: pd.DataFrame) -> dict:
    """(model, intermediate, target, task, split) -> (seed, language) -> that run's per-example
    statistics indexed by uid, grouped once for every cell of the report."""
    if examples.empty:
        return {}
    out: dict = {}
    for (*arm, seed, language), group in examples.groupby([*CELL, "seed", "language"], sort=False):
        out.setdefault(tuple(arm), {})[(seed, language)] = (
            group.set_index("uid").drop(columns=CELL_KEYS, errors="ignore").dropna(axis=1, how="all")
        )
    return out


def _cell_gains(key, seeds, cell, baseline, runs, kind, options) -> list[dict]:
    model, intermediate, target, task, split = key
    languages = [lang for lang in dict.fromkeys(cell.language) if not lang.startswith("mean_")]
    names = list(dict.fromkeys(cell.metric))
    arms = {"t": runs.get(key, {}), "b": runs.get((model, NONE, target, task, split), {})}
    found = kind is not None and all(
        (seed, lang) in arms[a] for a in arms for seed in seeds for lang in languages
    )
    if not found:
        return _gains_without_examples(key, seeds, cell, baseline)
    # per language and metric: (full_t (S,), full_b (S,), boot_t (S, B), boot_b (S, B)), and its size
    values: dict[str, dict[str, tuple]] = {name: {} for name in names}
    sizes = {}
    for lang in languages:
        frames = [arms[a][(seed, lang)] for a in ("t", "b") for seed in seeds]
        uids = sorted(set.intersection(*(set(f.index) for f in frames)))
        # a label column one run lacks (nobody predicted or had that label there) counts 0 for it
        columns = list(dict.fromkeys(c for f in frames for c in f.columns if c not in EXAMPLE_KEYS))
        stats = [f.reindex(columns=columns).loc[uids].fillna(0).to_numpy(float) for f in frames]
        weights = significance.example_weights(len(uids), options.bootstrap, significance.rng_for(*key, lang))
        sizes[lang] = len(uids)
        for name in names:

            def metric(sums, n, _name=name, _columns=tuple(columns)):
                return metrics.from_sums(kind, _name, {c: sums[..., j] for j, c in enumerate(_columns)}, n)

            values[name][lang] = significance.paired_replicates(
                stats[: len(seeds)], stats[len(seeds) :], metric, weights
            )
    if {"exact_match", "f1"} <= set(names):
        values[QA_SCORE] = {
            lang: tuple(
                (a + b) / 2 for a, b in zip(values["exact_match"][lang], values["f1"][lang], strict=True)
            )
            for lang in languages
        }
    levels = [(lang, [lang]) for lang in languages]
    for label in dict.fromkeys(cell.language):
        if label == metrics.MEAN_ALL:
            levels.append((label, languages))
        elif label.startswith("mean_non_"):
            levels.append((label, [lang for lang in languages if lang != label.removeprefix("mean_non_")]))
    rows = []
    for label, members in levels:
        for name, per_language in values.items():
            full_t, full_b, boot_t, boot_b = (
                np.mean([per_language[lang][i] for lang in members], axis=0) for i in range(4)
            )
            est = significance.estimate(full_t - full_b, boot_t - boot_b, options.confidence, options.power)
            rows.append(
                _gain_row(
                    key, label, name, est, full_t.mean(), full_b.mean(), sum(sizes[lang] for lang in members)
                )
            )
    return rows


def _gain_row(key, language, metric, est, transfer, baseline, examples) -> dict:
    model, intermediate, target, task, split = key
    return {
        "model": model,
        "intermediate": intermediate,
        "target": target,
        "task": task,
        "split": split,
        "language": language,
        "metric": metric,
        "n_seeds": est.n_seeds,
        "seed_component": "estimated" if est.n_seeds >= 3 else f"unestimated ({est.n_seeds} seed(s))",
        "examples": examples,
        "transfer": transfer,
        "baseline": baseline,
        "gain": est.gain,
        "se": est.se,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
        "p": est.p,
        "mde": est.mde,
    }


def _gains_without_examples(key, seeds, cell, baseline) -> list[dict]:
    """Runs logged before per-example outcomes existed: the gains, nothing to test them with."""
    on = ["language", "metric", "seed"]
    paired = cell[cell.seed.isin(seeds)].merge(
        baseline[on + ["value"]].rename(columns={"value": "baseline"}), on=on
    )
    rows = []
    for (language, metric), group in paired.groupby(["language", "metric"], sort=False):
        nan = float("nan")
        est = significance.Estimate(
            float((group.value - group.baseline).mean()), nan, nan, nan, nan, nan, nan, nan, nan, len(group)
        )
        rows.append(_gain_row(key, language, metric, est, group.value.mean(), group.baseline.mean(), nan))
    return rows


def summary_rows(cfg: ExperimentConfig, table: pd.DataFrame) -> pd.DataFrame:
    """The headline row of each cell: the task's first metric, averaged over all evaluated languages."""
    catalog = resolve.catalog(cfg)
    primary = table.task.map(lambda t: catalog.spec(t).headline_metric if t in catalog else "")
    return table[(table.metric == primary) & (table.language == metrics.MEAN_ALL)]


def groups_table(cfg: ExperimentConfig, scores: pd.DataFrame, gains: pd.DataFrame) -> pd.DataFrame:
    """Mean gain (headline rows) per model group x intermediate family: 'does NLI or QA transfer better?'."""
    headline = summary_rows(cfg, gains)
    if headline.empty:
        return pd.DataFrame(
            columns=["model_group", "family", "target", "cells", "gain", "positive", "negative"]
        )
    labels = scores.drop_duplicates(["model", "intermediate"]).set_index(["model", "intermediate"])
    headline = headline.assign(
        model_group=[
            labels.loc[(m, i), "model_group"]
            for m, i in zip(headline.model, headline.intermediate, strict=True)
        ],
        family=[
            labels.loc[(m, i), "family"] for m, i in zip(headline.model, headline.intermediate, strict=True)
        ],
    )
    out = headline.groupby(["model_group", "family", "target"], sort=False).agg(
        cells=("gain", "size"),
        gain=("gain", "mean"),
        positive=("flag", lambda f: int((f == "positive").sum())),
        negative=("flag", lambda f: int((f == "negative").sum())),
    )
    return out.reset_index()


def xtreme_table(scores: pd.DataFrame) -> pd.DataFrame:
    """XTREME scores of every (model, intermediate, target, seed) that evaluated XTREME tasks."""
    rows = []
    per_language = scores[
        ~scores.language.str.startswith("mean_") & scores.task.isin(list(metrics.XTREME_LANGUAGES))
    ]
    for key, cell in per_language.groupby(["model", "intermediate", "target", "seed"], sort=False):
        per_task = {}
        for task, group in cell.groupby("task", sort=False):
            langs = {lang: dict(zip(g.metric, g.value, strict=True)) for lang, g in group.groupby("language")}
            per_task[task] = metrics.xtreme_task_score(task, langs)["avg_metric"]
            rows.append(
                {
                    **dict(zip(["model", "intermediate", "target", "seed"], key, strict=True)),
                    "score": f"task/{task}",
                    "value": per_task[task],
                    "languages": len(langs),
                    "xtreme_languages_missing": " ".join(
                        sorted(set(metrics.XTREME_LANGUAGES[task]) - set(langs))
                    ),
                }
            )
        for name, value in metrics.xtreme_aggregate(per_task).items():
            rows.append(
                {
                    **dict(zip(["model", "intermediate", "target", "seed"], key, strict=True)),
                    "score": name if name == "overall" else f"group/{name}",
                    "value": value,
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "model",
            "intermediate",
            "target",
            "seed",
            "score",
            "value",
            "languages",
            "xtreme_languages_missing",
        ],
    )


def robustness_table(cfg: ExperimentConfig, scores: pd.DataFrame) -> pd.DataFrame:
    """For a model evaluated on its own target task and on other tasks with the same head: the drop of
    each metric (absolute and relative) from in-domain to each out-of-domain set, headline rows."""
    rows = []
    means = scores[scores.language == metrics.MEAN_ALL]
    for key, cell in means.groupby(["model", "intermediate", "target", "seed"], sort=False):
        own = cell[cell.task == key[2]]
        for (task, metric), ood in cell[cell.task != key[2]].groupby(["task", "metric"], sort=False):
            same = own[own.metric == metric]
            if same.empty:
                continue
            inside, outside = float(same.value.iloc[0]), float(ood.value.iloc[0])
            rows.append(
                {
                    **dict(zip(["model", "intermediate", "target", "seed"], key, strict=True)),
                    "out_of_domain": task,
                    "metric": metric,
                    "in_domain_value": inside,
                    "out_of_domain_value": outside,
                    "drop": inside - outside,
                    "relative_drop": (inside - outside) / inside if inside else float("nan"),
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "model",
            "intermediate",
            "target",
            "seed",
            "out_of_domain",
            "metric",
            "in_domain_value",
            "out_of_domain_value",
            "drop",
            "relative_drop",
        ],
    )


def divergence_table(cfg: ExperimentConfig, gains: pd.DataFrame, ws, embed_texts) -> pd.DataFrame:
    """Every (intermediate task, target task) pair of the study: divergence of their training sets
    (`embed_texts(ws, texts)`: unit-length sentence embeddings with the base model)."""

    columns = [
        "intermediate",
        "target",
        "vocabulary_overlap",
        "js_divergence",
        "embedding_cosine_distance",
        "mmd",
        "gain",
    ]
    headline = summary_rows(cfg, gains)
    pairs = headline[["intermediate", "target"]].drop_duplicates()
    if pairs.empty or ws is None or embed_texts is None:
        return pd.DataFrame(columns=columns)
    options = cfg.report
    language = (cfg.target or cfg.intermediate).language if (cfg.target or cfg.intermediate) else "en"
    texts = {}
    for task in set(pairs.target) | {t for i in pairs.intermediate for t in i.split("+")}:
        data = ws.examples(task, grid.training_language(cfg, language, (task,)), "train", None)
        rng = np.random.default_rng(cfg.split_seed)
        chosen = rng.permutation(len(data))[: options.divergence_examples]
        texts[task] = [" ".join(data.examples[i].texts) for i in sorted(chosen)]
    vectors = {task: embed_texts(ws, values) for task, values in texts.items()}
    rows = []
    for inter, target in pairs.itertuples(index=False):
        parts = inter.split("+")
        a_texts = [t for p in parts for t in texts[p]]
        a_vec = np.concatenate([vectors[p] for p in parts])
        a, b = divergence.word_counts(a_texts), divergence.word_counts(texts[target])
        gain = headline[(headline.intermediate == inter) & (headline.target == target)].gain.mean()
        rows.append(
            {
                "intermediate": inter,
                "target": target,
                "vocabulary_overlap": divergence.vocabulary_overlap(a, b, options.top_k_words),
                "js_divergence": divergence.js_divergence(a, b),
                "embedding_cosine_distance": divergence.mean_embedding_distance(a_vec, vectors[target]),
                "mmd": divergence.mmd_rbf(a_vec, vectors[target]),
                "gain": gain,
            }
        )
    return pd.DataFrame(rows, columns=columns)


def correlation_table(table: pd.DataFrame) -> pd.DataFrame:
    measures = ["vocabulary_overlap", "js_divergence", "embedding_cosine_distance", "mmd"]
    rows = [
        {"measure": m, "spearman_with_gain": divergence.spearman(table[m], table.gain), "pairs": len(table)}
        for m in measures
        if m in table
    ]
    return pd.DataFrame(rows, columns=["measure", "spearman_with_gain", "pairs"])


def assemble(cfg: ExperimentConfig, evaluations, probe_frames, ws=None, embed_texts=None) -> Report:
    """The report from data frames: `evaluations` as (cell tags, languages table, per-example statistics
    or None) per evaluation run, `probe_frames` the retrieval probes' tables. Nothing here reads the
    tracking store (collect.py does)."""
    scores = scores_table(cfg, evaluations)
    gains = gains_table(scores, examples_table(evaluations), task_kinds(cfg, scores), cfg.report)
    diverge = divergence_table(cfg, gains, ws, embed_texts) if cfg.report.divergence else pd.DataFrame()
    probes = pd.concat(probe_frames, ignore_index=True) if probe_frames else pd.DataFrame()
    built = Report(
        scores,
        gains,
        groups_table(cfg, scores, gains),
        xtreme_table(scores),
        diverge,
        correlation_table(diverge) if not diverge.empty else pd.DataFrame(),
        robustness_table(cfg, scores),
        probes,
    )
    built.figures = _figures(cfg, built)
    built.html = render_html(cfg, built)
    return built


def _figures(cfg: ExperimentConfig, built: Report) -> dict:
    from intertask import plots  # matplotlib: only when figures are drawn (not for a report read back)

    figures = {}
    catalog = resolve.catalog(cfg)
    primary = built.gains.task.map(lambda t: catalog.spec(t).headline_metric if t in catalog else "")
    rows = built.gains[built.gains.metric == primary]
    if not rows.empty:
        figures["heatmap"] = plots.gain_heatmap(rows, cfg.report.fdr)
    if not built.divergence.empty and len(built.divergence) >= 2:
        figures["divergence"] = plots.divergence_scatter(built.divergence, built.correlations)
    if not built.probes.empty and "point" in built.probes:
        figures["probes"] = plots.probe_changes(built.probes)
    return figures


# --- output ---------------------------------------------------------------------------------------


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def render_html(cfg: ExperimentConfig, built: Report) -> str:
    """A single self-contained page: every table, every figure inline."""

    def table(frame: pd.DataFrame, title: str) -> str:
        if frame is None or frame.empty:
            return ""
        return f"<h2>{title}</h2>" + frame.to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="")

    images = "".join(
        f'<h2>{name}</h2><img src="data:image/png;base64,{_png(fig)}"/>'
        for name, fig in built.figures.items()
    )
    headline = summary_rows(cfg, built.gains)
    options = cfg.report
    seeds = sorted(set(built.gains.n_seeds)) if not built.gains.empty else []
    few = [n for n in seeds if n < 3]
    notes = [
        "<p>gain = score(intermediate &rarr; target) &minus; score(target only), same model, seeds and test "
        f"examples, averaged over seeds. Interval: {options.confidence:.0%}, from the spread over seeds and a "
        f"paired bootstrap of the test examples ({options.bootstrap} resamples; the metric recomputed on each). "
        f"q: Benjamini&ndash;Hochberg over all {len(built.gains)} gains of this report; a gain is flagged "
        f"<b>positive</b> or <b>negative</b> at q &le; {options.fdr}. Not significant: <i>no effect</i> when the study "
        f"could detect {100 * options.smallest_effect:.1f} points at power {options.power:.0%} (mde), else "
        "<i>inconclusive</i>. Grey rows and pale heatmap cells are not significant.</p>"
    ]
    if few:
        notes.append(
            f"<p><b>Seed component unestimated</b> for cells with {', '.join(map(str, few))} seed(s): their "
            "intervals cover the test sample only, not the training randomness; run 3 or more seeds.</p>"
        )
    if built.skipped:
        notes.append(
            "<p>Runs left out: "
            + "; ".join(f"{n} {why}" for why, n in sorted(built.skipped.items()))
            + ".</p>"
        )
    body = "".join(
        [
            f"<h1>Transfer report: {cfg.name}</h1>",
            *notes,
            _gains_html(headline, options.fdr, "Headline gains (first metric, mean over languages)"),
            images,
            table(built.groups, "Gains by model group and intermediate-task family"),
            table(built.xtreme, "XTREME aggregate"),
            table(built.divergence, "Domain divergence (training sets)"),
            table(built.correlations, "Divergence vs gain (Spearman)"),
            table(built.robustness, "Robustness under domain shift"),
            _gains_html(built.gains, options.fdr, "Every gain"),
            table(built.scores, "Every score"),
        ]
    )
    style = (
        "body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;font-size:12px} "
        "td,th{border:1px solid #ccc;padding:2px 6px} img{max-width:100%} tr.muted td{color:#999} "
        "tr.significant td{font-weight:bold}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{cfg.name}</title><style>{style}</style>"
        f"</head><body>{body}</body></html>"
    )


def _gains_html(frame: pd.DataFrame, fdr: float, title: str) -> str:
    """Gains as a table whose significant rows are bold and the others grey."""
    if frame is None or frame.empty:
        return ""
    import html

    def cell(value) -> str:
        if isinstance(value, float):
            return "" if np.isnan(value) else f"{value:.4f}"
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    rows = "".join(
        f'<tr class="{"significant" if q <= fdr else "muted"}">'
        + "".join(f"<td>{cell(v)}</td>" for v in row)
        + "</tr>"
        for row, q in zip(frame.itertuples(index=False), frame.q.fillna(1.0), strict=True)
    )
    return f"<h2>{title}</h2><table><tr>{head}</tr>{rows}</table>"


TABLES = ("scores", "gains", "groups", "xtreme", "divergence", "correlations", "robustness", "probes")


def write(built: Report, folder) -> None:
    """The report as files: CSV tables, PNG figures and report.html."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        frame = getattr(built, name)
        if frame is not None and not frame.empty:
            frame.to_csv(folder / f"{name}.csv", index=False)
    for name, figure in built.figures.items():
        figure.savefig(folder / f"{name}.png", dpi=110, bbox_inches="tight")
    for name, png in built.images.items():
        (folder / f"{name}.png").write_bytes(png)
    (folder / "report.html").write_text(built.html, encoding="utf-8")
