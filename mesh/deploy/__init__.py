"""Deploying a user's mesh: Kubernetes manifests rendered from its mesh.toml.

Pure functions over a loaded :class:`~mesh.config.MeshConfig`; nothing here talks to a
cluster or opens a channel, so ``mesh manifests`` works offline and the tests need no cluster.
"""

from __future__ import annotations

from mesh.deploy.k8s import dns_label, render_manifests, service_name
from mesh.deploy.output import setup_notes, to_yaml, write_manifests

__all__ = [
    "dns_label",
    "render_manifests",
    "service_name",
    "setup_notes",
    "to_yaml",
    "write_manifests",
]
