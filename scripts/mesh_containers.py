"""Build smolmesh's image and run the mesh in containers with podman, offline.

Kubernetes is where the mesh runs in production; this runs the same image with the same
privileges on one machine, so that what the manifests grant is tried, not only read. Each
Deployment of a rendered overlay becomes one container whose user, capabilities, seccomp,
AppArmor, /proc, user namespace, read-only root, environment, volumes, limits and grace
period come from its pod spec (``pod_options``), never retyped here. Its Service name is
its DNS name on a private container network, as in a cluster.

What it cannot be: Services that balance (one container per Deployment), NetworkPolicies,
HPAs, probes run by a kubelet (``wait_ready`` asks the same gRPC health the probes ask).

No image registry is reachable here, so the Python base image can be built from Debian
packages (``build_base``) and handed to the Dockerfile as ``BASE_IMAGE``.

    python scripts/mesh_containers.py seed     # base (if missing), image, mesh, seed task, stop
    python scripts/mesh_containers.py up       # base, image, mesh; prints the manager's port
    python scripts/mesh_containers.py down
"""

from __future__ import annotations

import argparse
import base64
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
UPSTREAM_BASE = "python:3.11.7-slim-bookworm"
STAND_IN_BASE = "localhost/smolmesh-python-base:3.11-bookworm"
BASE_PACKAGES = ("python3", "python3-pip", "python3-venv", "ca-certificates")
HOST_CA_CERTS = "/usr/local/share/ca-certificates"
ENGINE_SETTINGS = """\
[containers]
# Containers cannot raise rlimits above the host's here (no CAP_SYS_RESOURCE).
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
# crun refuses hybrid cgroups v1/v2; runc accepts them.
runtime = "runc"
"""
GRPC_PORT = 50051
STATE_DIR = Path(os.environ.get("MESH_CONTAINERS_DIR", "/tmp/smolmesh-containers"))
POD_USERNS_BASE = 1_000_000
"""First host uid of the ranges given to pods with ``hostUsers: false`` (65536 each)."""


class ContainerError(RuntimeError):
    """A podman or build step failed; the message carries its own output's tail."""


# ---- the engine ----


@dataclass
class Engine:
    """podman with this machine's two settings, optionally with a store of its own (images,
    containers, volumes; networks stay the machine's, so that their subnets never collide)."""

    home: Path
    private_store: bool = False
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        settings = ENGINE_SETTINGS
        if self.private_store:  # podman's own run state and volumes too
            settings += f'tmp_dir = "{self.home}/libpod"\nvolume_path = "{self.home}/volumes"\n'
        conf = self.home / "containers.conf"
        conf.write_text(settings)
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}
        if self.private_store:
            storage = self.home / "storage.conf"
            storage.write_text(
                f'[storage]\ndriver = "overlay"\ngraphroot = "{self.home}/graph"\n'
                f'runroot = "{self.home}/run"\n'
            )
            self.env["CONTAINERS_STORAGE_CONF"] = str(storage)

    def run(self, *args: str, timeout: float = 300, check: bool = True, input: str = "") -> str:
        """podman ``args``; its standard output (its error output is in the error)."""
        done = subprocess.run(["podman", *args], capture_output=True, text=True, input=input,
                              env=self.env, timeout=timeout)  # fmt: skip
        if check and done.returncode != 0:
            raise ContainerError(f"podman {args[0]} failed ({done.returncode}): "
                                 f"{_tail(done.stderr + done.stdout)}")  # fmt: skip
        return done.stdout

    def succeeds(self, *args: str, timeout: float = 60) -> bool:
        """Whether podman ``args`` exits 0 (a check, not a step)."""
        done = subprocess.run(["podman", *args], capture_output=True, env=self.env,
                              timeout=timeout)  # fmt: skip
        return done.returncode == 0

    def has_image(self, name: str) -> bool:
        return self.succeeds("image", "exists", name)

    def logs(self, name: str) -> str:
        done = subprocess.run(["podman", "logs", name], capture_output=True, text=True,
                              env=self.env, timeout=60)  # fmt: skip
        return "\n".join(line for line in (done.stdout + done.stderr).splitlines()
                         if "failed to connect to syslog" not in line)  # fmt: skip


