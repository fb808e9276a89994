"""Kubernetes manifests for a user's mesh, rendered from its mesh.toml alone.

``deploy/k8s/`` is the hand-written deployment of the seed mesh; this module makes the same
choices for any mesh.toml, so that a user's mesh deploys with one command
(``mesh manifests -o k8s/ && kubectl apply -k k8s/``):

- The image is the user's project on smolmesh's image (``deploy/docker/Dockerfile.project``):
  its WORKDIR /app holds mesh.toml and services/, so the config's relative paths resolve there.
- The config is a ConfigMap mounted over /app/mesh.toml with subPath, so the rest of /app stays
  visible. subPath mounts never see updates, so a hash of the config on each pod template rolls
  the pods when it changes.
- One Deployment and one Service per agent, named after the agent ('_' -> '-'). The entry's
  Service has a cluster IP; the others are headless, so callers balance across replicas.
- Each agent reaches the agents it manages through their Services (``MESH_ADDRESS_<CHILD>``,
  which overrides the address in mesh.toml).
- Privileges only where model-written code runs, and exactly what nsjail needs to build its
  jail (``JAIL_CONTEXT``; tests/test_containers.py proves each is needed): root in a user
  namespace of the pod's own (``hostUsers: false``), CAP_SETUID and CAP_SETGID, an unmasked
  /proc, unconfined seccomp (and AppArmor, whose default profile denies mount). Every other pod
  runs as uid 10001 with no capabilities. Every root filesystem is read-only.
- With an [auth] table, the files it names come from the Secret mesh-auth, mounted at the
  directory they are named in. With TLS, kubelet's gRPC probes (which cannot speak TLS) use a
  plaintext port that serves health checks alone (``mesh serve --health-address``).
- State is embedded (SQLite files on an emptyDir at /var/lib/mesh) unless ``[mesh] state``
  names a PostgreSQL DSN. Then every agent takes ``$MESH_STATE_DSN`` (which wins over the
  config) from the Secret mesh-state, key dsn, which holds the cluster's DSN; the pods keep
  only their audit log and traces, on an emptyDir at /var/log/mesh; and the ConfigMap's copy of
  the DSN loses its password, as everything printed does: a password never enters a manifest.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import tomllib
from dataclasses import dataclass
from typing import Any

from mesh.config import AgentConfig, MeshConfig
from mesh.errors import ConfigError
from mesh.state.setting import redacted

__all__ = [
    "auth_files",
    "dns_label",
    "render_manifests",
    "service_name",
    "service_names",
    "state_dsn",
]

Manifest = dict[str, Any]

CONFIG_MAP = "mesh-config"
MODEL_SECRET = "mesh-secrets"
AUTH_SECRET = "mesh-auth"
STATE_SECRET = "mesh-state"  # as deploy/k8s/base names it
STATE_KEY = "dsn"
STATE_ENV = "MESH_STATE_DSN"
DATA_DIR = "/var/lib/mesh"
DATA_ENV = {  # as deploy/docker/Dockerfile sets them, repeated so that any image agrees
    "MESH_MEMO_PATH": f"{DATA_DIR}/memo.sqlite3",
    "MESH_TRACE_DIR": f"{DATA_DIR}/traces",
    "MESH_AUDIT_DIR": f"{DATA_DIR}/audit",
    "MESH_TOOL_LOG_DIR": f"{DATA_DIR}/tool-changes",
    "MESH_RUNS_DIR": f"{DATA_DIR}/runs",
    "MESH_SESSIONS_DIR": f"{DATA_DIR}/sessions",
}
LOG_DIR = "/var/log/mesh"
LOG_ENV = {  # with shared state, all a pod keeps of its own (as deploy/k8s/base has it)
    "MESH_AUDIT_DIR": f"{LOG_DIR}/audit",
    "MESH_TRACE_DIR": f"{LOG_DIR}/traces",
}
HEALTH_PORT = 8081
USER_ID = 10001  # the image's unprivileged user
NSJAIL_CAPABILITIES = ("SETUID", "SETGID")
"""To map the jail's user and group (uid_map, gid_map); nothing else is needed, not even KILL
to cancel jailed code: its user namespace belongs to the container's root."""
JAIL_CONTEXT: Manifest = {
    "runAsUser": 0,  # in the pod's user namespace (hostUsers: false)
    "runAsNonRoot": False,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "procMount": "Unmasked",  # to mount the jail's own /proc; needs hostUsers: false
    "capabilities": {"drop": ["ALL"], "add": list(NSJAIL_CAPABILITIES)},
    "seccompProfile": {"type": "Unconfined"},  # to make namespaces and name the jail's host
    "appArmorProfile": {"type": "Unconfined"},  # the default profile denies mount
}
"""The securityContext of a pod that runs model-written code (deploy/k8s/base has the same)."""
RESOURCES = {  # (requests, limits) of (cpu, memory), as deploy/k8s/base gives them
    "code": (("500m", "512Mi"), ("2", "2Gi")),
    "tool-calling": (("250m", "256Mi"), ("1", "512Mi")),
}
_WHY_PRIVILEGED = (
    "runs model-written code in nsjail, which needs root (in the pod's user namespace), "
    "SETUID, SETGID, an unmasked /proc and unconfined seccomp and AppArmor to build its jail"
)
_AUTH_FILES = ("tls_cert", "tls_key", "tls_ca", "tokens_file", "token_file")
_NAME = "app.kubernetes.io/name"
_SERVICE_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class _Mesh:
    """What every agent's manifests share."""

    namespace: str
    image: str
    config_path: str
    config_sha256: str
    auth_dir: str | None
    tls: bool
    shared_state: bool


