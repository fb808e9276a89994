"""``mesh replay RUN_ID``: a past run of the mesh, step by step, from the audit log.

Every service audits the runs it serves; ``read_run`` gathers the run asked
for and every run beneath it, from every service's files, in time order.
They print as ``mesh run`` printed them live (the same renderer, nested by
depth), with what the audit kept: texts follow the services' content
setting, so they may be clipped, redacted, or missing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mesh.cli.console import EventPrinter
from mesh.errors import NotFoundError
from mesh.host.audit import default_audit_dir, read_run
from mesh.host.audit_replay import replayed_events

__all__ = ["add_replay_command", "replay"]


def add_replay_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay_run = commands.add_parser("replay", help="a past run step by step, from the audit log")
    replay_run.add_argument("run_id", help="the run's id")
    replay_run.add_argument("--dir", type=Path, help="audit directory (default $MESH_AUDIT_DIR "
                            "or ~/.local/share/smolmesh/audit)")  # fmt: skip
    replay_run.add_argument("--detailed", action="store_true",
                            help="also what each model call read (its new messages)")  # fmt: skip
    replay_run.set_defaults(func=replay)


def replay(args: argparse.Namespace) -> int:
    directory = args.dir or default_audit_dir()
    entries = read_run(directory, args.run_id)
    if not entries:
        raise NotFoundError(f"no audit entries for run {args.run_id!r} under {directory}")
    printer = EventPrinter(detailed=args.detailed)
    for event in replayed_events(entries, args.run_id):
        printer(event)
    return 0
