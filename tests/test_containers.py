"""The image and the deployment, run for real: the mesh in containers under podman.

The image is built from this checkout into a private image store (on a Python base built
from Debian packages: no registry is reachable), and each Deployment of the rendered dev
overlay runs as one container with exactly the privileges its manifest gives it, on a
network of its own. The state is in a real PostgreSQL, as in the cluster.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from mesh.rpc.client import AgentClient
from scripts.mesh_containers import (
    Engine,
    Mesh,
    Pod,
    engine_missing,
    free_port,
    generated,
    layers,
    network,
    pod_options,
    pods,
    render,
    secrets_of,
)
from tests.image_build import image_build, stop_image_build
from tests.mesh_setup import SEED_TASK
from tests.otlp_receiver import Receiver, serve_receiver
from tests.postgres_server import PostgresServer
from tests.support import wait_until

MISSING = engine_missing()
pytestmark = [
    pytest.mark.skipif(MISSING is not None, reason=f"no container engine: {MISSING}"),
    pytest.mark.timeout(600),
]

ROOT = Path(__file__).parent.parent
OVERLAY = "overlays/dev"
SEED_ANSWER = "gRPC was open-sourced in 2015"
JAILERS = ("manager", "math-specialist")
"""The pods that run model-written code (label mesh.smolmesh.io/runs-code)."""


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return render(OVERLAY)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    """podman with the private store the image is built into (see ``tests.image_build``)."""
    yield image_build().engine
    stop_image_build()


@pytest.fixture(scope="module")
def image(engine: Engine) -> str:
    """The dev overlay's image (its name is what the manifests run), built from this
    checkout since the session began."""
    return image_build().image()


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


def wait_for_span(collector: Receiver, name: str, run_id: str) -> Any:
    def found() -> Any:
        with collector.lock:
            ours = [s for s in collector.spans if s.attributes.get("mesh.run_id") == run_id]
            return next((s for s in ours if s.name == name), None)

    return wait_until(found, timeout_s=30)  # the services export in batches


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


@pytest.mark.parametrize("overlay", ["base", "overlays/dev", "overlays/prod"])
def test_every_pod_of_every_overlay_translates_to_podman(overlay: str) -> None:
    """A securityContext field the runner does not know is refused, never dropped: each
    overlay's pods must translate whole (and the jail's exactly as the test above runs it)."""
    for doc in render(overlay):
        if doc["kind"] == "Deployment":
            spec = doc["spec"]["template"]["spec"]
            options = pod_options(spec, spec["containers"][0])
            if doc["metadata"]["name"] in JAILERS:
                assert "--cap-add=setuid" in options and "unmask=/proc/*" in options


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


COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = str(Path(sys.executable).parent / "podman-compose")
COMPOSE_AGENTS = ("math-specialist", "research-specialist", "manager")


def test_compose_runs_the_seed_task_as_shipped(engine: Engine, image: str, tmp_path: Path) -> None:
    """deploy/compose as shipped but for Jaeger, whose image cannot be pulled here: an OTLP
    receiver of ours takes its place (and its name), so the agents' exporters are unchanged."""
    engine.run("tag", image, compose_image())
    override = tmp_path / "jaeger-stand-in.yaml"
    override.write_text(yaml.safe_dump({"services": {"jaeger": {
        "image": compose_image(), "entrypoint": ["python3", "/stand_in.py"],
        "volumes": [f"{Path(__file__).parent / 'containers' / 'otlp_stand_in.py'}:/stand_in.py:ro"],
    }}}))  # fmt: skip
    project = f"mesh-compose-{uuid.uuid4().hex[:6]}"
    ports = {name: str(free_port()) for name in ("MESH_PORT", "JAEGER_UI_PORT", "OTLP_PORT")}

    def compose(*args: str, timeout: float = 120) -> str:
        done = subprocess.run([COMPOSE, "-p", project, "-f", "compose.yaml", "-f", str(override),
                               *args], cwd=COMPOSE_DIR, env={**engine.env, **ports},
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip
        if done.returncode != 0:
            pytest.fail(
                f"podman-compose {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stdout[-3000:]}\n{_without_podman_noise(done.stderr)}"
            )
        return done.stdout

    try:
        compose("up", "--detach")
        # podman 4.3 schedules health checks with systemd, which this machine lacks, and
        # podman-compose skips `condition: service_healthy` below podman 4.6: run the shipped
        # health checks as the engine would, until each agent passes its own.
        for agent in COMPOSE_AGENTS:
            wait_until_healthy(engine, f"{project}_{agent}_1")
        out = compose("--profile", "client", "run", "--rm", "client", timeout=180)
        assert SEED_ANSWER in out
        math = processes(engine, f"{project}_math-specialist_1")
        assert any("nsjail" in command for _, command in math), math
        spans = [json.loads(line) for line in engine.logs(f"{project}_jaeger_1").splitlines()
                 if line.startswith("{")]  # fmt: skip
        roots = [s for s in spans if s["name"] == "invoke_agent manager" and s["run_id"]]
        assert roots, spans[-5:]
        traced = {s["service"] for s in spans if s["trace_id"] == roots[0]["trace_id"]}
        assert traced == {"manager", "research_specialist", "math_specialist"}
        started = time.monotonic()
        compose("stop", *COMPOSE_AGENTS, timeout=120)  # SIGTERM, then 30 s of grace
        assert time.monotonic() - started < 30
        for agent in COMPOSE_AGENTS:
            code = engine.run("inspect", "--format", "{{.State.ExitCode}}", f"{project}_{agent}_1")
            assert code.strip() == "0", (agent, engine.logs(f"{project}_{agent}_1")[-2000:])
    finally:
        compose("down", "--volumes", timeout=180)


def compose_image() -> str:
    shipped = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    return str(shipped["x-agent"]["image"])


def _without_podman_noise(stderr: str) -> str:
    """What a failed compose command said, without podman 4.3's complaints that this machine
    has no systemd to schedule health checks (they drown the real error)."""
    lines = [line for line in stderr.splitlines() if "systemd" not in line]
    return "\n".join(lines)[-3000:]


def wait_until_healthy(engine: Engine, container: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not engine.succeeds("healthcheck", "run", container):
        assert time.monotonic() < deadline, engine.logs(container)[-2000:]
        time.sleep(0.5)


def test_kube_play_reads_the_pods_privileges_as_our_runner_does(
    engine: Engine, image: str, manifests: list[dict[str, Any]], cluster: dict[str, Any],
    tmp_path: Path,
) -> None:  # fmt: skip
    """podman's own Kubernetes reader, on the rendered dev overlay, gives each agent's
    container the user, capabilities, privilege escalation and read-only root that ours does.

    What podman 4.3's `kube play` cannot do, so that the overlay cannot run under it (the
    runner above runs it instead): it ignores the securityContext's seccompProfile and
    procMount (the jail then cannot start), gives a `hostUsers: false` pod 1024 ids (the jail's
    user 65534 is not among them), mounts a ConfigMap's directory where a subPath names a file,
    stores the Secrets it reads in a form it cannot read back, and has no Services' DNS,
    NetworkPolicies, HPAs or probes without systemd. Its Secrets are made beforehand here.
    """
    if not subuid_for_containers():
        pytest.skip("no ids for podman's user namespaces: run scripts/ensure_containers.sh")
    agents = [
        d for d in manifests if d["kind"] == "Deployment" and d["metadata"]["name"] != "jaeger"
    ]
    for secret in [d for d in manifests if d["kind"] == "Secret"]:
        engine.run("secret", "create", secret["metadata"]["name"], "-",
                   input=json.dumps(podman_secret(secret)))  # fmt: skip
    played = tmp_path / "overlay.yaml"
    others = [d for d in manifests if d["kind"] in ("ConfigMap",)]
    played.write_text(yaml.safe_dump_all([*others, *agents]))
    engine.run("kube", "play", "--start=false", str(played))
    try:
        for agent in agents:
            name = agent["metadata"]["name"]
            theirs = security(engine, f"{name}-pod-0-agent")
            (ours_pod,) = pods([agent, *others], **cluster)
            ours_name = f"ours-{name}-{uuid.uuid4().hex[:6]}"
            engine.run("create", "--name", ours_name, *ours_pod.options, image, *ours_pod.args)
            try:
                ours = security(engine, ours_name)
            finally:
                engine.run("rm", "--force", ours_name, check=False)
            assert theirs == ours, name
            jailer = name in JAILERS
            assert ours["capabilities"] == (["CAP_SETGID", "CAP_SETUID"] if jailer else [])
            assert ours["user"] == ("0" if jailer else "10001")
            assert ours["user_namespace"] is jailer and ours["read_only_root"] is True
            assert "/tmp" in ours["writable"] and "/var/log/mesh" in ours["writable"]
    finally:
        engine.run("kube", "down", str(played), check=False)
        for secret in [d for d in manifests if d["kind"] == "Secret"]:
            engine.run("secret", "rm", secret["metadata"]["name"], check=False)


def subuid_for_containers() -> bool:
    try:
        return any(line.startswith("containers:") for line in open("/etc/subuid"))
    except OSError:
        return False


def podman_secret(secret: dict[str, Any]) -> dict[str, str]:
    """A Secret as podman 4.3's `kube play` reads it: its keys' base64 values, as JSON."""
    values = dict(secret.get("data", {}))
    for key, text in secret.get("stringData", {}).items():
        values[key] = base64.b64encode(text.encode()).decode()
    return values


def security(engine: Engine, container: str) -> dict[str, Any]:
    """What podman made of a container's privileges (the fields both readers set)."""
    (found,) = json.loads(engine.run("inspect", container))
    host = found["HostConfig"]
    writable = {m["Destination"] for m in found["Mounts"] if m.get("RW")} | set(host["Tmpfs"])
    return {
        "user": found["Config"]["User"],
        "capabilities": sorted(found.get("EffectiveCaps") or []),
        "no_new_privileges": "no-new-privileges" in (host.get("SecurityOpt") or []),
        "read_only_root": host["ReadonlyRootfs"],
        "user_namespace": bool((host.get("IDMappings") or {}).get("UidMap")),
        "writable": sorted(writable),
        "environment": sorted(v.split("=", 1)[0] for v in found["Config"]["Env"]
                              if v.startswith(("MESH_", "OTEL_"))),
    }  # fmt: skip


def test_sigterm_stops_every_container_within_its_grace_period(mesh: Mesh) -> None:
    """Last: it stops the mesh the other tests use."""
    for each in mesh.pods:
        took, code = mesh.stop(each)
        assert code == 0, (each.name, code, mesh.engine.logs(mesh.container(each.name))[-2000:])
        assert took < each.grace_s, (each.name, took)
