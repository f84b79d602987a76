"""Typed YAML -> frozen dataclass building that reports every problem at once.

Used for experiment configs and task declarations alike. A dataclass checks its own values in
`__post_init__` through `FieldChecks`; the builder re-labels those problems with the file and the dotted
field path, so a direct Python construction and a YAML load give the same messages.
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from intertask.errors import ConfigError, Problem, Problems
from intertask.names import close_matches

T = TypeVar("T")
INVALID = object()  # marker: a value could not be coerced (a problem was recorded)
CODE = "<python>"  # the "file" of problems found when a dataclass is built directly in code


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class FieldChecks:
    """Collects value problems inside __post_init__ and raises them together."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def require(self, ok: bool, field: str, problem: str, got: object, expected: str) -> None:
        if not ok:
            self.items.append(Problem(CODE, field, problem, got, expected))

    def done(self) -> None:
        if self.items:
            raise ConfigError(self.items)


def describe(hint: Any) -> str:
    """Human wording of a type hint: 'an integer', 'a list of strings', 'one of: a, b'."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is type(None):
        return "null"
    if origin is Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is tuple:
        return f"a list of {_plural(args[0])}"
    if origin is dict:
        return f"a mapping of names to {_plural(args[1])}"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


def _plural(hint: Any) -> str:
    words = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}
    return words.get(hint, describe(hint))


def _coerce_scalar(hint: Any, value: Any) -> Any:
    if hint is bool:
        return value if isinstance(value, bool) else INVALID
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else INVALID
    if hint is float:
        if isinstance(value, bool):
            return INVALID
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 5e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                return INVALID
        return INVALID
    if hint is str:
        if isinstance(value, str):
            return value
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else INVALID
    return INVALID


def coerce(hint: Any, value: Any, file: str, where: str, problems: Problems) -> Any:
    """Check `value` against `hint`; return the typed value or INVALID (after recording a problem)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own problems are the informative ones
            return coerce(options[0], value, file, where, problems)
        for option in options:
            trial = Problems()
            result = coerce(option, value, file, where, trial)
            if result is not INVALID:
                return result
        problems.add(file, where, "wrong type", got=value, expected=describe(hint))
        return INVALID
    if origin is Literal:
        if value in args:
            return value
        hint_words = close_matches(str(value), [str(a) for a in args])
        suggestion = f"did you mean {hint_words[0]!r}?; " if hint_words else ""
        problems.add(file, where, "unknown value", got=value, expected=suggestion + describe(hint))
        return INVALID
    if origin is tuple:
        items = value if isinstance(value, list | tuple) else [value]
        if isinstance(value, dict) or value is None:
            problems.add(file, where, "wrong type", got=value, expected=describe(hint))
            return INVALID
        out = [coerce(args[0], v, file, f"{where}[{i}]", problems) for i, v in enumerate(items)]
        return INVALID if any(o is INVALID for o in out) else tuple(out)
    if origin is dict:
        if not isinstance(value, dict):
            problems.add(file, where, "wrong type", got=value, expected=describe(hint))
            return INVALID
        out = {str(k): coerce(args[1], v, file, join(where, str(k)), problems) for k, v in value.items()}
        return INVALID if any(o is INVALID for o in out.values()) else out
    if dataclasses.is_dataclass(hint):
        built = build(hint, value, file=file, path=where, problems=problems)
        return INVALID if built is None else built
    result = _coerce_scalar(hint, value)
    if result is INVALID:
        problems.add(file, where, "wrong type", got=value, expected=describe(hint))
    return result


def init_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def unknown_keys(cls: type, raw: dict, file: str, path: str, problems: Problems) -> None:
    known = list(init_fields(cls))
    for key in raw:
        if key not in known:
            hint = close_matches(str(key), known)
            expected = (f"did you mean {hint[0]!r}?; " if hint else "") + "one of: " + ", ".join(known)
            problems.add(file, join(path, str(key)), "unknown key", got=key, expected=expected)


def coerce_fields(cls: type, raw: Any, file: str, path: str, problems: Problems) -> dict[str, Any] | None:
    """Typed values of the valid keys in `raw` (a partial); None if raw is not a mapping.

    Invalid values are recorded as problems and left out, so that building goes on with defaults and
    the checks after it still report everything else in the same error.
    """
    if not isinstance(raw, dict):
        problems.add(file, path or "(top level)", "must be a mapping", got=raw, expected="key: value pairs")
        return None
    unknown_keys(cls, raw, file, path, problems)
    hints = get_type_hints(cls)
    fields = init_fields(cls)
    values = {}
    for name, value in raw.items():
        if name in fields:
            typed = coerce(hints[name], value, file, join(path, name), problems)
            if typed is not INVALID:
                values[name] = typed
    return values


def construct(
    cls: type[T],
    kwargs: dict[str, Any],
    file: str,
    path: str,
    problems: Problems,
    invalid: frozenset[str] = frozenset(),
) -> T | None:
    """cls(**kwargs), turning its __post_init__ checks into problems labelled with file and path.

    Fields in `invalid` were given but failed to coerce (already reported): checks about them, which
    saw the default instead, are not reported again."""
    try:
        return cls(**kwargs)
    except ConfigError as err:
        for p in err.problems:
            if p.where.split(".")[0].split("[")[0] in invalid:
                continue
            problems.add(file, join(path, p.where), p.problem, p.got, p.expected)
        return None


def build(cls: type[T], raw: Any, *, file: str, path: str = "", problems: Problems) -> T | None:
    """Build a dataclass from a YAML mapping; record problems (missing, unknown, mistyped, invalid).

    Returns None when a required field is missing or invalid, or the values fail the class's checks.
    """
    values = coerce_fields(cls, raw, file, path, problems)
    if values is None:
        return None
    hints = get_type_hints(cls)
    required = [
        n for n, f in init_fields(cls).items() if f.default is f.default_factory is dataclasses.MISSING
    ]
    for name in required:
        if name not in raw:
            problems.add(file, join(path, name), "missing required field", expected=describe(hints[name]))
    if any(name not in values for name in required):
        return None
    invalid = frozenset(n for n in raw if n in init_fields(cls) and n not in values)
    return construct(cls, values, file, path, problems, invalid)


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain YAML-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def field_type(cls: type, dotted: str) -> Any:
    """The type hint at a dotted path below a dataclass, or raise KeyError naming the first bad part."""
    hint: Any = cls
    for part in dotted.split("."):
        hint = _strip_optional(hint)
        if not (dataclasses.is_dataclass(hint) and part in init_fields(hint)):
            raise KeyError(part)
        hint = get_type_hints(hint)[part]
    return hint


def _strip_optional(hint: Any) -> Any:
    if get_origin(hint) in (Union, types.UnionType):
        rest = [a for a in get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def read_yaml(path: Path, problems: Problems, what: str) -> dict | None:
    """A YAML file's top-level mapping, or None after recording why not (missing, invalid, not a mapping)."""
    if not path.is_file():
        problems.add(str(path), "", f"{what} not found", expected=f"a YAML {what}")
        return None
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problems.add(str(path), where, f"invalid YAML: {getattr(err, 'problem', err)}")
        return None
    if not isinstance(raw, dict):
        problems.add(str(path), "", "top level must be a mapping", type(raw).__name__, "key: value pairs")
        return None
    return raw
