"""``mesh run --local``: one agent, in this process, with the built-in tools.

With a model key (or ``--model``/``--api-base``) it talks to a real model
through LiteLLM; without one it replays a bundled recording of a demo task,
and says so, so that a new user sees a whole run offline.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mesh.agents import CodeAgent, ToolCallingAgent
from mesh.agents.base import MultiStepAgent
from mesh.agents.events import FinalAnswer
from mesh.agents.run_args import args_from_json
from mesh.cli.console import EventPrinter, say
from mesh.errors import ConfigError
from mesh.models import DEFAULT_MODEL_ID, Cassette, LiteLLMModel, Model, RecordingModel, ReplayModel
from mesh.models.images import checked_images
from mesh.models.litellm_model import has_provider_key, provider_key_name
from mesh.paths import bundled
from mesh.tools import DuckDuckGoTool, MemoTool, PrimeTool, Tool, celsius_to_fahrenheit, factorial

__all__ = ["add_local_options", "run_local"]

DEMO_CASSETTE = "demo.jsonl"


def run_local(args: argparse.Namespace) -> int:
    model, task = _choose_model(args)
    if args.record:
        model = RecordingModel(model, args.record, description=f"recorded by mesh run: {task}")
    agent = _build_agent(args, model)
    printer = None if args.quiet else EventPrinter()
    answer = None
    extra = args_from_json(args.args)
    images = checked_images(getattr(args, "image", None) or ())
    for event in agent.run(task, stream=True, max_steps=args.max_steps, additional_args=extra,
                           images=images):  # fmt: skip
        if printer is not None:
            printer(event)
        if isinstance(event, FinalAnswer) and event.depth == 0:
            answer = event.answer
    if args.quiet:
        print(answer)
    return 0


def add_local_options(parser: argparse.ArgumentParser) -> None:
    local = parser.add_argument_group("--local: one agent in this process")
    local.add_argument(
        "--local", action="store_true", help="run one agent here instead of asking the mesh"
    )
    local.add_argument("--model", help=f"LiteLLM model id (default {DEFAULT_MODEL_ID})")
    local.add_argument("--api-base", help="base URL of an OpenAI-compatible server")
    local.add_argument("--api-key", help="API key (default: the provider's environment variable)")
    local.add_argument("--replay", metavar="CASSETTE", help="replay model outputs from a cassette")
    local.add_argument("--record", metavar="CASSETTE", help="append every model call to a cassette")
    local.add_argument(
        "--agent",
        choices=["tool-calling", "code"],
        default="tool-calling",
        help="agent kind (default tool-calling)",
    )
    local.add_argument(
        "--executor",
        default="nsjail",
        help="code executor for --agent code ('unsafe-local' is unsandboxed)",
    )
    local.add_argument("--max-steps", type=int, default=10)
    local.add_argument("--memo-path", type=Path, help="SQLite file of the memo tool")


def _choose_model(args: argparse.Namespace) -> tuple[Model, str]:
    """A real model when one is configured, else the bundled replay."""
    if args.replay:
        cassette = Cassette.load(args.replay)
        return ReplayModel(cassette), args.task or _only_task(cassette, args.replay)
    model_id = args.model or DEFAULT_MODEL_ID
    if args.model or args.api_base or args.api_key or has_provider_key(model_id):
        return LiteLLMModel(model_id, api_base=args.api_base, api_key=args.api_key), (
            args.task or _demo_task()
        )
    cassette = _demo_cassette()
    demo_task = cassette.tasks[0]
    if args.task and args.task != demo_task:
        raise ConfigError(
            f"no model is configured for {args.task[:80]!r}: set {provider_key_name(model_id)} "
            "or pass --model / --api-base (a local OpenAI-compatible server). Without one, "
            "`mesh run --local` with no task replays a recorded demo run."
        )
    say("No model configured: this is a REPLAY of a recorded run (bundled cassette).")
    say(f"For a real model set {provider_key_name(model_id)} or pass --model / --api-base.\n")
    return ReplayModel(cassette, model_id="replay:demo"), demo_task


def _build_agent(args: argparse.Namespace, model: Model) -> MultiStepAgent:
    tools: list[Tool] = [
        celsius_to_fahrenheit,
        factorial,
        PrimeTool(),
        MemoTool(args.memo_path),
        DuckDuckGoTool(),
    ]
    if args.agent == "code":
        return CodeAgent(
            tools, model, executor=args.executor, name="assistant", max_steps=args.max_steps
        )
    return ToolCallingAgent(tools, model, name="assistant", max_steps=args.max_steps)


def _demo_cassette() -> Cassette:
    text = bundled(DEMO_CASSETTE).read_text(encoding="utf-8")
    return Cassette.parse(text.splitlines(), source=DEMO_CASSETTE)


def _demo_task() -> str:
    return _demo_cassette().tasks[0]


def _only_task(cassette: Cassette, source: str) -> str:
    if len(cassette.tasks) != 1:
        raise ConfigError(f"{source} holds {len(cassette.tasks)} tasks; name one as TASK")
    return cassette.tasks[0]
