"""The layers of ``mesh`` read top to bottom: no module imports from a layer above its own.

Every import in the package counts, at the top of a module or inside a
function (a late import is still a dependency). ``from mesh import X`` counts
as the module ``mesh.X`` when there is one, else as the public API (the top).
"""

from __future__ import annotations

import ast
from pathlib import Path

import mesh

PACKAGE = Path(mesh.__file__).parent

LAYERS: list[set[str]] = [
    # Foundations: no knowledge of agents, models or the wire.
    {"errors", "text", "paths", "untrusted_json", "append_only", "rotating_file",
     "sqlite_usage", "data_limit", "references", "config_fields", "run_scope", "data", "version",
     "files"},
    {"state"},  # the shared state database: a pool, migrations, notifications
    {"tools", "sandbox"},
    {"models"},
    {"telemetry", "mcp"},
    {"agents"},
    {"host"},  # what a process serving an agent keeps: runs, ledger, audit
    {"rpc", "_proto"},
    {"config", "project", "deploy", "launcher"},  # a whole project: agents, models, auth
    {"cli", "console", "__main__", "__init__", "templates"},
]  # fmt: skip
GENERATED = "_proto"


def layer_of(unit: str) -> int:
    return next(n for n, units in enumerate(LAYERS) if unit in units)


def unit_of(module: str) -> str:
    """``mesh.agents.base`` -> ``agents``; ``mesh`` itself -> ``__init__`` (the public API)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(path: Path, *, runtime: bool = False) -> set[str]:
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    if runtime:  # leave out the ``if TYPE_CHECKING:`` blocks
        tree.body = [n for n in tree.body if not _type_checking_only(n)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "mesh":
                found |= {f"mesh.{a.name}" if _is_module(a.name) else "mesh" for a in node.names}
            else:
                found.add(node.module)
    return {name for name in found if name == "mesh" or name.startswith("mesh.")}


def _type_checking_only(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in (
        "TYPE_CHECKING",
        "typing.TYPE_CHECKING",
    )


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name / "__init__.py").exists()


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        found[name] = path
    return found


def test_no_module_imports_from_a_layer_above() -> None:
    upward = []
    for name, path in modules().items():
        own = layer_of(unit_of(name) if name != "mesh" else "__init__")
        for imported in imported_modules(path):
            if layer_of(unit_of(imported)) > own:
                upward.append(f"{name} -> {imported}")
    assert upward == []


def test_only_the_rpc_layer_imports_generated_code() -> None:
    outside = {name for name, path in modules().items()
               if unit_of(name) not in ("rpc", GENERATED)
               and any(unit_of(i) == GENERATED for i in imported_modules(path))}  # fmt: skip
    assert outside == set()


def test_every_unit_has_a_layer() -> None:
    units = {unit_of(name) for name in modules() if name != "mesh"}
    assert units <= set().union(*LAYERS), units - set().union(*LAYERS)


def test_no_import_cycle() -> None:
    """Inside a layer too: a cycle hidden behind a late import is still a cycle. (Names
    imported for type hints only, under ``if TYPE_CHECKING``, are not imports at run time.)"""
    found = modules()
    graph = {name: {m for m in imported_modules(path, runtime=True) if m in found} - {name}
             for name, path in found.items()}  # fmt: skip
    cycles: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for imported in sorted(graph[name]):
            if state.get(imported) == "open":
                cycles.append([*path[path.index(imported) :], imported])
            elif imported not in state:
                visit(imported, [*path, imported])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert [" -> ".join(c) for c in cycles] == []
