#!/usr/bin/env bash
# The container tests (tests/test_containers.py) build the image and run the mesh under podman,
# offline: Debian's podman with runc, and mmdebstrap to build the Python base image from
# Debian packages when no image registry is reachable. Installed here when missing (as root);
# elsewhere those tests are skipped and say why, and this says how to install them.
set -euo pipefail
PACKAGES=(podman runc mmdebstrap netavark aardvark-dns iptables catatonit uidmap)

if command -v podman >/dev/null && command -v runc >/dev/null && command -v mmdebstrap >/dev/null
then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "note: the container tests will be skipped: they need ${PACKAGES[*]} (Debian packages)" >&2
  exit 0
fi
echo "installing podman, runc and mmdebstrap from Debian for the container tests"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" \
  >/dev/null
