"""The type system, below the library and the checker: `Type`s the checker infers, `Param` kinds.

Types are `Type(base, depth)`: base is text | number | bool | json | any, depth the list nesting.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Type:
    base: str = "text"  # text | number | bool | json | any
    depth: int = 0

    def __str__(self) -> str:
        s = self.base
        for _ in range(self.depth):
            s = f"list[{s}]"
        return s

    @property
    def is_list(self) -> bool:
        return self.depth > 0 or self.base in ("json", "any")

    def elem(self) -> "Type":
        return Type(self.base, self.depth - 1) if self.depth else Type("any")

    def listed(self, k: int = 1) -> "Type":
        return Type(self.base, self.depth + k)


TEXT, NUMBER, BOOL, JSON, ANY = Type("text"), Type("number"), Type("bool"), Type("json"), Type("any")


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # text | number | bool | list | scalar | any | literal
    default: Any = ...  # ... = required
    at_least: int | None = None  # a whole number >= this (checked when written as a literal)

    @property
    def required(self) -> bool:
        return self.default is ...

