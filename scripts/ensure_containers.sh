#!/usr/bin/env bash
# The container tests (tests/test_containers.py) build the image and run the mesh under podman,
# offline: Debian's podman with runc, and mmdebstrap to build the Python base image from
# Debian packages when no image registry is reachable. Installed here when missing (as root);
# elsewhere those tests are skipped and say why, and this says how to install them.
set -euo pipefail
# The set verified on Debian 12 machines like CI's, with their recommended packages
# (netavark, aardvark-dns, catatonit, uidmap, ...).
PACKAGES=(podman buildah runc mmdebstrap)

if ! { command -v podman && command -v runc && command -v mmdebstrap; } >/dev/null; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "note: the container tests will be skipped: they need ${PACKAGES[*]} (Debian)" >&2
    exit 0
  fi
  echo "installing podman, runc and mmdebstrap from Debian for the container tests"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
fi
# `podman kube play` gives a pod with hostUsers: false a user namespace from the ids of the
# user "containers" (podman's documented setup for --userns=auto).
if [ "$(id -u)" = 0 ]; then
  for file in /etc/subuid /etc/subgid; do
    if ! grep -q '^containers:' "$file" 2>/dev/null; then
      echo "containers:2147483647:2147483648" >> "$file"
      echo "added ids for podman's user namespaces to $file"
    fi
  done
fi