def render_manifests(
    config: MeshConfig, *, image: str, namespace: str, project_root_in_image: str = "/app"
) -> list[Manifest]:
    """Every object the mesh needs, in apply order: the Namespace, the config, then each
    agent's Deployment and Service."""
    written = config.path.read_text(encoding="utf-8")
    dsn = state_dsn(written)
    text = _without_password(written, dsn)
    config_path = posixpath.join(project_root_in_image, "mesh.toml")
    mesh = _Mesh(
        namespace=namespace,
        image=image,
        config_path=config_path,
        config_sha256=hashlib.sha256(text.encode()).hexdigest(),
        auth_dir=_auth_dir(config, text, project_root_in_image),
        tls=config.security is not None and config.security.tls,
        shared_state=bool(dsn),
    )
    names = service_names(config)
    ports = {agent.name: _port(agent) for agent in config.agents.values()}
    docs: list[Manifest] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CONFIG_MAP, "namespace": namespace},
            "data": {"mesh.toml": text},
        },
    ]
    for agent in config.agents.values():
        children: list[Manifest] = [
            {"name": f"MESH_ADDRESS_{child.upper()}", "value": f"{names[child]}:{ports[child]}"}
            for child in agent.depends_on()
        ]
        docs.append(_deployment(mesh, agent, names[agent.name], ports[agent.name], children))
        docs.append(
            _service(
                mesh, names[agent.name], ports[agent.name], headless=agent.name != config.entry
            )
        )
    return docs


def dns_label(text: str, default: str = "smolmesh") -> str:
    """``text`` as a DNS label (a namespace name): lower case, '-' for anything else."""
    label = re.sub(r"[^a-z0-9]+", "-", text.lower())[:63].strip("-")
    return label or default


def service_name(agent: str) -> str:
    """The agent's Deployment and Service name: its name with '-' for '_'."""
    name = agent.lower().replace("_", "-")
    if not _SERVICE_NAME.fullmatch(name):
        raise ConfigError(
            f"agents.{agent}: {name!r} is not a valid Service name; name the agent "
            "with a letter first and at most 63 characters"
        )
    return name


def service_names(config: MeshConfig) -> dict[str, str]:
    """Agent -> Service name, refusing two agents that would share one (``a_b`` and ``A_B``)."""
    names: dict[str, str] = {}
    for agent in config.agents:
        name = service_name(agent)
        if name in names.values():
            raise ConfigError(f"agents.{agent}: its Service name {name!r} is taken by another")
        names[agent] = name
    return names


