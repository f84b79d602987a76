"""User-facing errors: each names the file, the field or line, the problem, what was got and expected."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Secrets in URLs (an Optuna storage, a database-backed MLflow store, a tracking server with basic
# auth), which never reach a param, tag, logged config, printed line or error: the password of
# user:password@; the whole user part of an http(s) URL without a password (a token used as the user
# name: https://<token>@host); and query parameters that carry one (?password=, &token=, ...). A
# database URL's bare user name (postgresql://tuner@db/optuna, its password from PGPASSWORD) stays.
_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]+):(?P<secret>[^@\s'\"/]+)@")
_TOKEN_USER = re.compile(r"(?P<head>\b(?:https?|wss?)://)(?P<secret>[^:/@\s'\"]+)@", re.IGNORECASE)
SECRET_PARAMETERS = ("password", "passwd", "pwd", "token", "access_token", "secret", "api_key", "apikey")
_QUERY_SECRET = re.compile(
    rf"(?P<head>[?&;](?:{'|'.join(SECRET_PARAMETERS)})=)(?P<secret>[^&;#\s'\"]+)", re.IGNORECASE
)


def redact(text: str) -> str:
    """`text` with every secret in a URL replaced by ***: postgresql://user:***@host/db,
    https://***@host, ...?password=***."""
    if "@" in text:
        text = _CREDENTIALS.sub(lambda m: f"{m['head']}:***@", text)
        text = _TOKEN_USER.sub(lambda m: f"{m['head']}***@", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(lambda m: f"{m['head']}***", text)
    return text


@dataclass(frozen=True)
class Problem:
    """One thing wrong with user input, rendered `<file>: <where>: <problem> (got ...; expected ...)`."""

    file: str
    where: str  # a dotted config field, or "line N" / "line N, column C" in a data file
    problem: str
    got: object = None
    expected: str | None = None

    def __str__(self) -> str:
        detail = []
        if self.got is not None:
            detail.append(f"got {_show(self.got)}")
        if self.expected:
            detail.append(f"expected {self.expected}")
        tail = f" ({'; '.join(detail)})" if detail else ""
        where = f"{self.where}: " if self.where else ""
        return redact(f"{self.file}: {where}{self.problem}{tail}")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


class InputError(Exception):
    """Bad user input (config, task declaration, data, model reference): one or more Problems."""

    def __init__(self, problems: list[Problem]):
        if not problems:
            raise ValueError("InputError needs at least one problem")
        unique = {str(p): p for p in reversed(problems)}  # the same problem found twice is shown once
        self.problems = [unique[k] for k in dict.fromkeys(str(p) for p in problems)]
        super().__init__(self.render())

    def render(self) -> str:
        if len(self.problems) == 1:
            return str(self.problems[0])
        lines = [f"{len(self.problems)} problems:"] + [f"  {p}" for p in self.problems]
        return "\n".join(lines)


class ConfigError(InputError):
    """An experiment config, override or task declaration is invalid."""


class DataError(InputError):
    """A data file is missing, empty or malformed."""

    @classmethod
    def at(cls, file: object, where: str, problem: str, got: object = None, expected: str | None = None):
        return cls([Problem(str(file), where, problem, got, expected)])


class ModelError(InputError):
    """A model reference (path, hub id, models:/ URI, run id) cannot be used."""


class Problems:
    """Collects problems so that all of them are reported at once."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, file: str, where: str, problem: str, got: object = None, expected: str | None = None):
        self.items.append(Problem(file, where, problem, got, expected))

    def extend(self, error: InputError) -> None:
        self.items.extend(error.problems)

    def raise_if_any(self, kind: type[InputError] = ConfigError) -> None:
        if self.items:
            raise kind(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler or `kill` stopping the process): ends the open runs KILLED, like Ctrl-C."""

    run_status = "KILLED"


class ClusterError(RuntimeError):
    """The cluster running a study's stages cannot go on (no node can take the waiting stages): a
    message naming what it waits for, no stack trace, exit status 4."""
