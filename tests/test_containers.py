"""The image and the deployment, run for real: the mesh in containers under podman.

The image is built from this checkout into a private image store (on a Python base built
from Debian packages: no registry is reachable), and each Deployment of the rendered dev
overlay runs as one container with exactly the privileges its manifest gives it, on a
network of its own. The state is in a real PostgreSQL, as in the cluster.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from mesh.rpc.client import AgentClient
from scripts.mesh_containers import (
    Engine,
    Mesh,
    Pod,
    build_base,
    build_image,
    engine_missing,
    generated,
    layers,
    network,
    pods,
    render,
    secrets_of,
)
from tests.mesh_setup import SEED_TASK
from tests.otlp_receiver import Receiver, serve_receiver
from tests.postgres_server import PostgresServer

MISSING = engine_missing()
pytestmark = [
    pytest.mark.skipif(MISSING is not None, reason=f"no container engine: {MISSING}"),
    pytest.mark.timeout(600),
]

OVERLAY = "overlays/dev"
SEED_ANSWER = "gRPC was open-sourced in 2015"
JAILERS = ("manager", "math-specialist")
"""The pods that run model-written code (label mesh.smolmesh.io/runs-code)."""


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return render(OVERLAY)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = Engine(tmp_path_factory.mktemp("podman"), private_store=True)
    yield engine
    engine.run("system", "reset", "--force", check=False, timeout=120)


@pytest.fixture(scope="module")
def image(engine: Engine, manifests: list[dict[str, Any]]) -> str:
    """The dev overlay's image, built here (its name is what the manifests run)."""
    build_base(engine)
    name = deployment(manifests, "manager")["spec"]["template"]["spec"]["containers"][0]["image"]
    build_image(engine, name)
    return str(name)


@pytest.fixture(scope="module")
def container_network(engine: Engine, image: str) -> Iterator[tuple[str, str]]:
    """(name, the host's address on it)."""
    name = f"mesh-test-{uuid.uuid4().hex[:8]}"
    with network(engine, name, image) as gateway:
        yield name, gateway


@pytest.fixture(scope="module")
def database(container_network: tuple[str, str]) -> Iterator[PostgresServer]:
    """The shared state, on the host, reachable from the containers' network only."""
    _, gateway = container_network
    server = PostgresServer(also_listen=gateway, trusted_network=f"{gateway}/24")
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def traces(container_network: tuple[str, str]) -> Iterator[tuple[Receiver, str]]:
    _, gateway = container_network
    collector, server, port = serve_receiver(gateway)
    yield collector, f"http://{gateway}:{port}"
    server.stop(0)


