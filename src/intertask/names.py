"""A tiny name -> object registry whose misses answer "did you mean ...?"."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def close_matches(name: str, choices: list[str] | tuple[str, ...], n: int = 3) -> list[str]:
    return difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)


def suggest(name: object, choices: list[str] | tuple[str, ...]) -> str:
    """`did you mean 'xnli'?; known: a, b, c` (the first part only when something is close)."""
    hint = close_matches(str(name), choices)
    did_you_mean = f"did you mean {', '.join(repr(h) for h in hint)}?; " if hint else ""
    return f"{did_you_mean}known: {', '.join(sorted(choices))}"


def unknown_name_message(kind: str, name: object, choices: list[str] | tuple[str, ...]) -> str:
    """`unknown task 'xnl' (did you mean 'xnli'?; known: ...)`."""
    return f"unknown {kind} {name!r} ({suggest(name, choices)})"


class UnknownName(KeyError):
    """A lookup of a name that is not registered; str() is the full, helpful message."""

    def __init__(self, kind: str, name: object, choices: list[str]):
        super().__init__(name)
        self.kind, self.name, self.choices = kind, name, choices
        self.hint = close_matches(str(name), choices)

    def __str__(self) -> str:
        return unknown_name_message(self.kind, self.name, self.choices)


class Registry(Generic[T]):
    """A plain dict with a kind name, duplicate protection and helpful misses."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T, replace: bool = False) -> T:
        if name in self._items and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UnknownName(self.kind, name, list(self._items))
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)
