"""Printing for people at a terminal: step events as they stream in, and notes.

How an event reads is ``mesh.agents.render``'s: ``agent.replay()`` and
``mesh replay`` print runs with the same renderer, so a run replayed reads
as it did live.
"""

from __future__ import annotations

import sys
from typing import TextIO

from mesh.agents.events import AgentEvent
from mesh.agents.render import StepRenderer

__all__ = ["EventPrinter", "say"]


class EventPrinter(StepRenderer):
    """Prints each event at once (flushed): the person watches the run as it goes."""

    def __init__(
        self, out: TextIO = sys.stdout, width: int = 400, *, detailed: bool = False
    ) -> None:
        super().__init__(width, detailed=detailed)
        self.out = out

    def __call__(self, event: AgentEvent) -> None:
        for line in self.indented(event):
            print(line, file=self.out, flush=True)


def say(message: str) -> None:
    """A note for the person at the terminal (stderr, so stdout stays the output)."""
    print(message, file=sys.stderr, flush=True)
