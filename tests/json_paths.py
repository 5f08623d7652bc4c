"""Where a test can damage a JSON document: every path into it (shared by the fuzz tests)."""

from __future__ import annotations

from typing import Any


def paths(value: Any, prefix: tuple[Any, ...] = (), *, per_list: int | None = None) -> list[tuple[Any, ...]]:
    """Every path into ``value``, itself first; ``per_list``: only that many items of each list."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key), per_list=per_list)
    elif isinstance(value, list):
        for index, item in enumerate(value[:per_list]):
            found += paths(item, (*prefix, index), per_list=per_list)
    return found


def at(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value
