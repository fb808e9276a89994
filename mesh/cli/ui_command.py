"""``mesh ui``: the web console of a running mesh; and ``mesh up --ui``, beside the mesh it starts.

The console calls the agents at the config's addresses (``mesh ui``) or at those
``mesh up`` started them on, with the mesh's TLS and token. It binds to
127.0.0.1 unless told otherwise, and anywhere else only with a token (``--token``,
better ``$MESH_CONSOLE_TOKEN``: a command line is visible to every user of the
machine).
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from mesh.cli.console import say
from mesh.config import MeshConfig
from mesh.console import DEFAULT_ADDRESS, TOKEN_ENV, ConsoleServer
from mesh.console.serve import check_console
from mesh.project import load_mesh_config

__all__ = [
    "add_console_options",
    "add_ui_options",
    "check_console_args",
    "console_beside",
    "ui",
]


def add_ui_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=DEFAULT_ADDRESS, metavar="HOST:PORT",
                        help=f"where to serve the console (default {DEFAULT_ADDRESS}; port 0: "
                        "a free one; any host but loopback needs a token)")  # fmt: skip
    add_console_options(parser, token_flag="--token")


def add_console_options(parser: argparse.ArgumentParser, token_flag: str = "--ui-token") -> None:
    """The options ``mesh ui`` and ``mesh up --ui`` share (``mesh up`` says ``--ui-token``:
    its services have tokens of their own)."""
    parser.add_argument(token_flag, dest="token", default=None,
                        help=f"a token the console requires of every request (default "
                        f"${TOKEN_ENV}); required when it is bound beyond loopback")  # fmt: skip
    parser.add_argument("--jaeger-url", metavar="URL",
                        help="a Jaeger UI to link each run's trace to (http://host:16686); "
                        "without it the console shows the local trace files' spans")  # fmt: skip


def ui(args: argparse.Namespace) -> int:
    config = load_mesh_config(args.config)
    with _console(args, args.address, config) as console:
        _announce(console, _token(args))
        _wait_for_signal()
        say("Stopping the console.")
    return 0


@contextmanager
def console_beside(
    args: argparse.Namespace, config: MeshConfig, addresses: Mapping[str, Sequence[str]]
) -> Iterator[ConsoleServer | None]:
    """``mesh up --ui``: the console of the mesh just started (nothing without ``--ui``)."""
    if not args.ui:
        yield None
        return
    with _console(args, args.ui, config, addresses) as console:
        _announce(console, _token(args))
        yield console


def check_console_args(args: argparse.Namespace) -> None:
    """Refuse a console that would not start before starting a whole mesh for it."""
    if args.ui:
        check_console(args.ui, _token(args))


def _console(
    args: argparse.Namespace,
    address: str,
    config: MeshConfig,
    addresses: Mapping[str, Sequence[str]] | None = None,
) -> ConsoleServer:
    return ConsoleServer(config, address, token=_token(args), jaeger_url=args.jaeger_url,
                         addresses=addresses)  # fmt: skip


def _token(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get(TOKEN_ENV) or None


def _announce(console: ConsoleServer, token: str | None) -> None:
    print(f"Console: {console.url}", flush=True)
    if token is not None:
        say(f"The console asks for its token: open {console.url}login?token=TOKEN once, or "
            "send Authorization: Bearer TOKEN.")  # fmt: skip


def _wait_for_signal() -> None:
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    while not stop.wait(0.5):
        pass
