"""Reading an experiment: YAML, `key=value` overrides (and @FILE of them), deprecated keys, stage
`training:` blocks merged over the top-level one, and the config written back as YAML."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from intertask.config.experiment import (
    DEPRECATED_KEYS,
    OVERRIDES,
    STAGES,
    TRAINING_BLOCKS,
    ConfigDeprecationWarning,
    ExperimentConfig,
    TrainingConfig,
)
from intertask.config.schema import build, coerce_fields, construct, field_type, read_yaml
from intertask.errors import Problems
from intertask.names import close_matches

# --- overrides ------------------------------------------------------------------------------------


def parse_overrides(items: list[str]) -> tuple[list[tuple[str, Any]], Problems]:
    """`a.b=value` strings -> (key, YAML-parsed value) pairs; bad items are problems of <overrides>."""
    pairs, problems = [], Problems()
    items = _expand_override_files(items, problems)
    for item in items:
        if isinstance(item, tuple):  # from an override file: (key, value) already parsed
            key, value = item
            try:
                field_type(ExperimentConfig, key)
            except KeyError:
                problems.add(OVERRIDES, key, "unknown key", key, _key_hint(key))
                continue
            pairs.append(item)
            continue
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.add(OVERRIDES, item, "not a key=value override", item, "dotted.key=value")
            continue
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        try:
            if key not in DEPRECATED_KEYS:
                field_type(ExperimentConfig, key)
        except KeyError:
            problems.add(OVERRIDES, key, "unknown key", item, _key_hint(key))
            continue
        pairs.append((key, value))
    return pairs, problems


def _expand_override_files(items: list[str], problems: Problems) -> list:
    """`@path.yaml`: a file of `dotted.key: value` lines (what `tune` writes as best_params.yaml)."""
    out: list = []
    for item in items:
        if not item.startswith("@"):
            out.append(item)
            continue
        path = Path(item[1:])
        raw = read_yaml(path, problems, "override file")
        if raw is not None:
            out.extend((str(k), v) for k, v in raw.items())
    return out


def _key_hint(key: str) -> str:
    parent = key.rpartition(".")[0]
    try:
        hint = field_type(ExperimentConfig, parent) if parent else ExperimentConfig
        hint = next((a for a in getattr(hint, "__args__", (hint,)) if dataclasses.is_dataclass(a)), hint)
        names = [f.name for f in dataclasses.fields(hint)]
    except KeyError:
        names = [f.name for f in dataclasses.fields(ExperimentConfig)]
        parent = ""
    last = key.rpartition(".")[2]
    near = close_matches(last, names)
    prefix = f"{parent}." if parent else ""
    return (f"did you mean '{prefix}{near[0]}'?; " if near else "") + f"keys here: {', '.join(names)}"


def apply_overrides(raw: dict, pairs: list[tuple[str, Any]]) -> dict:
    """Set each dotted key in a copy of the raw YAML mapping, creating nested mappings as needed; a
    mapping given for a mapping is merged into it field by field (`x.max_examples={train: 9}` keeps
    `dev`), anything else replaces what was there."""
    out = _deep_copy(raw)
    for key, value in pairs:
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = _merged(node.get(parts[-1]), _deep_copy(value))
    return out


def _merged(old: Any, new: Any) -> Any:
    if isinstance(old, dict) and isinstance(new, dict):
        return {**old, **{k: _merged(old.get(k), v) for k, v in new.items()}}
    return new


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


# --- loading --------------------------------------------------------------------------------------


def _resolve_paths(raw: dict, base: Path) -> dict:
    """Make task_files and data.root relative to the config file's folder."""
    data = raw.get("data")
    if isinstance(data, dict):
        files = data.get("task_files")
        if isinstance(files, list):
            data["task_files"] = [str((base / str(f)).resolve()) for f in files]
        if isinstance(data.get("root"), str):
            data["root"] = str((base / data["root"]).resolve())
    return raw


def build_experiment(raw: dict, file: str, problems: Problems) -> ExperimentConfig | None:
    """Typed config from a raw mapping; stage `training:` blocks are merged over the top-level one,
    then (in a config without a grid; a grid's cells get theirs in grid.cell_config) the
    `training_per_task` entries of the tasks each stage trains."""
    raw = dict(raw)
    per_task = _per_task_training(raw.pop("training_per_task", None) or {}, file, problems)
    own_training: dict[str, dict] = {}
    for stage in STAGES:
        if isinstance(raw.get(stage), dict) and "training" in raw[stage]:
            raw[stage] = dict(raw[stage])
            own = coerce_fields(
                TrainingConfig, raw[stage].pop("training"), file, f"{stage}.training", problems
            )
            own_training[stage] = own or {}
    cfg = build(ExperimentConfig, raw, file=file, problems=problems)
    if cfg is None:
        return None
    base = {f.name: getattr(cfg.training, f.name) for f in dataclasses.fields(TrainingConfig)}
    for stage in STAGES:
        current = getattr(cfg, stage)
        if current is None:
            continue
        merged = construct(
            TrainingConfig, {**base, **own_training.get(stage, {})}, file, f"{stage}.training", problems
        )
        cfg = replace(cfg, **{stage: replace(current, training=merged or cfg.training)})
    cfg = replace(cfg, training_per_task=per_task)
    return cfg if cfg.grid is not None else with_task_training(cfg, file, problems)


