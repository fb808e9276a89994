"""Reading TOML tables field by field, so that every wrong field is named in its error.

``where`` is the dotted path of the table being read (``agents.manager``); an
error names the field under it (``agents.manager.kind: expected str``) and
never repeats more than a few dozen characters of the value.
"""

from __future__ import annotations

from typing import Any

from mesh.errors import ConfigError
from mesh.text import clip

__all__ = ["get", "join", "only", "positive", "table"]

MISSING: Any = ...


def table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """The sub-table ``key`` (empty when absent)."""
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{join(where, key)}: expected a table")
    return value


def get(
    data: dict[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    where: str,
    default: Any = MISSING,
) -> Any:
    """``data[key]`` checked to be of ``kind`` (a list must hold strings); required unless
    a default is given."""
    if key not in data:
        if default is MISSING:
            raise ConfigError(f"{join(where, key)}: required")
        return default
    value = data[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
        names = " or ".join(k.__name__ for k in kinds)
        raise ConfigError(f"{join(where, key)}: expected {names}, got {clip(repr(value), 60)}")
    if isinstance(value, list) and not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{join(where, key)}: expected a list of strings")
    return value


def positive(value: int, where: str) -> int:
    if value < 1:
        raise ConfigError(f"{where}: must be at least 1, got {value}")
    return value


def only(data: dict[str, Any], allowed: set[str], where: str) -> None:
    """Refuse unknown keys, naming the known ones (a typo is the usual cause)."""
    for key in data:
        if key not in allowed:
            raise ConfigError(
                f"{join(where, clip(key, 60))}: unknown field (known: {', '.join(sorted(allowed))})"
            )


def join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
