"""Figures logged as PNG artifacts: training curves, per-language scores, transfer vs baseline."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def close(figure) -> None:
    plt.close(figure)


def training_curves(steps: list[tuple[int, float]], history: pd.DataFrame, title: str):
    """Training loss per logged step, and each dev metric per epoch."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
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
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(rows)), 3.5))
    colors = ["#999" if lang.startswith("mean") else "#3b6" for lang in rows.language]
    ax.bar(rows.language, rows.value, color=colors)
    ax.set(title=f"{title} {metric}", ylabel=metric, ylim=(0, 1))
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


def transfer_comparison(table: pd.DataFrame, metric: str, title: str, chance: float | None):
    """Left: baseline vs transfer per language; right: the gain (green up, red down)."""
    rows = table[table.metric == metric].reset_index(drop=True)
    x = np.arange(len(rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(8, 1.2 * len(rows)), 3.8))
    for offset, arm, color in ((-0.2, "baseline", "#999"), (0.2, "transfer", "#36c")):
        if arm in rows:
            ax1.bar(x + offset, rows[arm], width=0.4, label=arm, color=color)
    if chance is not None:
        ax1.axhline(chance, color="black", linestyle="--", linewidth=0.8, label="chance")
    ax1.set(xticks=x, xticklabels=rows.language, ylabel=metric, title=f"{title}: {metric}", ylim=(0, 1))
    ax1.legend()
    if "gain" in rows:
        ax2.bar(x, rows["gain"], color=["#3a3" if g >= 0 else "#c33" for g in rows["gain"]])
        ax2.axhline(0, color="black", linewidth=0.8)
    ax2.set(xticks=x, xticklabels=rows.language, ylabel=f"gain in {metric}", title="transfer - baseline")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


def probe_changes(table: pd.DataFrame):
    """Retrieval probe scores per language at each point of the pipeline (base -> stages), per arm."""
    rows = table[~table.language.str.startswith("mean_")]
    groups = list(rows.groupby(["task", "metric"], sort=False))
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.5), squeeze=False)
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
