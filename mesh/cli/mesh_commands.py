"""The mesh verbs of the ``mesh`` command: serve, up, run, agents, health, demo."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from mesh.agents.events import FinalAnswer
from mesh.agents.run_args import args_from_json
from mesh.cli.console import EventPrinter, say
from mesh.cli.supervise import supervise
from mesh.cli.ui_command import check_console_args, console_beside
from mesh.config import AgentConfig, MeshConfig
from mesh.errors import AgentUnavailableError, ConfigError, MeshError, NotFoundError
from mesh.host.allocator import limit_retained_memory
from mesh.host.audit import default_audit_dir, read_run
from mesh.launcher import READY_PREFIX, MeshProcesses
from mesh.models import Cassette, RecordingModel
from mesh.models.base import Model
from mesh.models.images import checked_images
from mesh.project import CONFIG_NAME, build_agent, load_mesh_config, replays
from mesh.rpc.a2a.options import A2AOptions
from mesh.rpc.client import AgentClient, channel_target
from mesh.rpc.dev_credentials import (
    DEFAULT_CALLERS,
    DEFAULT_HOSTS,
    new_token,
    write_dev_credentials,
)
from mesh.rpc.serving import serve as serve_agent
from mesh.state.registry import use_state
from mesh.telemetry import default_trace_dir
from mesh.telemetry.trace_file import iter_spans
from mesh.telemetry.trace_view import list_traces, render_tree

__all__ = ["agents", "audit", "demo", "health", "on_free_ports", "run", "serve", "trace", "up"]


def serve(args: argparse.Namespace) -> int:
    limit_retained_memory()  # before building the agent starts threads (see allocator)
    config = load_mesh_config(args.config)
    if args.record:
        config = dataclasses.replace(config, replay="never")  # a recording is of a live model
    agent_config = config.agent(args.agent)
    address = args.address or agent_config.addresses[0]
    logging.getLogger("mesh").setLevel(logging.INFO)
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # each retry; ours says it once
    use_state(config.state)  # before the agent is built: its memo tool looks for it
    with ExitStack() as resources:
        agent = build_agent(
            config, args.agent, resources=resources, wrap_model=_recording_to(args.record)
        )
        model = "replay" if replays(config, agent_config) else agent.model.model_id

        def ready(port: int) -> None:
            print(f"{READY_PREFIX}{args.agent} {port}", flush=True)
            say(f"{args.agent}: serving on {address.rsplit(':', 1)[0]}:{port} (model: {model})")

        serve_agent(agent, address, max_concurrent_runs=agent_config.max_concurrent_runs,
                    security=config.security, health_address=args.health_address,
                    on_ready=ready, data_limit_mb=config.data_limit_mb,
                    run_retention_s=config.run_retention_hours * 3600,
                    run_memory_mb=config.run_memory_mb, state=config.state,
                    a2a=_a2a_options(args.a2a, agent_config))  # fmt: skip
    return 0


def _a2a_options(flag: str | None, agent: AgentConfig) -> A2AOptions | None:
    """Serving over A2A: the flag's card address, else the config's table, else not."""
    if flag:
        return dataclasses.replace(agent.a2a or A2AOptions(), http_address=flag)
    return agent.a2a


def certs(args: argparse.Namespace) -> int:
    credentials = write_dev_credentials(
        args.directory.resolve(),
        hosts=args.hosts or DEFAULT_HOSTS,
        tokens={caller: new_token() for caller in args.callers or DEFAULT_CALLERS},
    )
    say(f"wrote a throwaway CA, a certificate for {', '.join(args.hosts or DEFAULT_HOSTS)} "
        f"and tokens for {', '.join(credentials.tokens)} to {credentials.ca.parent} "
        "(keys and tokens readable by you only). Add this to the mesh config:")  # fmt: skip
    print()
    print(credentials.auth_table(), end="")
    return 0


def up(args: argparse.Namespace) -> int:
    config = load_mesh_config(args.config)
    check_console_args(args)  # before the mesh starts, not after
    with MeshProcesses(config, log_dir=args.logs) as mesh:
        _print_table(config, mesh.addresses)
        with console_beside(args, config, mesh.addresses):
            say("The mesh is up. Ctrl-C stops it.")
            return _wait_for_signal(mesh)


def run(args: argparse.Namespace) -> int:
    """Run a task on the config's entry agent, or on whatever agent serves ``--address``
    (then a config is optional: an agent served from Python has none)."""
    config = _config_for(args)
    entry = config.agent(config.entry) if config is not None else None
    address = args.address or list(entry.addresses if entry else ())
    task = args.task or (config.task if config is not None else "")
    if not task:
        raise ConfigError("give a task (the config names no default task in [mesh] task)")
    security = config.security if config is not None else None
    label = "" if entry else f"the agent at {channel_target(address)}"
    with AgentClient(address, agent=entry.name if entry else "", security=security,
                     label=label) as client:  # fmt: skip
        if getattr(args, "wait", 0.0) > 0:
            client.wait_healthy(args.wait)
        printer = None if args.quiet else EventPrinter()
        answer: Any = None
        try:
            if not getattr(args, "live", False):
                _announce_replay(client, task, config)
            extra = args_from_json(args.args)
            images = checked_images(getattr(args, "image", None) or ())
            with client.run_stream(task, timeout_s=args.timeout, additional_args=extra,
                                   images=images) as stream:  # fmt: skip
                try:
                    for event in stream:
                        if printer is not None:
                            printer(event)
                        if isinstance(event, FinalAnswer) and event.depth == 0:
                            answer = event.answer
                except KeyboardInterrupt:
                    stream.cancel()
                    say("cancelled: the run and every run it delegated were stopped")
                    return 130
        except MeshError as err:
            _explain(err)
            raise
    if args.quiet:
        print(answer)
    return 0


def agents(args: argparse.Namespace) -> int:
    config = load_mesh_config(args.config)
    for name, agent in config.agents.items():
        try:
            with AgentClient(list(agent.addresses), agent=name, security=config.security) as client:
                card = client.describe(timeout_s=2.0)
        except MeshError as err:
            print(f"{name} ({', '.join(agent.addresses)}): not reachable ({err.code})")
            continue
        print(f"{card.name} ({', '.join(agent.addresses)}): {card.kind} agent, "
              f"model {card.model_id}")  # fmt: skip
        print(f"    {card.description}")
        for tool in card.tools:
            inputs = ", ".join(f"{n}: {i['type']}" for n, i in tool["inputs"].items())
            print(f"    tool {tool['name']}({inputs}) -> {tool['output_type']}")
        for managed in card.managed_agents:
            print(f"    delegates to {managed}")
    return 0


def health(args: argparse.Namespace) -> int:
    """Exit 0 when the agent at ``args.address`` reports SERVING: a container's health check.
    Not serving, or not answering within ``args.timeout`` s, is an error (exit 1) that says
    which. With a config (``--config``, else ./mesh.toml) its TLS settings apply (a health
    check needs no token); without one, plaintext."""
    config = _config_for(args)
    security = config.security if config is not None else None
    label = f"the agent at {args.address}"
    with AgentClient(args.address, security=security, label=label) as client:
        if not client.health(timeout_s=args.timeout):
            raise AgentUnavailableError(f"{label} answers but is not serving")
    return 0


def trace(args: argparse.Namespace) -> int:
    """Recent traces, or one drawn as a tree, from the services' local trace files (streamed:
    only what is printed is kept)."""
    directory = args.dir or default_trace_dir()
    if args.trace_id:
        lines = render_tree(iter_spans(directory, args.trace_id), args.trace_id)
    else:
        lines = list_traces(lambda: iter_spans(directory))
    if not lines:
        say(f"no traces under {directory} (services write there; MESH_TRACE_DIR changes it)")
        return 0
    print("\n".join(lines))
    return 0


def audit(args: argparse.Namespace) -> int:
    """One run's audit entries, and those of the runs it delegated, across every service."""
    directory = args.dir or default_audit_dir()
    entries = read_run(directory, args.run_id)
    if not entries:
        raise NotFoundError(f"no audit entries for run {args.run_id!r} under {directory}")
    for entry in entries:
        print(json.dumps(entry, ensure_ascii=False))
    return 0


