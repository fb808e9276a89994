"""``ConsoleServer``: the console on an address of its own, served by uvicorn in a thread.

As the A2A card server does (``mesh.rpc.a2a.service.CardServer``), the socket is
bound here, before anything is served: a taken port fails at once with a
``ConfigError`` that names it, and port 0 takes a free one, which ``url`` then
tells. The server runs in a thread with its own event loop, so that ``mesh ui``
can wait for a signal and ``mesh up`` supervise its services meanwhile.

Safe by default: bound to a loopback address the console answers to loopback
names only; bound anywhere else it needs a token, and refuses to start without.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import uvicorn

from mesh.config import MeshConfig
from mesh.console.app import console_app
from mesh.console.security import LOOPBACK_HOSTS, check_token, is_loopback
from mesh.errors import ConfigError
from mesh.rpc.http_socket import bound_socket
from mesh.text import clip

__all__ = ["DEFAULT_ADDRESS", "TOKEN_ENV", "ConsoleServer", "check_console"]

DEFAULT_ADDRESS = "127.0.0.1:8090"
TOKEN_ENV = "MESH_CONSOLE_TOKEN"
START_TIMEOUT_S = 10.0
STOP_GRACE_S = 2
"""How long stopping waits for requests under way (event streams are ended first)."""


class ConsoleServer:
    """``with ConsoleServer(config, "127.0.0.1:0", token=None, jaeger_url=None) as console:
    console.url``"""

    def __init__(
        self,
        config: MeshConfig,
        address: str = DEFAULT_ADDRESS,
        *,
        token: str | None,
        jaeger_url: str | None,
        addresses: Mapping[str, Sequence[str]] | None = None,
        **app_options: Any,
    ) -> None:
        check_console(address, token)
        host = address.rpartition(":")[0].strip("[]")
        loopback = is_loopback(host)
        self._socket = bound_socket(address, "the console")
        try:
            app = console_app(config, token=token, jaeger_url=jaeger_url, addresses=addresses,
                              allowed_hosts=LOOPBACK_HOSTS if loopback else None,
                              **app_options)  # fmt: skip
        except BaseException:
            self._socket.close()
            raise
        self._feeds = app.state.feeds
        self.port: int = self._socket.getsockname()[1]
        shown = f"[{host}]" if ":" in host else (host or "0.0.0.0")
        self.url = f"http://{shown}:{self.port}/"
        self._server = uvicorn.Server(uvicorn.Config(
            app, log_level="warning", lifespan="on", access_log=False,
            timeout_graceful_shutdown=STOP_GRACE_S,
        ))  # fmt: skip
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def open_streams(self) -> int:
        """How many event streams pages hold open now."""
        return len(self._feeds)

    def start(self) -> ConsoleServer:
        self._thread = threading.Thread(target=self._serve, name="console", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"the console did not start within {START_TIMEOUT_S:g} s")
            time.sleep(0.01)
        if not self._server.started:
            self._socket.close()
            raise ConfigError(f"the console could not start: {self._error!r}")
        return self

    def stop(self) -> None:
        self._feeds.close_all()  # else uvicorn waits for the streams to end
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=STOP_GRACE_S + 5)
        self._socket.close()

    def __enter__(self) -> ConsoleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._socket]))
        except BaseException as err:  # reported by start(); the thread just ends
            self._error = err


def check_console(address: str, token: str | None) -> None:
    """Refuse a console that would be open to others: bound beyond loopback without a token,
    or with a token too weak to guard it."""
    if token is not None:
        check_token(token)
    elif not is_loopback(address.rpartition(":")[0]):
        raise ConfigError(
            f"refusing to serve the console on {clip(address, 80)} without a token: anyone "
            f"who can reach that address could run tasks on the mesh. Give one with --token "
            f"or ${TOKEN_ENV}, or serve on 127.0.0.1"
        )
