"""What the image weighs and how fast the mesh comes up in containers (podman, offline).

Run by hand: ``.venv/bin/python bench/containers.py [ROUNDS]`` (as root, with podman; see
scripts/ensure_containers.sh). On a store of its own, cold: builds the Python base from
Debian packages and the image, then prints the image's size by layer. Then, ROUNDS times
(default 3): starts each Deployment of the dev overlay as a container with its manifest's
privileges (embedded state) and times it from `podman run` to SERVING on its gRPC health,
runs the seed task from a client container, and stops each with SIGTERM. Prints medians
(and min-max); asserts nothing.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from scripts.mesh_containers import (
    Engine,
    Mesh,
    build_base,
    build_image,
    layers,
    mesh_image,
    mesh_pods,
    network,
    render,
)

OVERLAY = "overlays/dev"


def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="mesh-bench-podman-") as home:
        engine = Engine(Path(home), private_store=True)
        try:
            measure(engine, rounds)
        finally:
            engine.run("rm", "--all", "--force", "--time", "0", check=False)
            engine.run("rmi", "--all", "--force", check=False)


def measure(engine: Engine, rounds: int) -> None:
    docs = render(OVERLAY)
    image = mesh_image(docs)
    print(f"stand-in Python base (mmdebstrap + import): {build_base(engine):6.1f} s")
    print(f"image, cold (no layer cached):              {build_image(engine, image):6.1f} s")
    print(f"image, again (every layer cached):          {build_image(engine, image):6.1f} s\n")
    print(f"{'layer':<72} {'MB':>8}")
    total = 0
    for size, step in layers(engine, image):
        total += size
        print(f"{' '.join(step.split())[:72]:<72} {size / 1e6:8.1f}")
    print(f"{'total':<72} {total / 1e6:8.1f}\n")

    starts: dict[str, list[float]] = {}
    stops: dict[str, list[float]] = {}
    seeds: list[float] = []
    agents = mesh_pods(engine, docs, state=None)
    for _ in range(rounds):
        name = f"mesh-bench-{uuid.uuid4().hex[:6]}"
        with network(engine, name, image):
            mesh = Mesh(engine, name, agents)
            try:
                for pod in agents:
                    started = time.monotonic()
                    mesh.start_pod(pod, image)
                    mesh.wait_ready(pod)
                    starts.setdefault(pod.name, []).append(time.monotonic() - started)
                started = time.monotonic()
                out = engine.run("run", "--rm", f"--network={name}", image,
                                 "run", "--address", "manager:50051")  # fmt: skip
                assert "2015" in out, out[-500:]
                seeds.append(time.monotonic() - started)
                for pod in agents:
                    took, _code = mesh.stop(pod)
                    stops.setdefault(pod.name, []).append(took)
            finally:
                mesh.remove()

    print(f"{'per service (s)':<24} {'start to SERVING':>22} {'SIGTERM to exit':>22}")
    for pod in agents:
        print(f"{pod.name:<24} {spread(starts[pod.name]):>22} {spread(stops[pod.name]):>22}")
    print(f"\nseed task from a client container (its start included): {spread(seeds)} s")


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