def _port(agent: AgentConfig) -> int:
    port = int(agent.addresses[0].rsplit(":", 1)[1])
    if not 0 < port < 65536:
        raise ConfigError(f"agents.{agent.name}.address: a Service needs a fixed port, got {port}")
    return port


def _deployment(
    mesh: _Mesh, agent: AgentConfig, name: str, port: int, env: list[Manifest]
) -> Manifest:
    runs_code = agent.kind == "code"
    labels = {
        _NAME: name,
        "app.kubernetes.io/part-of": "smolmesh",
        "mesh.smolmesh.io/runs-code": str(runs_code).lower(),
    }
    metadata: Manifest = {"name": name, "namespace": mesh.namespace, "labels": labels}
    if runs_code:
        metadata["annotations"] = {"mesh.smolmesh.io/privileges": _WHY_PRIVILEGED}
    container, volumes = _container(mesh, agent, port, env)
    pod: Manifest = {"hostUsers": False} if runs_code else {}  # root in the pod is not the node's
    pod |= {
        "automountServiceAccountToken": False,  # agents never call the Kubernetes API
        "terminationGracePeriodSeconds": 30,
        "securityContext": {"fsGroup": USER_ID},  # uid 10001 may read the mounted Secret
        "containers": [container],
        "volumes": volumes,
    }
    template = {
        "metadata": {
            "labels": dict(labels),
            "annotations": {"mesh.smolmesh.io/config-sha256": mesh.config_sha256},
        },
        "spec": pod,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {"replicas": 1, "selector": {"matchLabels": {_NAME: name}}, "template": template},
    }


def _container(
    mesh: _Mesh, agent: AgentConfig, port: int, env: list[Manifest]
) -> tuple[Manifest, list[Manifest]]:
    """The agent's container and the pod's volumes it mounts."""
    runs_code = agent.kind == "code"
    args = ["serve", agent.name, "--config", mesh.config_path, "--address", f"0.0.0.0:{port}"]
    ports: list[Manifest] = [{"name": "grpc", "containerPort": port}]
    probed = port
    if mesh.tls:  # kubelet's gRPC probes cannot speak TLS: health alone, in plaintext
        probed = HEALTH_PORT if port != HEALTH_PORT else HEALTH_PORT + 1
        args += ["--health-address", f"0.0.0.0:{probed}"]
        ports.append({"name": "health", "containerPort": probed})
    mounts: list[Manifest] = [
        {"name": "config", "mountPath": mesh.config_path, "subPath": "mesh.toml", "readOnly": True}
    ]
    volumes: list[Manifest] = [{"name": "config", "configMap": {"name": CONFIG_MAP}}]
    if mesh.shared_state:  # the state is in PostgreSQL: the pod keeps its own logs alone
        state = {"secretKeyRef": {"name": STATE_SECRET, "key": STATE_KEY}}
        env = [*env, {"name": STATE_ENV, "valueFrom": state}, *_values(LOG_ENV)]
        mounts.append({"name": "logs", "mountPath": LOG_DIR})
        volumes.append({"name": "logs", "emptyDir": {}})
    else:
        env = [*env, *_values(DATA_ENV)]
        mounts.append({"name": "state", "mountPath": DATA_DIR})
        volumes.append({"name": "state", "emptyDir": {}})
    # The root filesystem is read-only: scratch space for the tools, and for the jail's root.
    mounts.append({"name": "tmp", "mountPath": "/tmp"})
    volumes.append({"name": "tmp", "emptyDir": {}})
    if mesh.auth_dir:
        mounts.append({"name": AUTH_SECRET, "mountPath": mesh.auth_dir, "readOnly": True})
        secret = {"secretName": AUTH_SECRET, "defaultMode": 0o440}  # owner and fsGroup only
        volumes.append({"name": AUTH_SECRET, "secret": secret})
    (cpu, memory), (cpu_limit, memory_limit) = RESOURCES[agent.kind]
    container = {
        "name": "agent",
        "image": mesh.image,
        "args": args,
        "ports": ports,
        "envFrom": [{"secretRef": {"name": MODEL_SECRET, "optional": True}}],
        "env": env,
        "readinessProbe": {"grpc": {"port": probed}, "periodSeconds": 5},
        "livenessProbe": {"grpc": {"port": probed}, "initialDelaySeconds": 10, "periodSeconds": 20},
        "resources": {
            "requests": {"cpu": cpu, "memory": memory},
            "limits": {"cpu": cpu_limit, "memory": memory_limit},
        },
        "securityContext": dict(JAIL_CONTEXT if runs_code else _locked_context()),
        "volumeMounts": mounts,
    }
    return container, volumes


