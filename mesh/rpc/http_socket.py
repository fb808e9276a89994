"""The listening socket of an HTTP server the mesh runs beside its gRPC one (the A2A
agent card, the web console): bound before the server starts, so that a taken port is a
clear error at once and port 0 gives the port actually bound."""

from __future__ import annotations

import socket

from mesh.errors import ConfigError
from mesh.text import clip

__all__ = ["bound_socket"]


def bound_socket(address: str, purpose: str) -> socket.socket:
    """A TCP socket bound to ``address`` ("host:port", port 0: a free one); ConfigError
    naming ``purpose`` if it cannot be."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP said outright: asyncio then sets TCP_NODELAY on each connection (it checks
    # the protocol), else Nagle holds each small write of a stream for the client's delayed
    # ACK (40 ms on Linux) once a connection is kept alive.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except (OSError, ValueError, OverflowError) as err:
        sock.close()
        raise ConfigError(f"cannot serve {purpose} on {clip(address, 80)}: {err}") from err
    return sock
