"""The ``mesh`` command line.

mesh new DIR              a working mesh project to start from
mesh demo                 start the mesh, run its task, stop it
mesh up                   start every agent of the config, each its own process
mesh ui                   the web console: agents, runs, live run trees (127.0.0.1:8090)
mesh run [TASK]           send a task to the mesh and show the steps live
mesh agents               the agents' cards
mesh health ADDRESS       exit 0 if the agent there is serving (a container health check)
mesh trace [ID]           recent traces, or one drawn as a tree
mesh audit RUN_ID         one run's audit log across every service
mesh replay RUN_ID        a past run step by step, from the audit log
mesh tools add|remove     change an agent's tools at run time (admin)
mesh changes              every change to the agents' instructions and tools
mesh certs DIR            a throwaway CA, certificate and tokens, to try TLS locally
mesh manifests [-o DIR]   Kubernetes manifests for the config's agents
mesh serve AGENT          serve one agent (what `mesh up` starts)
mesh record [TASK]        run the mesh on a live model; write each agent's cassette
mesh run --local [TASK]   one agent in this process, no mesh
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from mesh.cli import mesh_commands
from mesh.cli.deploy_commands import add_manifests_command
from mesh.cli.local import add_local_options, run_local
from mesh.cli.new_project import add_new_command
from mesh.cli.record import add_record_command
from mesh.cli.replay_command import add_replay_command
from mesh.cli.tool_commands import add_history_options, add_tool_commands
from mesh.cli.ui_command import add_console_options, add_ui_options, ui
from mesh.errors import MeshError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except MeshError as err:
        print(f"error ({err.code}): {err.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `mesh trace | head`
        sys.stderr.close()
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mesh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        sub.add_argument("--config", type=Path, help="mesh config (default ./mesh.toml, else the "
                         "bundled seed mesh)")  # fmt: skip
        return sub

    demo = command("demo", "start the mesh, run its task, stop it")
    demo.add_argument("task", nargs="?", help="the task (default: the config's task)")
    demo.set_defaults(func=mesh_commands.demo)

    up = command("up", "start every agent of the config, each its own process")
    up.add_argument("--logs", type=Path, help="write each service's log here")
    up.add_argument("--ui", metavar="HOST:PORT",
                    help="also serve the web console here (see `mesh ui`), stopped with the "
                    "mesh")  # fmt: skip
    add_console_options(up)
    up.set_defaults(func=mesh_commands.up)

    console = command("ui", "serve the web console of a running mesh")
    add_ui_options(console)
    console.set_defaults(func=ui)

    run = command("run", "send a task to the mesh and show its steps live")
    run.add_argument("task", nargs="?", help="the task (default: the config's task)")
    run.add_argument("--address", help="host:port of the agent to ask (default: the entry)")
    run.add_argument("--timeout", type=float, default=300.0, help="deadline in seconds")
    run.add_argument("--quiet", action="store_true", help="print only the final answer")
    run.add_argument("--args", metavar="JSON", default="",
                     help='values beside the task, a JSON object: \'{"numbers": [1, 2]}\' '
                     "(a code agent's code gets each as a variable)")  # fmt: skip
    run.add_argument("--image", metavar="PATH", action="append", default=[],
                     help="an image the model sees with the task (PNG, JPEG, GIF or WebP; "
                     "repeat for more: at most 8, 4 MiB each, 6 MiB in all)")  # fmt: skip
    run.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for the agent to come up (e.g. after `mesh up &`)",
    )
    add_local_options(run)
    run.set_defaults(func=lambda a: run_local(a) if a.local else mesh_commands.run(a))

    agents = command("agents", "list the agents' cards")
    agents.set_defaults(func=mesh_commands.agents)

    health = command("health", "exit 0 if the agent at ADDRESS is serving, else say why")
    health.add_argument("address", help="host:port of the agent")
    health.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS",
                        help="how long to wait for its answer (default 3)")  # fmt: skip
    health.set_defaults(func=mesh_commands.health)

    trace = commands.add_parser("trace", help="recent traces, or one as a tree")
    trace.add_argument("trace_id", nargs="?", help="a trace id (or its first characters)")
    trace.add_argument("--dir", type=Path, help="trace directory (default $MESH_TRACE_DIR or "
                       "~/.local/share/smolmesh/traces)")  # fmt: skip
    trace.set_defaults(func=mesh_commands.trace)

    audit = commands.add_parser("audit", help="one run's audit log across every service")
    audit.add_argument("run_id", help="the run's id")
    audit.add_argument("--dir", type=Path, help="audit directory (default $MESH_AUDIT_DIR or "
                       "~/.local/share/smolmesh/audit)")  # fmt: skip
    audit.set_defaults(func=mesh_commands.audit)
    add_replay_command(commands)

    tools = commands.add_parser("tools", help="change an agent's tools at run time (admin)")
    add_tool_commands(tools)

    changes = command("changes", "every change to the agents' instructions and tools")
    changes.add_argument("--agent-address", help="host:port of the agent (default: the config)")
    add_history_options(changes)

    certs = commands.add_parser("certs", help="write a throwaway CA, certificate and tokens")
    certs.add_argument("directory", type=Path, help="where to write them")
    certs.add_argument("--host", action="append", dest="hosts", metavar="HOST",
                       help="a name or IP the services are reached at (repeatable; default "
                       "127.0.0.1 and localhost)")  # fmt: skip
    certs.add_argument(
        "--caller",
        action="append",
        dest="callers",
        metavar="NAME",
        help="a caller to make a token for (repeatable; default mesh and admin)",
    )
    certs.set_defaults(func=mesh_commands.certs)

    add_manifests_command(commands)

    serve = command("serve", "serve one agent of the config")
    serve.add_argument("agent", help="the agent's name in the config")
    serve.add_argument("--address", help="host:port to listen on (default: from the config)")
    serve.add_argument(
        "--record",
        type=Path,
        metavar="CASSETTE",
        help="answer from the live model and append every call to CASSETTE",
    )
    serve.add_argument("--health-address", metavar="HOST:PORT",
                       help="also serve health checks here, in plaintext and alone (for "
                       "probes that cannot speak TLS, like Kubernetes')")  # fmt: skip
    serve.add_argument("--a2a", metavar="HOST:PORT",
                       help="also serve the agent over A2A v1.0 (on its gRPC port), its "
                       "card over HTTP at HOST:PORT (instead of [agents.NAME.a2a]'s)")  # fmt: skip
    serve.set_defaults(func=mesh_commands.serve)

    add_record_command(commands)
    add_new_command(commands)
    return parser
