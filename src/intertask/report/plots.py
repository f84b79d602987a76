"""Figures logged as PNG artifacts: training curves, per-language scores, transfer vs baseline."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

# Figures are built with matplotlib's object API (matplotlib.figure.Figure), which draws to files with
# no backend at all: importing this module changes nothing of the process (no matplotlib.use, no pyplot
# state), and a figure is freed with its last reference.


def _subplots(*args, **kwargs):
    """(figure, axes) as pyplot.subplots gives them, without pyplot."""
    figure = Figure(figsize=kwargs.pop("figsize", None), dpi=kwargs.pop("dpi", None))
    return figure, figure.subplots(*args, **kwargs)


def close(figure) -> None:
    """Free a figure: one of Optuna's (drawn through pyplot) is closed there; ours need nothing."""
    if hasattr(figure, "number"):  # pyplot numbers the figures it manages
        import matplotlib.pyplot as plt

        plt.close(figure)


def training_curves(steps: list[tuple[int, float]], history: pd.DataFrame, title: str):
    """Training loss per logged step, and each dev metric per epoch."""
    fig, (ax1, ax2) = _subplots(1, 2, figsize=(10, 3.5))
    if steps:
        ax1.plot(*zip(*steps, strict=True), marker=".")
    ax1.set(title="training loss", xlabel="step", ylabel="loss")
    for column in (c for c in history.columns if c.startswith("dev/")):
        ax2.plot(history["epoch"], history[column], marker="o", label=column[4:])
    ax2.set(title="dev metrics", xlabel="epoch", xticks=list(history["epoch"]))
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def language_scores(table: pd.DataFrame, metric: str, title: str):
    """One bar per language (aggregates in grey) for one metric of an evaluation table."""
    rows = table[table.metric == metric]
    fig, ax = _subplots(figsize=(max(4, 0.6 * len(rows)), 3.5))
    colors = ["#999" if lang.startswith("mean") else "#3b6" for lang in rows.language]
    ax.bar(rows.language, rows.value, color=colors)
    ax.set(title=f"{title} {metric}", ylabel=metric, ylim=(0, 1))
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


