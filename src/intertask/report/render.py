"""The report as people look at it: figures, one self-contained HTML page, and files on disk."""

from __future__ import annotations

import base64
import html
import io

import numpy as np
import pandas as pd

from intertask.config import ExperimentConfig, resolve
from intertask.report.controls import not_learnt_text
from intertask.report.gains import cell_notes
from intertask.report.tables import Report, summary_rows, xtreme_missing


def figures(cfg: ExperimentConfig, built: Report) -> dict:
    from intertask.report import plots  # matplotlib: only when figures are drawn (not for a report read back)

    figures = {}
    catalog = resolve.catalog(cfg)
    primary = built.gains.task.map(lambda t: catalog.spec(t).headline_metric if t in catalog else "")
    rows = built.gains[built.gains.metric == primary]
    if not rows.empty:
        figures["heatmap"] = plots.gain_heatmap(rows, cfg.report.fdr, cfg.report.headline_language)
    if not built.points.empty and len(built.points) >= 2:
        figures["divergence"] = plots.divergence_scatter(built.points, built.correlations)
    if not built.probes.empty and "point" in built.probes:
        figures["probes"] = plots.probe_changes(built.probes)
    return figures


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=max(110, figure.get_dpi()), bbox_inches="tight")
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

    notes = _notes(built, options)
    body = "".join(
        [
            f"<h1>Transfer report: {cfg.name}</h1>",
            *notes,
            _gains_html(headline, options.fdr, "Headline gains (first metric, mean over languages)"),
            images,
            table(
                built.correlations,
                "Does the gain fall as the tasks diverge? Slope (per sd of the measure, one intercept per "
                "target) and Spearman's rho within targets, 95 % intervals over cells' own error and the "
                "choice of tasks; rho's p by permutation; the smallest rho this study detects (80 %)",
            ),
            table(
                built.groups, "Gain by intermediate-task family (per model group and target), 95 % intervals"
            ),
            table(built.contrasts, "Contrasts: same family as the target vs other; model groups"),
            table(
                built.degradation,
                "Cross-lingual degradation: drop from the training language, transfer vs baseline "
                "(change < 0: intermediate training narrows the drop)",
            ),
            table(built.xtreme, "XTREME aggregate"),
            table(built.divergence, "Domain divergence (training sets)"),
            table(built.robustness, "Robustness under domain shift"),
            table(
                built.learnt,
                "Was each trained model learnt? (dev score vs a model that learnt nothing; mean over seeds)",
            ),
            _gains_html(built.null_check, options.fdr, "A/A check: baseline seeds against baseline seeds"),
            table(built.estimators, "Transferability estimators vs measured gains (interval over seeds)")
            or (f"<h2>Transferability estimators</h2><p>Not scored: {built.estimators_note}.</p>"),
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


def _notes(built: Report, options) -> list[str]:
    """The page's paragraphs before the tables: how to read a gain, and everything the comparison is
    short of (a target not learnt, the A/A check, seeds, cells compared on less, runs left out)."""
    seeds = sorted(set(built.gains.n_seeds)) if not built.gains.empty else []
    few = [n for n in seeds if n < 3]
    correction = {"bh": "Benjamini&ndash;Hochberg", "by": "Benjamini&ndash;Yekutieli"}[options.correction]
    headline_rows = int((built.gains.family == "headline").sum()) if "family" in built.gains else 0
    notes = [
        "<p>gain = score(intermediate &rarr; target) &minus; score(target only), same model, seeds and test "
        f"examples, averaged over seeds. Interval: {options.confidence:.0%}, from the spread over seeds and a "
        f"paired bootstrap of the test examples ({options.bootstrap} resamples; the metric recomputed on each; "
        "one draw of the items for every language of a translated test set). "
        f"q: {correction} within a family: the headline family holds one row per cell "
        f"({headline_rows} here: the headline metric on {options.headline_language}); every other row is "
        "tested only in cells whose headline is flagged, within the cell at the level Benjamini&ndash;Bogomolov "
        "give a family read after selection (q scaled by cells screened / cells selected); a row that is "
        "its cell's headline test (one language) takes the headline's q; rows with fewer than 3 seeds are "
        "in no family. A gain is flagged "
        f"<b>positive</b> or <b>negative</b> at q &le; {options.fdr}; <i>no effect</i> only when its whole "
        f"interval lies inside &plusmn;{100 * options.smallest_effect:.1f} points; else <i>inconclusive</i>. "
        "Grey rows and pale heatmap cells are not significant.</p>"
    ]
    if not built.learnt.empty and not built.learnt.learnt.astype(bool).all():
        notes.append(
            "<p><b>"
            + "; ".join(
                f"{r.stage} {r.task} ({r.model}): {not_learnt_text(r)}"
                for r in built.learnt.itertuples()
                if not r.learnt
            )
            + ".</b></p>"
        )
    if built.unchecked:
        notes.append(
            "<p>Not checked for learning (no model that learnt nothing to compare with): "
            + html.escape(", ".join(built.unchecked))
            + ".</p>"
        )
    if built.null_note:
        notes.append(f"<p>{html.escape(built.null_note)}.</p>")
    if few:
        notes.append(
            f"<p><b>Seed component unestimated</b> for cells with {', '.join(map(str, few))} seed(s): their "
            "intervals cover the test sample only, not the training randomness; run 3 or more seeds.</p>"
        )
    if noted := cell_notes(built.gains):
        notes.append(
            "<p>Cells compared on less than their config asked for:</p><ul>"
            + "".join(f"<li>{html.escape(line)}</li>" for line in noted)
            + "</ul>"
        )
    missing = {t: langs for t, langs in xtreme_missing(built.scores).items() if langs}
    if missing:
        notes.append(
            "<p>XTREME languages not evaluated (the XTREME table's scores average the others): "
            + "; ".join(
                f"{html.escape(t)} ({len(ls)}): {html.escape(' '.join(ls))}" for t, ls in missing.items()
            )
            + ".</p>"
        )
    if built.skipped:
        notes.append(
            "<p>Runs left out: "
            + "; ".join(f"{n} {why}" for why, n in sorted(built.skipped.items()))
            + ".</p>"
        )
    return notes


READ_FIRST = [
    "intermediate",
    "target",
    "language",
    "metric",
    "gain",
    "ci_low",
    "ci_high",
    "q",
    "flag",
    "reading",
]


def reading_order(frame: pd.DataFrame) -> pd.DataFrame:
    """A gains table for a reader: what the cell is, its gain, interval, q, flag and reading first;
    the model, task, split and the statistics' parts after (gains.csv keeps the data order)."""
    first = [c for c in READ_FIRST if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def _gains_html(frame: pd.DataFrame, fdr: float, title: str) -> str:
    """Gains as a table whose significant rows are bold and the others grey, in reading order."""
    if frame is None or frame.empty:
        return ""
    frame = reading_order(frame)

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


TABLES = (
    "scores",
    "gains",
    "groups",
    "xtreme",
    "divergence",
    "correlations",
    "robustness",
    "probes",
    "estimators",
    "learnt",
    "null_check",
    "contrasts",
    "degradation",
)


def write(built: Report, folder) -> None:
    """The report as files: CSV tables, PNG figures and report.html."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        frame = getattr(built, name)
        if frame is not None and not frame.empty:
            frame.to_csv(folder / f"{name}.csv", index=False)
    for name, figure in built.figures.items():
        figure.savefig(folder / f"{name}.png", dpi=max(110, figure.get_dpi()), bbox_inches="tight")
    for name, png in built.images.items():
        (folder / f"{name}.png").write_bytes(png)
    (folder / "report.html").write_text(built.html, encoding="utf-8")