def _per_task_training(raw: object, file: str, problems: Problems) -> dict[str, dict]:
    if not isinstance(raw, dict):
        problems.add(file, "training_per_task", "must be a mapping", raw, "task: {training fields}")
        return {}
    coerced = {}
    for task, fields in raw.items():
        own = coerce_fields(TrainingConfig, fields, file, f"training_per_task.{task}", problems)
        if own:
            coerced[str(task)] = own
    return coerced


def with_task_training(cfg: ExperimentConfig, file: str, problems: Problems) -> ExperimentConfig:
    """Each stage's training with the `training_per_task` fields of the task(s) it trains merged over
    it, field by field (a per-task value beats the stage's own block: it is the more specific). The
    tasks of a multi-task stage must agree on a field both set. Merging twice changes nothing."""
    for stage_name in STAGES:
        stage = getattr(cfg, stage_name)
        if stage is None:
            continue
        chosen: dict[str, tuple[str, object]] = {}
        for task in stage.task_names:
            for key, value in cfg.training_per_task.get(task, {}).items():
                first = chosen.setdefault(key, (task, value))
                if first[1] != value:
                    problems.add(
                        file,
                        f"training_per_task.{task}.{key}",
                        f"conflicts with training_per_task.{first[0]}.{key}; the {stage_name} stage trains both",
                        value,
                        f"{first[1]!r} as well, or the tasks in separate stages",
                    )
        if not chosen:
            continue
        current = {f.name: getattr(stage.training, f.name) for f in dataclasses.fields(TrainingConfig)}
        merged = construct(
            TrainingConfig,
            current | {key: value for key, (_, value) in chosen.items()},
            file,
            f"{stage_name}.training",
            problems,
        )
        if merged is not None:
            cfg = replace(cfg, **{stage_name: replace(stage, training=merged)})
    return cfg


def read_experiment(
    path: str | Path, overrides: list[str] | tuple[str, ...], problems: Problems
) -> tuple[ExperimentConfig | None, list[str]]:
    """Read, override and type-check an experiment (no catalog, file or grid checks: see validate);
    adds to `problems`, returns the config (None where it could not be built) and the override keys."""
    path = Path(path)
    pairs, override_problems = parse_overrides(list(overrides))
    problems.items.extend(override_problems.items)
    keys = [key for key, _ in pairs]
    raw = read_yaml(path, problems, "config file")
    if raw is None:
        return None, keys
    raw = _resolve_paths(apply_overrides(raw, pairs), path.resolve().parent)
    raw = read_deprecated_keys(raw, str(path), set(keys), problems)
    return build_experiment(raw, str(path), problems), keys


def read_deprecated_keys(raw: dict, file: str, override_keys: set[str], problems: Problems) -> dict:
    """`bf16: true/false` in a training block is read as `precision: bf16/fp32`, with a warning that
    names where it was found; given beside a different `precision`, it is a problem."""
    for block in TRAINING_BLOCKS:
        parent, node = None, raw
        for part in block.split("."):
            parent, node = node, node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or "bf16" not in node:
            continue
        where = f"{block}.bf16"
        source = OVERRIDES if where in override_keys else file
        node = dict(node)
        value = node.pop("bf16")
        parent[block.rpartition(".")[2]] = node
        if not isinstance(value, bool):
            problems.add(source, where, "wrong type", value, "true or false (deprecated: use precision)")
            continue
        new = "bf16" if value else "fp32"
        if node.get("precision", new) != new:
            problems.add(
                source,
                where,
                f"conflicts with precision: {node['precision']}",
                value,
                "only precision: auto | fp32 | bf16 | fp16 (bf16 is its deprecated spelling)",
            )
            continue
        node["precision"] = new
        warnings.warn(
            f"{source}: {where}: deprecated, read as {block}.precision: {new} (precision: auto, the "
            "default, picks bf16 only where the hardware runs it natively)",
            ConfigDeprecationWarning,
            stacklevel=3,
        )
    return raw


def blame_overrides(problems: Problems, keys: list[str]) -> None:
    """Problems in a value that came from the command line name <overrides>, not the YAML file."""
    for i, p in enumerate(problems.items):
        if any(p.where == k or p.where.startswith((f"{k}.", f"{k}[")) for k in keys):
            problems.items[i] = dataclasses.replace(p, file=OVERRIDES)


def dump_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