def demo(args: argparse.Namespace) -> int:
    """Start the mesh on free ports, run its task, stop it: the whole product in one command."""
    config = on_free_ports(load_mesh_config(args.config))
    say("Starting the mesh: one process per agent ...")
    with (
        tempfile.TemporaryDirectory(prefix="mesh-demo-") as logs,
        MeshProcesses(config, log_dir=Path(logs)) as mesh,
    ):
        _print_table(config, mesh.addresses)
        run_args = argparse.Namespace(config=args.config, task=args.task, quiet=False,
                                      timeout=300.0, wait=0.0, args="",
                                      address=mesh.addresses[config.entry][0])  # fmt: skip
        status = run(run_args)
        say("Stopping the mesh.")
        return status


def _config_for(args: argparse.Namespace) -> MeshConfig | None:
    if args.address and args.config is None and not Path(CONFIG_NAME).exists():
        return None
    return load_mesh_config(args.config)


def _announce_replay(client: AgentClient, task: str, config: MeshConfig | None) -> None:
    card = client.describe(timeout_s=5)
    if card.model_id.startswith("replay"):
        say("No model key is set, so the mesh REPLAYS recorded model outputs (cassettes); the "
            "tools, sandbox and RPCs run for real. Set OPENAI_API_KEY (or [models] in the "
            "config) for a live model.")  # fmt: skip
        cassette = config.agent(config.entry).cassette if config is not None else None
        recorded = _recorded_tasks(cassette)
        if recorded is not None and task not in recorded:
            say(f"A replay only knows its recorded tasks ({cassette}): "
                + "; ".join(repr(t) for t in recorded[:5]))  # fmt: skip


