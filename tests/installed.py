"""smolmesh as a user gets it: a wheel of this checkout installed in a fresh environment.

``installed`` (a session fixture, registered in conftest.py) is that
environment's ``bin`` directory. The new environment borrows the
dependencies of this one through a ``.pth`` line, which adds a directory to
``sys.path`` without running the ``.pth`` files in it, so the editable
install of this checkout stays inactive there: files missing from the wheel
(the ``mesh new`` template is package data) fail there and nowhere else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def subprocess_env() -> dict[str, str]:
    """This environment (the conftest's data directories, no API keys) without what would make
    a child import something other than what it is given."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTEST_ADDOPTS", "PYTHONSTARTUP"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this checkout, built offline with what this environment has.

    Built from a copy of the sources, so that the build's scratch files (``build/``,
    ``*.egg-info``) and any stale ones there never meet the checkout.
    """
    scratch = tmp_path_factory.mktemp("wheel")
    source = scratch / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "mesh", source / "mesh",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*_cache"))  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--no-cache-dir", "--disable-pip-version-check", "-q", "-w", str(scratch / "dist"),
         str(source)],
        capture_output=True, text=True, env=subprocess_env(), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (built,) = (scratch / "dist").glob("smolmesh-*.whl")
    return built


@pytest.fixture(scope="session")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` directory of a fresh virtual environment with smolmesh from ``wheel``."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)  # fmt: skip
    python = venv / "bin" / "python"
    # pip from this environment, run by the new interpreter: the wheel lands in the new
    # environment, which cannot yet see this one's smolmesh (the .pth comes after).
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "--no-cache-dir", "--disable-pip-version-check", "-q", str(wheel)],
        capture_output=True, text=True, env=subprocess_env(), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()  # fmt: skip
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "_smolmesh_test_deps.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    where = subprocess.run([str(python), "-c", "import mesh; print(mesh.__file__)"],
                           capture_output=True, text=True, cwd=venv, env=subprocess_env(),
                           timeout=60)  # fmt: skip
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # the wheel's mesh
    return venv / "bin"
