#!/usr/bin/env bash
# The tests start real PostgreSQL servers of their own (tests/postgres_server.py): they need
# the server binaries. Debian's package gives them; installed here when missing (as root).
set -euo pipefail
PACKAGE=postgresql-15   # the major version the suite and deploy/ run

if [ -n "${MESH_PG_BIN:-}" ] || compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null \
    || command -v initdb >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "The tests need a PostgreSQL server: install Debian's $PACKAGE (or your system's" >&2
  echo "PostgreSQL 15 server) and, if its binaries are not on PATH, set MESH_PG_BIN." >&2
  exit 1
fi
echo "installing $PACKAGE from Debian for the tests"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$PACKAGE" >/dev/null