def _recorded_tasks(cassette: Path | None) -> list[str] | None:
    """The tasks a cassette holds, or None if there is none to read."""
    if cassette is None:
        return None
    try:
        return Cassette.load(cassette).tasks
    except MeshError:
        return None


def _explain(error: MeshError) -> MeshError:
    """A hint for an agent that cannot be reached; not for one that answered with its own
    error (a model it cannot reach is not a mesh that is down)."""
    if isinstance(error, AgentUnavailableError) and error.code == AgentUnavailableError.code:
        error.message += "\nIs the mesh up? Start it with `mesh up` (or try `mesh demo`)."
    return error


def _print_table(config: MeshConfig, addresses: dict[str, list[str]]) -> None:
    rows = [("agent", "kind", "address", "model")]
    for name in config.dependency_order():
        agent = config.agent(name)
        model = (f"replay ({agent.cassette.name})" if replays(config, agent) and agent.cassette
                 else agent.model or config.default_model)  # fmt: skip
        rows.append((name, agent.kind, ", ".join(addresses.get(name, [])), model))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    sys.stdout.flush()


def on_free_ports(config: MeshConfig) -> MeshConfig:
    agents = {
        name: dataclasses.replace(
            agent, addresses=tuple(f"{a.rsplit(':', 1)[0]}:0" for a in agent.addresses)
        )
        for name, agent in config.agents.items()
    }
    return dataclasses.replace(config, agents=agents)


def _wait_for_signal(mesh: MeshProcesses) -> int:
    stop = False

    def handle(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    status = supervise(mesh, lambda: stop)
    say("Stopping the mesh ...")
    return status


def _recording_to(path: Path | None) -> Callable[[Model], Model] | None:
    """For ``mesh serve --record PATH``: wrap the model so every call lands in PATH."""
    return None if path is None else lambda model: RecordingModel(model, path)