@pytest.fixture(scope="module")
def cluster(
    manifests: list[dict[str, Any]],
    container_network: tuple[str, str],
    database: PostgresServer,
    traces: tuple[Receiver, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """What the cluster gives the pods beyond their manifests: the Secrets' values (the state
    DSN names the host's PostgreSQL) and the OTLP endpoint (the host's receiver)."""
    _, gateway = container_network
    dsn = database.create_database("smolmesh").replace("127.0.0.1", gateway)
    secrets = secrets_of(manifests)
    secrets[generated(secrets, "mesh-state")] = {"dsn": dsn}
    return {
        "work": tmp_path_factory.mktemp("pods"),
        "secrets": secrets,
        "env": {"OTEL_EXPORTER_OTLP_ENDPOINT": traces[1]},
    }


@pytest.fixture(scope="module")
def mesh(
    engine: Engine,
    image: str,
    manifests: list[dict[str, Any]],
    container_network: tuple[str, str],
    cluster: dict[str, Any],
) -> Iterator[Mesh]:
    """The overlay's agents, started as the cluster would start them."""
    running = Mesh(engine, container_network[0], pods(manifests, **cluster, skip=["jaeger"]))
    try:
        running.start(image, publish=["manager"])
        yield running
    finally:
        running.remove()


def deployment(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)


def pod(mesh: Mesh, name: str) -> Pod:
    return next(p for p in mesh.pods if p.name == name)


def processes(engine: Engine, container: str) -> list[tuple[str, str]]:
    """(host user, command line) of each process in ``container``."""
    out = engine.run("top", container, "huser", "args")
    return [(line.split(None, 1)[0], line.split(None, 1)[1]) for line in out.splitlines()[1:]]


def test_the_seed_task_runs_through_the_containers(
    mesh: Mesh, engine: Engine, image: str, traces: tuple[Receiver, str], database: PostgresServer
) -> None:
    # From the host, through the manager's published port.
    address = f"127.0.0.1:{mesh.published['manager']}"
    with AgentClient([address], agent="manager") as client:
        outcome = client.run(SEED_TASK, run_id="from-the-host", timeout_s=120)
    assert outcome.answer_text.startswith(SEED_ANSWER)
    # From a client container on the mesh's network, by the manager's Service name.
    client_run = engine.run("run", "--rm", f"--network={mesh.network}", image,
                            "run", "--address", "manager:50051", timeout=180)  # fmt: skip
    assert SEED_ANSWER in client_run

    # The model's code ran in nsjail inside the code-running containers: each keeps its jail
    # (nsjail and the jailed interpreter, as an unprivileged host user) for the next run.
    for name in JAILERS:
        seen = processes(engine, mesh.container(name))
        assert any("nsjail" in command for _, command in seen), seen
        jailed = [user for user, command in seen if "/opt/mesh/zygote.py" in command]
        assert jailed and "root" not in jailed, seen
    research = processes(engine, mesh.container("research-specialist"))
    assert not any("nsjail" in command for _, command in research)

    # One trace spans the three containers.
    collector, _ = traces
    root = wait_for_span(collector, "invoke_agent manager", "from-the-host")
    services = {s.service for s in collector.spans if s.trace_id == root.trace_id}
    assert services == {"manager", "research_specialist", "math_specialist"}

    # The state is in PostgreSQL: the run, and the memo the research specialist wrote.
    with psycopg.connect(database.dsn("smolmesh")) as db:
        status = db.execute("SELECT status FROM mesh_runs WHERE run_id = 'from-the-host'")
        assert status.fetchone() == ("succeeded",)
        assert db.execute("SELECT count(*) FROM mesh_memo").fetchone() != (0,)


def wait_for_span(collector: Receiver, name: str, run_id: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s  # the services export in batches
    while time.monotonic() < deadline:
        with collector.lock:
            for span in collector.spans:
                if span.name == name and span.attributes.get("mesh.run_id") == run_id:
                    return span
        time.sleep(0.2)
    raise AssertionError(f"no span {name} of run {run_id} reached the receiver")


CANCEL_SPINNING_CODE = """
import os, threading, time
from mesh.sandbox import NsjailExecutor, SandboxConfig

class NoTools:
    def tool_names(self): return []
    def call(self, name, args): raise KeyError(name)

def spinning():
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            if open(f"/proc/{pid}/status").read().count("Uid:\\t65534") and int(stat[11]) > 50:
                return int(pid)
        except OSError:
            pass

executor = NsjailExecutor(SandboxConfig(wall_seconds=100))
spin = threading.Thread(target=executor.run, args=("while True:\\n    pass", NoTools()))
spin.daemon = True
spin.start()
deadline = time.monotonic() + 20
while (pid := spinning()) is None and time.monotonic() < deadline:
    time.sleep(0.1)
assert pid is not None, "the code never ran"
executor.close()
deadline = time.monotonic() + 5
while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
    time.sleep(0.05)
print("killed" if not os.path.exists(f"/proc/{pid}") else "still running")
"""


def test_cancelling_kills_jailed_code_with_the_manifests_privileges(
    mesh: Mesh, engine: Engine
) -> None:
    """Without CAP_KILL: the jail's user namespace is the container root's own."""
    out = engine.run("exec", mesh.container("math-specialist"), "python3", "-c",
                     CANCEL_SPINNING_CODE, timeout=60)  # fmt: skip
    assert out.strip().splitlines()[-1] == "killed"


# Each privilege the code-running pods have, taken away: the service must refuse to start and
# say what nsjail could not do, in nsjail's own words.
REMOVALS = {
    "SETUID": ({"capabilities": {"drop": ["ALL"], "add": ["SETGID"]}}, "uid_map"),
    "SETGID": ({"capabilities": {"drop": ["ALL"], "add": ["SETUID"]}}, "gid_map"),
    "seccomp Unconfined": ({"seccompProfile": {"type": "RuntimeDefault"}}, "sethostname"),
    "procMount Unmasked": ({"procMount": "Default"}, "/proc"),
}  # fmt: skip


@pytest.mark.parametrize("removed", list(REMOVALS))
def test_each_privilege_of_the_jail_is_needed(
    removed: str, mesh: Mesh, engine: Engine, image: str, manifests: list[dict[str, Any]],
    cluster: dict[str, Any],
) -> None:  # fmt: skip
    change, nsjail_says = REMOVALS[removed]
    weaker = copy.deepcopy(deployment(manifests, "math-specialist"))
    weaker["metadata"]["name"] = f"math-without-{uuid.uuid4().hex[:6]}"
    weaker["spec"]["template"]["spec"]["containers"][0]["securityContext"].update(change)
    others = [d for d in manifests if d["kind"] != "Deployment"]
    (without,) = pods([weaker, *others], **cluster)
    name = mesh.start_pod(without, image)
    try:
        code = engine.run("wait", name, timeout=60).strip()
        logs = engine.logs(name)
    finally:
        engine.run("rm", "--force", name, check=False)
    assert code == "1", logs
    assert "error (sandbox_unavailable): the nsjail sandbox could not start" in logs
    assert nsjail_says in logs and "signal" not in logs
    assert "Traceback" not in logs


def test_the_image_holds_no_build_or_test_tools_and_no_dead_layers(
    engine: Engine, image: str
) -> None:
    installed = engine.run("run", "--rm", "--entrypoint", "python3", image, "-m", "pip", "list",
                           "--format", "json")  # fmt: skip
    names = {p["name"].lower() for p in json.loads(installed)}
    assert "smolmesh" in names
    assert not names & {"pytest", "ruff", "mypy", "kubernetes-validate", "podman-compose"}
    steps = [step for _, step in layers(engine, image)]
    assert not any("/wheels" in step and "COPY" in step for step in steps), steps
    user = engine.run("image", "inspect", "--format", "{{.Config.User}}", image).strip()
    assert user == "10001"


def test_sigterm_stops_every_container_within_its_grace_period(mesh: Mesh) -> None:
    """Last: it stops the mesh the other tests use."""
    for each in mesh.pods:
        took, code = mesh.stop(each)
        assert code == 0, (each.name, code, mesh.engine.logs(mesh.container(each.name))[-2000:])
        assert took < each.grace_s, (each.name, took)
