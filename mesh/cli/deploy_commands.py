"""``mesh manifests``: the Kubernetes manifests of a user's mesh, from its mesh.toml.

    mesh manifests -o k8s/ && kubectl apply -k k8s/
    mesh manifests --image registry.example.com/my-mesh:1.2 | kubectl apply -f -

The image is the user's project built on smolmesh's (deploy/docker/Dockerfile.project); the
namespace defaults to the project directory's name, so two projects never share one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mesh.config import load_config
from mesh.deploy import dns_label, render_manifests, setup_notes, to_yaml, write_manifests
from mesh.errors import ConfigError
from mesh.version import __version__

__all__ = ["DEFAULT_IMAGE", "add_manifests_command", "manifests"]

DEFAULT_IMAGE = f"smolmesh/smolmesh:{__version__}"


def add_manifests_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register ``mesh manifests`` on the ``mesh`` parser's subcommands (what
    ``ArgumentParser.add_subparsers()`` returned), beside the other verbs."""
    sub = commands.add_parser(
        "manifests", help="Kubernetes manifests for the mesh (kubectl apply -k)"
    )
    sub.add_argument(
        "--config",
        type=Path,
        default=Path("mesh.toml"),
        help="the mesh config (default ./mesh.toml)",
    )
    sub.add_argument(
        "--image",
        default=DEFAULT_IMAGE,
        help="the image with your project in it, built FROM smolmesh/smolmesh "
        f"(see deploy/docker/Dockerfile.project; default {DEFAULT_IMAGE})",
    )
    sub.add_argument("--namespace", help="the namespace (default: the project directory's name)")
    sub.add_argument(
        "-o",
        "--out",
        type=Path,
        metavar="DIR",
        help="write one file per object and a kustomization.yaml here "
        "(default: print one YAML stream)",
    )
    sub.set_defaults(func=manifests)
    return sub


def manifests(args: argparse.Namespace) -> int:
    """Render the manifests; what must be done by hand (the Secrets) goes to the user, never
    into the YAML stream, so that stdout can be piped to ``kubectl apply -f -``."""
    config = load_config(args.config)
    namespace = args.namespace or dns_label(config.path.resolve().parent.name)
    if namespace != dns_label(namespace, default=""):
        raise ConfigError(f"--namespace: {namespace!r} is not a DNS label (a-z, 0-9, '-')")
    docs = render_manifests(config, image=args.image, namespace=namespace)
    notes = setup_notes(config, namespace)
    if args.out is None:
        sys.stdout.write(to_yaml(docs))
        print("\n".join(["# Before the first apply:", *notes]), file=sys.stderr)
        return 0
    kustomization = write_manifests(docs, args.out, notes)
    print(f"wrote {len(docs)} objects and {kustomization}\nBefore the first apply:")
    for line in [*notes, f"kubectl apply -k {args.out}"]:
        print(f"  {line}")
    return 0
