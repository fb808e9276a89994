"""Printing for people at a terminal: step events as they stream in, and notes.

How an event reads is ``mesh.agents.render``'s: ``agent.replay()`` and
``mesh replay`` print runs with the same renderer, so a run replayed reads
as it did live. An agent that streams its outputs (``stream_outputs``) has
its model's text printed as it comes, indented under its agent; the step's
model line then gives only its tally, as the text is on the screen already.
"""

from __future__ import annotations

import sys
from typing import TextIO

from mesh.agents.events import AgentEvent, ModelOutput, ModelOutputDelta, Planning
from mesh.agents.render import INDENT, StepRenderer

__all__ = ["EventPrinter", "say"]


class EventPrinter(StepRenderer):
    """Prints each event at once (flushed): the person watches the run as it goes."""

    def __init__(
        self, out: TextIO = sys.stdout, width: int = 400, *, detailed: bool = False
    ) -> None:
        super().__init__(width, detailed=detailed)
        self.out = out
        self._streaming: tuple[str, int, bool] | None = None
        """The model call whose text is being printed: (run id, step, planning)."""
        self._at_line_start = True
        self._streamed: set[tuple[str, int, bool]] = set()

    def __call__(self, event: AgentEvent) -> None:
        if isinstance(event, ModelOutputDelta):
            self._delta(event)
            return
        self._end_stream()
        lines = self.indented(event)
        if self._was_streamed(event):
            lines = lines[:1]  # the tally: the text is on the screen already
        for line in lines:
            print(line, file=self.out, flush=True)

    def _delta(self, event: ModelOutputDelta) -> None:
        call = (event.run_id, event.step, event.planning)
        margin = INDENT * event.depth + "  | "
        if call != self._streaming:  # another agent's (parallel delegates), or the next call
            self._end_stream()
            what = "plan" if event.planning else f"step {event.step}"
            print(f"{INDENT * event.depth}[{event.agent}] {what}: model writing...",
                  file=self.out)  # fmt: skip
            self._streaming = call
            self._streamed.add(call)
        for n, part in enumerate(event.text.split("\n")):
            if n:
                self.out.write("\n")
                self._at_line_start = True
            if part:
                self.out.write((margin if self._at_line_start else "") + part)
                self._at_line_start = False
        self.out.flush()

    def _end_stream(self) -> None:
        if self._streaming is not None and not self._at_line_start:
            self.out.write("\n")
        self._streaming, self._at_line_start = None, True

    def _was_streamed(self, event: AgentEvent) -> bool:
        planning = isinstance(event, Planning)
        if not (planning or isinstance(event, ModelOutput)):
            return False
        call = (event.run_id, event.step, planning)
        if call in self._streamed:
            self._streamed.discard(call)
            return True
        return False


def say(message: str) -> None:
    """A note for the person at the terminal (stderr, so stdout stays the output)."""
    print(message, file=sys.stderr, flush=True)