def engine_missing() -> str | None:
    """Why no container can run here, or None."""
    for tool in ("podman", "runc", "mmdebstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/ensure_containers.sh installs it)"
    return None


def _tail(text: str, chars: int = 1500) -> str:
    text = text.strip()
    return text if len(text) <= chars else "…" + text[-chars:]


# ---- images ----


def apt_sources() -> list[str]:
    """This machine's Debian mirrors as one-line sources (the stand-in uses the same)."""
    lines = []
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in Path(path).read_text().split("\n\n"):
            fields = _deb822(stanza)
            if "deb" not in fields.get("Types", "").split() or fields.get("Enabled") == "no":
                continue
            for uri in fields.get("URIs", "").split():
                for suite in fields.get("Suites", "").split():
                    lines.append(f"deb {uri} {suite} {fields.get('Components', 'main')}")
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        if os.path.exists(path):
            lines += [line.strip() for line in Path(path).read_text().splitlines()
                      if line.strip().startswith("deb ")]  # fmt: skip
    return [line for line in lines if "debian" in line]


def _deb822(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in stanza.splitlines():
        if ":" in line and not line.startswith(("#", " ")):
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
    return fields


def build_base(engine: Engine, name: str = STAND_IN_BASE) -> float:
    """A stand-in for the Python slim image, from Debian packages; seconds taken.

    Debian's Python 3.11 (3.11.2, in dist-packages) instead of python.org's 3.11.7; pip must
    reach the package registry from inside a build, so the host's extra CA certificates go in.
    """
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mesh-base-") as work:
        rootfs = Path(work) / "rootfs.tar"
        hooks = [
            f'cp {HOST_CA_CERTS}/*.crt "$1{HOST_CA_CERTS}/" 2>/dev/null || true',
            'chroot "$1" update-ca-certificates',
            'rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
            'for n in python3 python; do ln -sf /usr/bin/python3 "$1/usr/local/bin/$n"; done',
            'ln -sf /usr/bin/pip3 "$1/usr/local/bin/pip"',
            'chroot "$1" apt-get clean',
            'rm -rf "$1"/var/lib/apt/lists/*',
        ]
        argv = ["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}"]
        argv += [f"--customize-hook={hook}" for hook in hooks]
        argv += ["bookworm", str(rootfs), *apt_sources()]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise ContainerError(f"mmdebstrap failed: {_tail(done.stderr)}")
        path = "PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
        engine.run("import", "--change", f"ENV {path}", "--change", "ENV LANG=C.UTF-8",
                   str(rootfs), name)  # fmt: skip
    return time.monotonic() - started


def build_image(engine: Engine, tag: str, base: str = STAND_IN_BASE) -> float:
    """The seed image from deploy/docker/Dockerfile on ``base``; seconds taken."""
    started = time.monotonic()
    engine.run("build", "--pull=never", "--build-arg", f"BASE_IMAGE={base}", "-t", tag,
               "-f", str(DOCKERFILE), str(ROOT), timeout=1200)  # fmt: skip
    return time.monotonic() - started


def layers(engine: Engine, image: str) -> list[tuple[int, str]]:
    """(bytes, instruction) per layer, oldest first."""
    out = engine.run("history", "--format", "json", image)
    return [(int(entry.get("size", 0)), str(entry.get("CreatedBy", entry.get("created_by", ""))))
            for entry in reversed(json.loads(out))]  # fmt: skip


# ---- pods from the manifests ----


def render(overlay: str) -> list[dict[str, Any]]:
    """The overlay's manifests, as kubectl would apply them."""
    kubectl = str(Path(sys.executable).parent / "kubectl")
    done = subprocess.run([kubectl, "kustomize", str(ROOT / "deploy" / "k8s" / overlay)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KUBECONFIG": os.devnull})  # fmt: skip
    if done.returncode != 0:
        raise ContainerError(f"kustomize failed: {_tail(done.stderr)}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def secrets_of(docs: Sequence[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Each Secret's values, decoded."""
    found: dict[str, dict[str, str]] = {}
    for doc in docs:
        if doc["kind"] == "Secret":
            values = {k: base64.b64decode(v).decode() for k, v in doc.get("data", {}).items()}
            values.update(doc.get("stringData", {}))
            found[doc["metadata"]["name"]] = values
    return found


def generated(values: dict[str, Any], name: str) -> str:
    """The key of ``name`` in ``values``, whose name kustomize may have suffixed with a hash."""
    return next(key for key in values if key == name or key.startswith(f"{name}-"))


def config_maps_of(docs: Sequence[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}


@dataclass
class Pod:
    """One Deployment as one container: its name is its Service's DNS name."""

    name: str
    image: str
    args: list[str]
    options: list[str]
    grace_s: int
    ports: list[int]


def pods(docs: Sequence[dict[str, Any]], work: Path, *, secrets: dict[str, dict[str, str]],
         env: dict[str, str | None], skip: Sequence[str] = ()) -> list[Pod]:  # fmt: skip
    """The overlay's Deployments (but ``skip``) as containers. ``secrets`` stand in for the
    cluster's; ``env`` overrides variables (None removes one)."""
    maps = config_maps_of(docs)
    found = []
    for index, doc in enumerate(d for d in docs if d["kind"] == "Deployment"):
        name = doc["metadata"]["name"]
        if name in skip:
            continue
        spec = doc["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        options = pod_options(spec, container, index=index)
        options += _environment(container, secrets, env)
        options += _volumes(spec, container, maps, work / name)
        ports = [int(p["containerPort"]) for p in container.get("ports", [])]
        grace_s = int(spec.get("terminationGracePeriodSeconds", 30))
        found.append(Pod(name, container["image"], list(container.get("args", [])), options,
                         grace_s, ports))  # fmt: skip
    return found


def pod_options(spec: dict[str, Any], container: dict[str, Any], *, index: int = 0) -> list[str]:
    """podman's options for the privileges and limits a pod spec gives its container.

    Every securityContext field is translated or refused: a field this does not know would
    otherwise be silently dropped, and the container would run with other privileges than
    the cluster's.
    """
    options = []
    if spec.get("hostUsers") is False:  # root in the pod is an unprivileged host user
        first = POD_USERNS_BASE + index * 65536
        options += ["--uidmap", f"0:{first}:65536", "--gidmap", f"0:{first}:65536"]
    context = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
    for key, value in context.items():
        options += _security_option(key, value, context)
    limits = container.get("resources", {}).get("limits", {})
    if "cpu" in limits:
        options.append(f"--cpus={_cpus(str(limits['cpu']))}")
    if "memory" in limits:
        options.append(f"--memory={_bytes(str(limits['memory']))}")
    return options


def _security_option(key: str, value: Any, context: dict[str, Any]) -> list[str]:
    if key == "runAsUser":
        group = context.get("runAsGroup")
        return ["--user", f"{value}:{group}" if group is not None else str(value)]
    if key == "runAsGroup":
        return []  # in --user, with runAsUser
    if key == "fsGroup":  # volumes' group, and the containers' supplementary group
        return ["--group-add", str(value)]
    if key == "runAsNonRoot":
        if value and context.get("runAsUser", 0) == 0:
            raise ContainerError("runAsNonRoot with runAsUser 0 would not start in a cluster")
        return []
    if key == "allowPrivilegeEscalation":
        return [] if value else ["--security-opt", "no-new-privileges"]
    if key == "readOnlyRootFilesystem":  # exactly: podman would add writable /tmp and /run
        return ["--read-only", "--read-only-tmpfs=false"] if value else []
    if key == "capabilities":
        drop = [f"--cap-drop={c.lower()}" for c in value.get("drop", [])]
        return drop + [f"--cap-add={c.lower()}" for c in value.get("add", [])]
    if key in ("seccompProfile", "appArmorProfile"):
        kind = value["type"]
        if kind == "RuntimeDefault":
            return []
        if kind == "Unconfined":
            return ["--security-opt", f"{'seccomp' if key == 'seccompProfile' else 'apparmor'}"
                    "=unconfined"]  # fmt: skip
    if key == "procMount":
        return ["--security-opt", "unmask=/proc/*"] if value == "Unmasked" else []
    raise ContainerError(f"securityContext {key}={value!r}: not translated to podman")


def _cpus(quantity: str) -> str:
    return str(int(quantity[:-1]) / 1000) if quantity.endswith("m") else quantity


def _bytes(quantity: str) -> str:
    units = {"Ki": "k", "Mi": "m", "Gi": "g"}
    return quantity[:-2] + units[quantity[-2:]] if quantity[-2:] in units else quantity


def _environment(container: dict[str, Any], secrets: dict[str, dict[str, str]],
                 overrides: dict[str, str | None]) -> list[str]:  # fmt: skip
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        values.update(secrets[source["secretRef"]["name"]])
    for entry in container.get("env", []):
        if "value" in entry:
            values[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            values[entry["name"]] = secrets[ref["name"]][ref["key"]]
    values.update({k: v for k, v in overrides.items() if v is not None})
    removed = {k for k, v in overrides.items() if v is None}
    return [f"--env={k}={v}" for k, v in values.items() if k not in removed]


def _volumes(spec: dict[str, Any], container: dict[str, Any], maps: dict[str, dict[str, str]],
             work: Path) -> list[str]:  # fmt: skip
    """ConfigMaps as read-only files, emptyDirs as tmpfs (world-writable, as a kubelet makes
    them), so a pod with a read-only root writes exactly where the cluster lets it."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    options = []
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            data = maps[volume["configMap"]["name"]]
            work.mkdir(parents=True, exist_ok=True)
            path = work / mount.get("subPath", volume["configMap"]["name"])
            path.write_text(data[mount["subPath"]])
            path.chmod(0o644)
            options.append(f"--volume={path}:{mount['mountPath']}:ro")
        elif "emptyDir" in volume:
            options.append(f"--tmpfs={mount['mountPath']}:mode=1777")
        else:
            raise ContainerError(f"volume {mount['name']}: only ConfigMaps and emptyDirs run here")
    return options


# ---- running ----


@dataclass
class Mesh:
    """The pods running as containers on their own network."""

    engine: Engine
    network: str
    pods: list[Pod]
    published: dict[str, int] = field(default_factory=dict)

    def container(self, pod: str) -> str:
        return f"{self.network}-{pod}"

    def start(self, image: str, *, publish: Sequence[str] = ()) -> None:
        """Every pod, published ones on a free loopback port; then wait until each answers
        the gRPC health its readiness probe asks."""
        for pod in self.pods:
            self.start_pod(pod, image, publish=pod.name in publish)
        for pod in self.pods:
            self.wait_ready(pod)

    def start_pod(self, pod: Pod, image: str, *, publish: bool = False,
                  options: Sequence[str] | None = None) -> str:  # fmt: skip
        name = self.container(pod.name)
        argv = ["run", "--detach", "--name", name, f"--network={self.network}",
                f"--network-alias={pod.name}", f"--stop-timeout={pod.grace_s}"]  # fmt: skip
        if publish:
            self.published[pod.name] = free_port()
            argv.append(f"--publish=127.0.0.1:{self.published[pod.name]}:{pod.ports[0]}")
        self.engine.run(*argv, *(pod.options if options is None else options), image, *pod.args)
        return name

    def wait_ready(self, pod: Pod, timeout_s: float = 60) -> None:
        name = self.container(pod.name)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.engine.run("inspect", "--format", "{{.State.Status}}", name).strip()
            if state != "running":
                raise ContainerError(f"{pod.name} is {state}: {_tail(self.engine.logs(name))}")
            if self.engine.succeeds("exec", name, "mesh", "health", f"127.0.0.1:{pod.ports[0]}"):
                return
            time.sleep(0.5)
        raise ContainerError(f"{pod.name} did not become ready: {_tail(self.engine.logs(name))}")

    def stop(self, pod: Pod) -> tuple[float, int]:
        """SIGTERM, as a kubelet sends it; (seconds to stop, exit code)."""
        name = self.container(pod.name)
        started = time.monotonic()
        self.engine.run("stop", "--time", str(pod.grace_s), name, timeout=pod.grace_s + 30)
        took = time.monotonic() - started
        code = int(self.engine.run("inspect", "--format", "{{.State.ExitCode}}", name))
        return took, code

    def remove(self) -> None:
        for pod in self.pods:
            self.engine.run("rm", "--force", "--time", "0", self.container(pod.name), check=False)


@contextmanager
def network(engine: Engine, name: str, image: str) -> Iterator[str]:
    """A network of the mesh's own: containers reach each other by name, and the host at its
    gateway address. (Not ``--internal``, which would cut the host off published ports.) The
    host has that address only while a container is on the network, so one holds it (from
    ``image``) until the end."""
    engine.run("network", "create", name)
    holder = f"{name}-holder"
    try:
        engine.run("run", "--detach", "--rm", "--name", holder, f"--network={name}",
                   "--entrypoint", "sleep", image, "infinity")  # fmt: skip
        yield engine.run("network", "inspect", "--format",
                         "{{range .Subnets}}{{.Gateway}}{{end}}", name).strip()  # fmt: skip
    finally:
        engine.run("rm", "--force", "--time", "0", holder, check=False)
        engine.run("network", "rm", "--force", name, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the command line ----

NETWORK = "smolmesh"
OVERLAY = "overlays/dev"
EMBEDDED_STATE = {"MESH_STATE_DSN": None, "MESH_MEMO_PATH": "/var/log/mesh/memo.sqlite3",
                  "MESH_RUNS_DIR": "/var/log/mesh/runs",
                  "MESH_SESSIONS_DIR": "/var/log/mesh/sessions",
                  "MESH_TOOL_LOG_DIR": "/var/log/mesh/tool-changes"}  # fmt: skip
"""Without --state, each container keeps its state in files on its log emptyDir (the
manifests expect PostgreSQL, which is not in this image)."""


def mesh_image(docs: Sequence[dict[str, Any]]) -> str:
    """The image the agents run (every Deployment but Jaeger's runs the same one)."""
    agents = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] != "jaeger"]
    return str(agents[0]["spec"]["template"]["spec"]["containers"][0]["image"])


def prepare(engine: Engine, image: str) -> None:
    """The image, built on python.org's base if this store has it, else on the stand-in (built
    first if missing)."""
    base = UPSTREAM_BASE if engine.has_image(UPSTREAM_BASE) else STAND_IN_BASE
    if not engine.has_image(base):
        print(f"building the stand-in base image {base} ...", flush=True)
        print(f"  {build_base(engine, base):.0f} s", flush=True)
    print(f"building {image} on {base} ...", flush=True)
    print(f"  {build_image(engine, image, base):.0f} s", flush=True)


def mesh_pods(engine: Engine, docs: Sequence[dict[str, Any]], state: str | None) -> list[Pod]:
    """The overlay's agents, with the state in ``state`` (a DSN) or else in files, and no OTLP
    endpoint (Jaeger's image cannot be pulled here: traces go to the trace files)."""
    secrets = secrets_of(docs)
    env: dict[str, str | None] = {"OTEL_EXPORTER_OTLP_ENDPOINT": None}
    if state:
        secrets[generated(secrets, "mesh-state")] = {"dsn": state}
    else:
        env.update(EMBEDDED_STATE)
    return pods(docs, engine.home / "pods", secrets=secrets, env=env, skip=("jaeger",))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["base", "image", "up", "seed", "down"])
    parser.add_argument("--state", help="a PostgreSQL DSN the containers can reach "
                        "(default: files in each container)")  # fmt: skip
    args = parser.parse_args(argv)
    missing = engine_missing()
    if missing:
        print(missing, file=sys.stderr)
        return 1
    engine = Engine(STATE_DIR)
    docs = render(OVERLAY)
    image = mesh_image(docs)
    mesh = Mesh(engine, NETWORK, mesh_pods(engine, docs, args.state))
    try:
        if args.command == "base":
            print(f"{build_base(engine):.0f} s")
        elif args.command == "image":
            prepare(engine, image)
        elif args.command == "down":
            mesh.remove()
            engine.run("network", "rm", "--force", NETWORK, check=False)
        else:
            prepare(engine, image)
            engine.run("network", "create", NETWORK)
            try:
                mesh.start(image, publish=["manager"])
                port = mesh.published["manager"]
                print(f"the manager answers on 127.0.0.1:{port}: "
                      f"mesh run --address 127.0.0.1:{port}", flush=True)  # fmt: skip
                if args.command == "seed":
                    print(engine.run("run", "--rm", f"--network={NETWORK}", image,
                                     "run", "--address", f"manager:{GRPC_PORT}"))  # fmt: skip
            finally:
                if args.command == "seed":
                    mesh.remove()
                    engine.run("network", "rm", "--force", NETWORK, check=False)
    except ContainerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
