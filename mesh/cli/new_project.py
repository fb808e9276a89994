"""``mesh new DIR``: a working mesh project to start from.

The template ships inside the package (``mesh/templates/project``), so a
pip-installed smolmesh makes the same project as a checkout: a manager and a
specialist with a tool of its own, cassettes that let ``mesh demo`` and
``pytest`` run offline at once, and a README that says what to change.

A user's files are never overwritten: a directory that is not empty is
refused, and with ``--force`` it is accepted only when none of the template's
files exist in it yet. Every check runs before the first file is written.
"""

from __future__ import annotations

import argparse
import shlex
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath

from mesh.cli.console import say
from mesh.errors import ConfigError

__all__ = ["add_new_command", "new_project", "template_files"]

TEMPLATE = ("templates", "project")
_SKIPPED = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"}
"""Left behind by running the template's own checks in a checkout; never copied."""


def add_new_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    new = commands.add_parser("new", help="make a working mesh project to start from")
    new.add_argument("directory", type=Path, help="where to make it (created if missing)")
    new.add_argument("--force", action="store_true", help="write into a directory that is not "
                     "empty (files of the same name are still never overwritten)")  # fmt: skip
    new.set_defaults(func=new_project)


def template_files() -> dict[PurePosixPath, Traversable]:
    """The template's files by their path in a new project."""
    files: dict[PurePosixPath, Traversable] = {}

    def walk(node: Traversable, path: PurePosixPath) -> None:
        for child in node.iterdir():
            if child.name in _SKIPPED or child.name.endswith((".pyc", ".pyo")):
                continue
            if child.is_dir():
                walk(child, path / child.name)
            else:
                files[path / child.name] = child

    walk(resources.files("mesh").joinpath(*TEMPLATE), PurePosixPath())
    if not files:  # a broken install, not a user's mistake: say so rather than write nothing
        raise ConfigError("the project template is missing from this smolmesh installation")
    return files


def new_project(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    files = template_files()
    _check_target(directory, files, force=args.force)
    for relative, source in sorted(files.items()):
        target = directory.joinpath(*relative.parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("xb") as out:  # "x": never replace a file, even one made meanwhile
                out.write(source.read_bytes())
        except OSError as err:
            raise ConfigError(f"cannot write {target}: {err.strerror or err}") from err
    say(f"Made a mesh project in {directory}: a manager and a text specialist with a tool of "
        "its own, and cassettes so that it runs offline. Next:")  # fmt: skip
    print(f"  cd {shlex.quote(str(directory))}")
    print("  mesh demo    # start the mesh, run its task (replayed without a model key), stop it")
    print("  pytest       # the tool's unit tests and the whole mesh on its task")
    print("Then read README.md: adding a tool, recording against a live model, serving.")
    return 0


def _check_target(directory: Path, files: dict[PurePosixPath, Traversable], force: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} exists and is not a directory")
    if not directory.exists() or not any(directory.iterdir()):
        return
    if not force:
        raise ConfigError(f"{directory} is not empty; choose a new directory, or pass --force "
                          "to add the project beside what is there")  # fmt: skip
    clashes = sorted(str(p) for p in files if _taken(directory, p))
    if clashes:
        raise ConfigError(f"{directory} already has {', '.join(clashes)}; not overwriting "
                          "(move them away, or choose a new directory)")  # fmt: skip


def _taken(directory: Path, relative: PurePosixPath) -> bool:
    """Whether writing ``relative`` would need to replace something: the file itself (or a
    link by its name), or a file where one of its directories goes."""
    target = directory.joinpath(*relative.parts)
    if target.exists() or target.is_symlink():
        return True
    parents = [directory.joinpath(*relative.parts[:n]) for n in range(1, len(relative.parts))]
    return any(p.exists() and not p.is_dir() for p in parents)
