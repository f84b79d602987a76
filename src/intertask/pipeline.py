"""The whole study for one config: the transfer arm (intermediate -> target -> evaluate) and the
baseline arm (target -> evaluate) as child runs of one parent run, which holds the comparison.

    main (parent)
    |-- arm transfer: xnli -> pawsx
    |   |-- intermediate xnli (en)
    |   |-- finetune pawsx (en)
    |   `-- evaluate pawsx/test
    `-- arm baseline: pawsx
        |-- finetune pawsx (en)
        `-- evaluate pawsx/test
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from intertask import modeling, tracking  # noqa: E402
from intertask.config import STAGES  # noqa: E402
from intertask.errors import DataError, Problem  # noqa: E402
from intertask.evaluation import table_metrics  # noqa: E402
from intertask.stages import Evaluated, Workspace, evaluate, intermediate, stage_data, train_stage  # noqa: E402

ARMS = ("transfer", "baseline")


@dataclass(frozen=True)
class StudyResult:
    parent_run_id: str
    comparison: pd.DataFrame  # task, split, language, metric, transfer, baseline, gain
    arms: dict[str, Evaluated]


def preflight(ws: Workspace, stages: tuple[str, ...] = STAGES, evaluation: bool = True) -> None:
    """Load every data set and model reference the given steps need, so bad input fails before any run."""
    cfg = ws.cfg
    loaded = []
    for which in stages:
        stage = getattr(cfg, which)
        if stage is not None:
            loaded.extend(stage_data(ws, stage))
    if evaluation and cfg.eval_task:
        loaded.extend(
            ws.examples(cfg.eval_task, lang, cfg.evaluation.split, None) for lang in cfg.eval_languages()
        )
    _check_parallel(ws, loaded)
    source = modeling.resolve_source(cfg.model.name_or_path)
    modeling.load_config(source)
    modeling.load_tokenizer(source)
    if "target" in stages and cfg.target is not None and cfg.target.init:
        tracking.resolve_reference(cfg.target.init, "target.init")
    if evaluation and cfg.evaluation.model:
        tracking.resolve_reference(cfg.evaluation.model, "evaluation.model")


def _check_parallel(ws: Workspace, loaded: list) -> None:
    """Line-parallel tasks must have the same number of lines in every language (the guard relies on it)."""
    problems = []
    for task in {d.task for d in loaded}:
        if not ws.cfg.catalog().spec(task).parallel:
            continue
        sizes = {(d.language, d.source): d for d in loaded if d.task == task}
        by_source: dict[str, set[int]] = {}
        for (_, source), data in sizes.items():
            by_source.setdefault(source, set()).add(data.source_size)
        for source, counts in by_source.items():
            if len(counts) > 1:
                detail = {f"{lang}": d.source_size for (lang, s), d in sizes.items() if s == source}
                problems.append(
                    Problem(
                        ", ".join(sorted({f for d in sizes.values() for f in d.files})),
                        "",
                        f"task {task!r} is declared parallel but its {source!r} files differ in length",
                        detail,
                        "the same number of lines in every language",
                    )
                )
    if problems:
        raise DataError(problems)


def compare(arms: dict[str, Evaluated]) -> pd.DataFrame:
    """transfer vs baseline per (task, split, language, metric); gain = transfer - baseline."""
    keys = ["task", "split", "language", "metric"]
    frames = [e.table[keys + ["value"]].rename(columns={"value": arm}) for arm, e in arms.items()]
    table = frames[0]
    for frame in frames[1:]:
        table = table.merge(frame, on=keys, how="left")  # both arms evaluate the same rows, in order
    if set(ARMS) <= set(table.columns):
        table["gain"] = table["transfer"] - table["baseline"]
    return table


def _comparison_figure(table: pd.DataFrame, metric: str, title: str, chance: float | None):
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


def run_main(ws: Workspace) -> StudyResult:
    """Both arms of the study as child runs of one parent run; the parent gets the comparison."""
    cfg = ws.cfg
    preflight(ws)
    target = cfg.target
    tag = f"{tracking.TAG}stage"
    arms: dict[str, Evaluated] = {}
    with tracking.run(f"main {cfg.name}", experiment_id=ws.experiment_id, tags={tag: "main"}) as parent:
        tracking.log_config(cfg, ws.config_file)
        tracking.log_provenance()
        if cfg.intermediate is not None:
            name = f"arm transfer: {cfg.intermediate.task} -> {target.task}"
            with tracking.run(
                name,
                experiment_id=ws.experiment_id,
                parent_run_id=parent,
                tags={tag: "arm", f"{tracking.TAG}arm": "transfer"},
            ) as arm:
                first = intermediate(ws, arm)
                second = train_stage(ws, "target", first, arm)
                arms["transfer"] = evaluate(ws, second, arm)
        with tracking.run(
            f"arm baseline: {target.task}",
            experiment_id=ws.experiment_id,
            parent_run_id=parent,
            tags={tag: "arm", f"{tracking.TAG}arm": "baseline"},
        ) as arm:
            only = train_stage(ws, "target", None, arm)
            arms["baseline"] = evaluate(ws, only, arm)
        table = compare(arms)
        tracking.log_table(table, "comparison/gain_by_language")
        if "gain" in table:
            tracking.log_metrics(
                {f"gain/{r.task}/{r.split}/{r.language}/{r.metric}": r.gain for r in table.itertuples()}
            )
        for arm_name, result in arms.items():
            tracking.log_metrics({f"{arm_name}/{k}": v for k, v in table_metrics(result.table).items()})
        spec = cfg.catalog().spec(cfg.eval_task)
        metric = spec.metrics[0]
        chance = 1 / len(spec.labels) if metric == "accuracy" and spec.type == "classification" else None
        figure = _comparison_figure(table, metric, f"{cfg.eval_task}/{cfg.evaluation.split}", chance)
        tracking.log_figure(figure, "comparison/gain_by_language.png")
        plt.close(figure)
    return StudyResult(parent, table, arms)
