"""Import paths in a config: ``package.module:name`` for one object, ``package.module`` for a
module.

Checked for shape when the config loads (so a typo fails with its field's
name before anything starts) and imported when the agent is built, with the
project's directory first on the import path. Import errors are reported with
the field and the cause, never as a traceback.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from mesh.errors import ConfigError
from mesh.text import clip

__all__ = ["check_reference", "import_module", "import_object", "is_reference", "on_import_path"]

MAX_REFERENCE_CHARS = 300


def is_reference(entry: str) -> bool:
    """Whether a tools entry is an import path rather than a built-in tool's name."""
    return "." in entry or ":" in entry


def check_reference(entry: str, where: str, *, callable_only: bool = False) -> None:
    module, _, attribute = entry.partition(":")
    shaped = len(entry) <= MAX_REFERENCE_CHARS and all(
        part.isidentifier() for part in module.split(".")
    )
    if attribute and not attribute.isidentifier():
        shaped = False
    if callable_only and not attribute:
        shaped = False
    if not shaped:
        form = "'package.module:function'" if callable_only else (
            "'package.module:name' or 'package.module'")  # fmt: skip
        raise ConfigError(f"{where}: {clip(entry, 80)!r} is not an import path like {form}")


def on_import_path(root: Path) -> None:
    """Make a project's packages importable (its directory first on ``sys.path``)."""
    path = str(root.resolve())
    if path not in sys.path:
        sys.path.insert(0, path)


def import_module(name: str, where: str, root: Path) -> ModuleType:
    _check_not_shadowed(name, where, root)
    try:
        return importlib.import_module(name)
    except Exception as err:  # any error while importing user code is a config error
        raise ConfigError(f"{where}: cannot import {name!r}: {type(err).__name__}: "
                          f"{clip(str(err), 300)}") from err  # fmt: skip


def import_object(entry: str, where: str, root: Path) -> Any:
    module_name, _, attribute = entry.partition(":")
    module = import_module(module_name, where, root)
    try:
        return getattr(module, attribute)
    except AttributeError as err:
        raise ConfigError(f"{where}: module {module_name!r} has no {attribute!r}") from err


def _check_not_shadowed(name: str, where: str, root: Path) -> None:
    """Refuse a top-level package that this process already imported from elsewhere: two
    projects whose packages share a name (both have ``services``) cannot share a process."""
    top = sys.modules.get(name.split(".")[0])
    origin = getattr(top, "__file__", None) or next(iter(getattr(top, "__path__", [])), None)
    if origin is None:
        return
    origin_path = Path(origin).resolve()
    project = root.resolve()
    if project in origin_path.parents:
        return
    if Path(sys.prefix).resolve() in origin_path.parents or "site-packages" in origin_path.parts:
        return  # an installed package: not the project's, and not shadowing it
    if (project / name.split(".")[0]).exists():
        raise ConfigError(
            f"{where}: package {name.split('.')[0]!r} is already imported from "
            f"{origin_path.parent} in this process, not from {project}; serve each project "
            "in its own process"
        )
