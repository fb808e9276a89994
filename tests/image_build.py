"""The container tests' image, built in the background from the moment the session knows it
will need it.

Building the stand-in Python base and the image cold takes two minutes or more, mostly
waiting on podman and the disk, while the rest of the suite leaves a core idle; begun when
collection ends, the build is done (or nearly) when the container tests ask for it. It goes
into a private image store of its own, removed when the session ends.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

from scripts.mesh_containers import Engine, build_base, build_image, engine_missing, render

__all__ = ["ImageBuild", "image_build", "start_image_build", "stop_image_build"]

OVERLAY = "overlays/dev"


class ImageBuild:
    """A private image store and the dev overlay's image being built into it."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="mesh-test-podman-"))
        self.engine = Engine(self.home, private_store=True)
        self._name = ""
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._build, name="image-build", daemon=True)
        self._thread.start()

    def _build(self) -> None:
        try:
            docs = render(OVERLAY)
            manager = next(d for d in docs if d["kind"] == "Deployment"
                           and d["metadata"]["name"] == "manager")  # fmt: skip
            name = manager["spec"]["template"]["spec"]["containers"][0]["image"]
            build_base(self.engine)
            build_image(self.engine, name)
            self._name = str(name)
        except BaseException as err:  # handed to the test that asks for the image
            self._error = err

    def image(self) -> str:
        """The image's name, once built; the build's own error if it failed."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._name

    def remove(self) -> None:
        """Wait for the build, then remove every container and image, and the store itself.
        Not `podman system reset`: it would also remove every network on the machine."""
        self._thread.join()
        self.engine.run("rm", "--all", "--force", "--time", "0", check=False, timeout=120)
        self.engine.run("rmi", "--all", "--force", check=False, timeout=120)
        shutil.rmtree(self.home, ignore_errors=True)


_started: list[ImageBuild] = []


def start_image_build() -> None:
    """Begin the build (once), where podman can run."""
    if not _started and engine_missing() is None:
        _started.append(ImageBuild())


def image_build() -> ImageBuild:
    """The build begun at collection, or one begun now (a test run on its own)."""
    if not _started:
        _started.append(ImageBuild())
    return _started[0]


def stop_image_build() -> None:
    while _started:
        _started.pop().remove()