def _values(variables: dict[str, str]) -> list[Manifest]:
    return [{"name": key, "value": value} for key, value in variables.items()]


def _service(mesh: _Mesh, name: str, port: int, *, headless: bool) -> Manifest:
    spec: Manifest = {"clusterIP": "None"} if headless else {"type": "ClusterIP"}
    spec["selector"] = {_NAME: name}
    spec["ports"] = [{"name": "grpc", "port": port, "targetPort": "grpc", "appProtocol": "grpc"}]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": mesh.namespace, "labels": {_NAME: name}},
        "spec": spec,
    }


def _locked_context() -> Manifest:
    return {
        "runAsUser": USER_ID,
        "runAsGroup": USER_ID,
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def auth_files(text: str) -> list[str]:
    """The files the [auth] table names, as written (the loaded config keeps only some)."""
    table = tomllib.loads(text).get("auth", {})
    return [table[key] for key in _AUTH_FILES if isinstance(table.get(key), str)]


def _auth_dir(config: MeshConfig, text: str, root: str) -> str | None:
    """Where the pods find the [auth] files: relative paths start at the project root."""
    files = auth_files(text) if config.security is not None else []
    dirs = {posixpath.dirname(posixpath.normpath(posixpath.join(root, f))) for f in files}
    if not dirs:
        return None
    if len(dirs) > 1:
        raise ConfigError(
            f"auth: keep the files it names in one directory (the Secret "
            f"{AUTH_SECRET} is mounted there), not {sorted(dirs)}"
        )
    (directory,) = dirs
    if directory in ("/", posixpath.normpath(root)) or root.startswith(directory + "/"):
        raise ConfigError(
            f"auth: keep the files it names in a directory of their own, e.g. "
            f"mesh-auth/: the Secret {AUTH_SECRET} is mounted over {directory}"
        )
    return directory


def state_dsn(text: str) -> str:
    """The ``[mesh] state`` DSN as written, "" for embedded state. From the text alone, like
    the manifests: the renderer's own ``$MESH_STATE_DSN`` is its machine's, not the cluster's."""
    value = tomllib.loads(text).get("mesh", {}).get("state", "")
    dsn = value.strip() if isinstance(value, str) else ""
    if dsn and not dsn.lower().startswith(("postgresql://", "postgres://")):
        # load_config checks it only when no $MESH_STATE_DSN (which wins) is set here
        raise ConfigError(f"mesh.state: expected a postgresql:// DSN, got {redacted(dsn)!r}")
    return dsn


def _without_password(text: str, dsn: str) -> str:
    """The mesh.toml for the ConfigMap: its DSN without the password (the pods take theirs
    from the Secret, and ``$MESH_STATE_DSN`` wins). Refused if the DSN is not written as one
    plain string that can be replaced, rather than risk the password going into the cluster."""
    safe = redacted(dsn)
    if not dsn or safe == dsn:
        return text
    replaced = text.replace(dsn, safe)
    if state_dsn(replaced) != safe:
        raise ConfigError(
            "mesh.state: its password would go into the ConfigMap; write the DSN as one plain "
            f"string, or leave the password out of mesh.toml (the pods take the DSN from the "
            f"Secret {STATE_SECRET})"
        )
    return replaced