def probe_changes(table: pd.DataFrame):
    """Retrieval probe scores per language at each point of the pipeline (base -> stages), per arm."""
    rows = table[~table.language.str.startswith("mean_")]
    groups = list(rows.groupby(["task", "metric"], sort=False))
    fig, axes = _subplots(1, len(groups), figsize=(5 * len(groups), 3.5), squeeze=False)
    order = {"base": 0, "intermediate": 1, "target": 2}
    for ax, ((task, metric), group) in zip(axes[0], groups, strict=True):
        base = group[group.arm == "base"]
        for (arm, language), line in group[group.arm != "base"].groupby(["arm", "language"], sort=False):
            line = pd.concat([base[base.language == language], line]).sort_values(
                "point", key=lambda s: s.map(order)
            )
            ax.plot(line.point, line.value, marker="o", label=f"{language} ({arm})")
        ax.set(title=f"{task}: {metric}", ylabel=metric, ylim=(0, 1))
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def gain_heatmap(gains: pd.DataFrame, fdr: float = 0.05, headline_mean: str = "mean_all"):
    """Mean gain in points per intermediate choice (rows) x target / evaluation task / language
    (columns); a gain significant at q <= fdr is marked * and drawn in full colour, the others pale.
    Of the language means only `headline_mean` is drawn (mean_all and mean_non_en are the same
    column when English is not evaluated). Labels are 9-10 pt at 150 dpi: legible at 100 % zoom."""
    means = gains.language.str.startswith("mean_")
    gains = gains[~means | (gains.language == headline_mean)]
    frame = gains.assign(
        column=[
            f"{t}:{k}/{lang}" if t != k else f"{t}/{lang}"
            for t, k, lang in zip(gains.target, gains.task, gains.language, strict=True)
        ],
        points=gains.gain * 100,
        significant=(gains.q <= fdr) if "q" in gains else False,
    )
    table = frame.pivot_table(
        index="intermediate", columns="column", values="points", aggfunc="mean", sort=False
    )
    marks = frame.pivot_table(
        index="intermediate", columns="column", values="significant", aggfunc="all", sort=False
    ).reindex_like(table)
    values = table.to_numpy(float)
    limit = float(np.nanmax(np.abs(values))) if table.size and not np.isnan(values).all() else 1.0
    norm = Normalize(-limit or -1, limit or 1)
    colours = matplotlib.colormaps["RdYlGn"](norm(np.nan_to_num(values)))
    strong = marks.fillna(False).to_numpy(bool)
    colours[..., 3] = np.where(strong, 1.0, 0.3)
    colours[np.isnan(values)] = (1, 1, 1, 0)
    size = (max(6, 0.8 * table.shape[1] + 3), max(3, 0.6 * table.shape[0] + 2))
    fig, ax = _subplots(figsize=size, dpi=150)
    ax.imshow(colours, aspect="auto")
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=45, ha="right", fontsize=10)
    ax.set_yticks(range(table.shape[0]), table.index, fontsize=10)
    for (i, j), value in np.ndenumerate(values):
        if not np.isnan(value):
            text = f"{value:+.1f}" + ("*" if strong[i, j] else "")
            ax.text(
                j, i, text, ha="center", va="center", fontsize=9, color="black" if strong[i, j] else "#555"
            )
    fig.colorbar(
        ScalarMappable(norm=norm, cmap="RdYlGn"),
        ax=ax,
        label="gain over the baseline (points, mean over seeds)",
    )
    ax.set_title(
        f"transfer gain in points: intermediate x target/language\n(* q <= {fdr}; pale: not significant)",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


def divergence_scatter(points: pd.DataFrame, answers: pd.DataFrame):
    """Each (intermediate, target) cell's gain with its interval against each divergence measure, one
    row of panels per measure and one column per target (the first model's cells); the title gives the
    slope per sd of the measure and Spearman's rho with their intervals (report/questions.py).
    `points`: cells joined with the divergence table (gain, ci_low, ci_high, measures)."""
    measures = [
        m for m in ("vocabulary_overlap", "js_divergence", "embedding_cosine_distance", "mmd") if m in points
    ]
    model = points.model.iloc[0]
    points = points[points.model == model]
    targets = list(dict.fromkeys(points.target))
    fig, axes = _subplots(
        len(measures), len(targets), figsize=(4.2 * len(targets), 3.2 * len(measures)), squeeze=False
    )
    for i, measure in enumerate(measures):
        for j, target in enumerate(targets):
            ax, mine = axes[i][j], points[points.target == target]
            x, y = mine[measure].to_numpy(float), 100 * mine.gain.to_numpy(float)
            low, high = 100 * mine.ci_low.to_numpy(float), 100 * mine.ci_high.to_numpy(float)
            ax.errorbar(x, y, yerr=[y - low, high - y], fmt="o", markersize=4, capsize=2, linewidth=0.8)
            for r, xv, yv in zip(mine.itertuples(), x, y, strict=True):
                ax.annotate(r.intermediate, (xv, yv), fontsize=6, xytext=(3, 2), textcoords="offset points")
            ax.axhline(0, color="black", linewidth=0.6)
            found = answers[
                (answers.model == model) & (answers.measure == measure) & (answers.scope == target)
            ]
            if found.empty:
                found = answers[(answers.model == model) & (answers.measure == measure)].head(1)
            title = target
            if not found.empty and np.isfinite(found.slope.iloc[0]):
                r = found.iloc[0]
                title += (
                    f"\nslope {100 * r.slope:+.1f} [{100 * r.slope_low:+.1f}, {100 * r.slope_high:+.1f}] pts/sd"
                    f"  rho {r.rho:+.2f} [{r.rho_low:+.2f}, {r.rho_high:+.2f}]"
                )
            ax.set_title(title, fontsize=8)
            ax.set(xlabel=measure, ylabel="gain (points)" if j == 0 else "")
    fig.suptitle(
        f"gain against divergence ({model}; bars: 95 % intervals over seeds and test examples)", fontsize=9
    )
    fig.tight_layout()
    return fig


def tuning_figures(study) -> dict:
    """Optimisation history, parameter importances and parallel coordinates of an Optuna study.

    A figure that needs more than the study has (importances: two finished trials with varying
    parameters) is left out rather than drawn empty."""
    import warnings

    import optuna
    from optuna.trial import TrialState

    figures = {}
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    if not trials:
        return figures
    figure, ax = _subplots(figsize=(6.5, 3.8))
    for state, marker, color in ((TrialState.COMPLETE, "o", "tab:blue"), (TrialState.PRUNED, "x", "tab:red")):
        chosen = [t for t in trials if t.state == state and t.value is not None]
        ax.scatter(
            [t.number for t in chosen],
            [t.value for t in chosen],
            marker=marker,
            color=color,
            label=f"{state.name.lower()} ({len(chosen)})",
        )
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.number)
    if complete:
        pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
        best = [pick(t.value for t in complete[: i + 1]) for i in range(len(complete))]
        ax.step([t.number for t in complete], best, where="post", color="black", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective (dev)")
    ax.set_title(f"optimisation history: {study.study_name}")
    ax.legend(fontsize=8)
    figures["optimization_history"] = figure
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            importances = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError, ImportError) as err:  # too few trials, one value, no sklearn
            _left_out("param_importances", err)
            importances = {}
        if importances:
            figure, ax = _subplots(figsize=(5.5, 0.5 + 0.45 * len(importances)))
            names = list(importances)[::-1]
            ax.barh(names, [importances[n] for n in names], color="tab:green")
            ax.set_xlabel("importance (fANOVA)")
            ax.set_title("parameter importances")
            figures["param_importances"] = figure
        if len(complete) >= 2:
            try:
                ax = optuna.visualization.matplotlib.plot_parallel_coordinate(study)
                figures["parallel_coordinate"] = ax.figure
            except (RuntimeError, ValueError) as err:
                _left_out("parallel_coordinate", err)
    return figures


def _left_out(name: str, err: Exception) -> None:
    """Nothing silent: a tuning figure Optuna cannot draw for this study is said, with why."""
    print(f"note: tuning figure {name} left out: {type(err).__name__}: {str(err)[:200]}", file=sys.stderr)


def estimator_ranks(ranked: pd.DataFrame):
    """One panel per (model, target): the rank each estimator gives each intermediate choice (1 = the
    one it predicts helps most), so that estimators that agree read as equal columns."""
    panels = list(ranked.groupby(["model", "target"], sort=False))
    fig, axes = _subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False)
    for ax, ((model, target), frame) in zip(axes[0], panels, strict=True):
        table = frame.pivot_table(index="intermediate", columns="estimator", values="rank", sort=False)
        values = table.to_numpy(float)
        ax.imshow(values, cmap="viridis_r", aspect="auto", vmin=1, vmax=max(2, np.nanmax(values)))
        ax.set_xticks(range(table.shape[1]), table.columns, rotation=40, ha="right", fontsize=7)
        ax.set_yticks(range(table.shape[0]), table.index, fontsize=8)
        for (i, j), value in np.ndenumerate(values):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=8, color="white")
        ax.set_title(f"{target} ({Path(model).name})", fontsize=9)
    fig.suptitle("predicted rank of each intermediate task (1 = best)", fontsize=10)
    fig.tight_layout()
    return fig
