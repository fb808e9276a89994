"""``use_structured_outputs_internally``: a code agent's model answers JSON ``{"thought",
"code"}`` through a ``response_format``, with no stop sequence. In process (the code runs
in the jail), through LiteLLM against a local OpenAI-style server, from mesh.toml, and
served in its own process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mesh import Cassette, CodeAgent, LiteLLMModel, ReplayServer, factorial
from mesh.agents import CodeAction, FinalAnswer, ModelOutput, StepFailed
from mesh.agents.structured_code import SCHEMA_NAME, response_format
from mesh.errors import ConfigError
from mesh.launcher import MeshProcesses
from mesh.models.replay import RecordingModel
from mesh.project import build_agent, load_mesh_config
from mesh.rpc.client import AgentClient
from tests.mesh_setup import cassette_lines
from tests.support import scripted

TASK = "What is 5! plus one?"


def answer(code: str, thought: str = "Next step.") -> str:
    """A structured answer, as a model held to the schema writes it."""
    return json.dumps({"thought": thought, "code": code})


# The thought quotes "Observation:": no stop sequence may cut the JSON there.
FIRST = answer("x = factorial(5)\nprint(x)", "Observation: I need 5! first.")
SECOND = answer("final_answer(x + 1)", "Now add one.")


def structured(*responses: str, model: object = None) -> CodeAgent:
    """A code agent with the option, its code run in the real jail."""
    return CodeAgent([factorial], model or scripted(*responses),  # type: ignore[arg-type]
                     use_structured_outputs_internally=True)  # fmt: skip


def test_the_json_answers_code_runs_in_the_jail_and_gives_the_answer(tmp_path: Path) -> None:
    recorded = tmp_path / "calls.jsonl"
    agent = structured(model=RecordingModel(scripted(FIRST, SECOND), recorded))
    events = list(agent.run(TASK, stream=True))
    assert [e.answer for e in events if isinstance(e, FinalAnswer)] == [121]
    assert [e.code for e in events if isinstance(e, CodeAction)] == [
        "x = factorial(5)\nprint(x)",
        "final_answer(x + 1)",
    ]
    steps = agent.memory.steps  # type: ignore[union-attr]
    assert steps[0].observation == "Execution logs:\n120"
    # The raw JSON is the step's output, and the model reads it back, thought and all.
    assert steps[0].model_output.content == FIRST  # type: ignore[union-attr]
    assert [(m.role, m.content) for m in steps[1].model_input[-2:]] == [
        ("assistant", FIRST),
        ("user", "Observation:\nExecution logs:\n120"),
    ]
    system = steps[0].model_input[0].content or ""
    assert '"thought"' in system and "answer with one JSON object" in system
    assert "```python" not in system  # the code block instructions are gone
    # Every action step asked for the schema (the recorder writes what the model was given).
    lines = [json.loads(line) for line in recorded.read_text().splitlines()[1:]]
    assert [line["response_format"] for line in lines] == [response_format()] * 2


def test_the_best_answer_after_max_steps_is_plain_text_asked_in_no_format(
    tmp_path: Path,
) -> None:
    recorded = tmp_path / "calls.jsonl"
    model = RecordingModel(scripted(FIRST, "The answer is 121."), recorded)
    agent = CodeAgent([factorial], model, use_structured_outputs_internally=True, max_steps=1)
    assert agent.run(TASK) == "The answer is 121."
    lines = [json.loads(line) for line in recorded.read_text().splitlines()[1:]]
    assert [line.get("response_format") for line in lines] == [response_format(), None]


def test_without_the_option_nothing_changes() -> None:
    agent = CodeAgent([factorial], scripted(FIRST), executor="unsafe-local", max_steps=1)
    assert agent._response_format() is None and agent._stop_sequences() == ["Observation:"]
    assert "```python" in agent.system_prompt() and '"thought"' not in agent.system_prompt()


def test_the_schema_is_strict_with_both_strings_required() -> None:
    format_ = structured(FIRST)._response_format()
    assert format_ is not None and format_["type"] == "json_schema"
    schema = format_["json_schema"]
    assert (schema["name"], schema["strict"]) == (SCHEMA_NAME, True)
    assert schema["schema"]["required"] == ["thought", "code"]
    assert schema["schema"]["additionalProperties"] is False
    assert {p["type"] for p in schema["schema"]["properties"].values()} == {"string"}
    assert structured(FIRST)._stop_sequences() is None


def test_malformed_answers_are_step_errors_the_model_reads_and_the_run_recovers() -> None:
    agent = structured(
        "I will compute it.\n```python\nfinal_answer(1)\n```",  # the old format: not JSON
        '{"thought": "no code"}',  # wrong shape
        '["x = 1"]',  # not an object
        answer("   \n"),  # empty code
        "{" + '"junk": "' + "y" * 50_000 + '"',  # long and unterminated
        SECOND.replace("x + 1", "factorial(5) + 1"),
    )
    events = list(agent.run(TASK, stream=True))
    assert [e.answer for e in events if isinstance(e, FinalAnswer)] == [121]
    failed = [e.error for e in events if isinstance(e, StepFailed)]
    assert [e.reason for e in failed] == ["model_output_error"] * 5
    messages = [e.message for e in failed]
    assert "not valid JSON" in messages[0] and "I will compute it." in messages[0]
    assert """"thought" and "code"; it has 'thought': string""" in messages[1]
    assert "must be a JSON object, not a JSON array" in messages[2]
    assert 'the "code" of your answer is empty' in messages[3]
    assert "not valid JSON" in messages[4] and len(messages[4]) < 600  # the quote is bounded
    assert not [e for e in events if isinstance(e, CodeAction)][:-1]  # nothing bad ran
    # The model read the first error after its answer, and answered again.
    second_call = agent.memory.steps[1].model_input  # type: ignore[union-attr]
    assert second_call[-1].role == "user" and "not valid JSON" in (second_call[-1].content or "")


@pytest.mark.parametrize(
    "text",
    [
        "```json\n" + answer("final_answer(factorial(5) + 1)") + "\n```",
        "```\n" + answer("final_answer(factorial(5) + 1)") + "\n```\n",
        answer("```python\nfinal_answer(factorial(5) + 1)\n```"),
        answer("Here it is:\n```py\nfinal_answer(factorial(5) + 1)\n```"),
        "```json\n" + answer("```python\nfinal_answer(factorial(5) + 1)\n```") + "\n```",
    ],
    ids=["json-fence", "bare-fence", "code-fence", "code-fence-after-text", "both"],
)
def test_fenced_answers_are_accepted(text: str) -> None:
    agent = structured(text)
    events = list(agent.run(TASK, stream=True))
    assert [e.answer for e in events if isinstance(e, FinalAnswer)] == [121]
    assert [e.code for e in events if isinstance(e, CodeAction)] == [
        "final_answer(factorial(5) + 1)"
    ]
    assert agent.memory.steps[0].model_output.content == text  # type: ignore[union-attr]


def test_through_litellm_the_request_carries_the_schema_and_no_stop() -> None:
    cassette = Cassette.from_responses([FIRST, SECOND], task=TASK)
    with ReplayServer(cassette) as server:
        model = LiteLLMModel("openai/gpt-4o-mini", api_base=server.api_base, api_key="test-key")
        assert structured(model=model).run(TASK) == 121
    first, second = server.requests
    for request in (first, second):
        assert request["response_format"] == response_format()
        assert "stop" not in request
    assert second["messages"][-2] == {"role": "assistant", "content": FIRST}


CONFIG = """
[mesh]
entry = "coder"
replay = "always"
[agents.coder]
kind = "code"
description = "Answers in JSON."
address = "127.0.0.1:0"
tools = ["factorial"]
cassette = "coder.jsonl"
use_structured_outputs_internally = true
stream_outputs = true
"""


def write_config(directory: Path, text: str = CONFIG) -> Path:
    (directory / "mesh.toml").write_text(text)
    (directory / "coder.jsonl").write_text(cassette_lines(TASK, FIRST, SECOND))
    return directory / "mesh.toml"


def test_the_mesh_toml_keys_build_an_agent_with_them(tmp_path: Path) -> None:
    config = load_mesh_config(write_config(tmp_path))
    assert config.agent("coder").use_structured_outputs_internally
    agent = build_agent(config, "coder")
    assert isinstance(agent, CodeAgent) and agent.use_structured_outputs_internally
    assert agent.stream_outputs and agent._response_format() == response_format()
    assert agent.run(TASK) == 121  # the cassette's JSON answers parse only with the option
    plain = load_mesh_config(write_config(tmp_path, CONFIG.replace("= true", "= false")))
    agent = build_agent(plain, "coder")
    assert not agent.use_structured_outputs_internally  # type: ignore[attr-defined]
    assert not agent.stream_outputs


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ('kind = "tool-calling"', 'use_structured_outputs_internally: only for kind = "code"'),
        ("use_structured_outputs_internally = 1", "use_structured_outputs_internally: expected"),
        ('stream_outputs = "yes"', "stream_outputs: expected bool"),
    ],
)
def test_wrong_settings_are_config_errors(tmp_path: Path, change: str, says: str) -> None:
    key = change.split(" = ")[0]
    lines = [line for line in CONFIG.splitlines() if not line.startswith(key + " =")]
    with pytest.raises(ConfigError, match=says):
        load_mesh_config(write_config(tmp_path, "\n".join([*lines, change]) + "\n"))


def test_a_served_agent_with_the_option_answers_across_the_mesh(tmp_path: Path) -> None:
    config = load_mesh_config(write_config(tmp_path))
    with MeshProcesses(config, log_dir=tmp_path / "logs") as mesh:
        address = mesh.addresses["coder"][0]
        with AgentClient([address], agent="coder") as client:
            events = list(client.run_stream(TASK))
    assert [e.answer for e in events if isinstance(e, FinalAnswer)] == [121]
    assert [e.text for e in events if isinstance(e, ModelOutput)] == [FIRST, SECOND]
    codes = [e.code for e in events if isinstance(e, CodeAction)]
    assert codes == ["x = factorial(5)\nprint(x)", "final_answer(x + 1)"]
    assert not [e for e in events if isinstance(e, StepFailed)]
