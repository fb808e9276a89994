"""``run(task, images=[...])``: images the model sees with the task, and images tools
return, shown at the next step; through LiteLLM as OpenAI image parts, in the memory's
JSON, in cassettes, and across the mesh as typed, capped parts of the run request."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest

from mesh import (
    AgentMemory,
    Cassette,
    ChatMessage,
    CodeAgent,
    Image,
    LiteLLMModel,
    ModelResponse,
    RecordingModel,
    ReplayModel,
    ReplayServer,
    ToolCallingAgent,
    tool,
)
from mesh._proto import agent_pb2 as pb
from mesh._proto import agent_pb2_grpc
from mesh.errors import InvalidRequestError
from mesh.models.images import MAX_IMAGE_BYTES, MAX_IMAGES, MAX_IMAGES_BYTES, checked_images
from mesh.models.openai_format import from_openai_message, to_openai_message
from mesh.rpc.client import AgentClient
from mesh.rpc.remote import RemoteAgent
from tests.support import calls, code, scripted, serving, wait_until


def png(width: int = 1, height: int = 1, shade: int = 0) -> bytes:
    """A real PNG of one grey shade (any viewer opens it)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + bytes([shade]) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))  # fmt: skip


PNG = png(2, 2, 128)
JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF\x00" + b"\x00" * 32
GIF = b"GIF89a" + b"\x01\x00\x01\x00" + b"\x00" * 16
WEBP = b"RIFF" + struct.pack("<I", 20) + b"WEBPVP8 " + b"\x00" * 12


def padded(size: int) -> bytes:
    """A "PNG" of exactly ``size`` bytes (its magic number, then padding)."""
    return PNG[:8] + b"\x00" * (size - 8)


class Seen:
    """A model that keeps every conversation it is sent, answering from another."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.model_id = model.model_id
        self.requests: list[list[ChatMessage]] = []

    def generate(self, messages: Sequence[ChatMessage], *args: Any, **kw: Any) -> ModelResponse:
        self.requests.append(list(messages))
        response: ModelResponse = self.model.generate(messages, *args, **kw)
        return response


def task_message(messages: Sequence[ChatMessage]) -> ChatMessage:
    return next(m for m in messages if m.role == "user")


# Loading ---------------------------------------------------------------------------------


def test_an_image_loads_from_a_path_bytes_a_data_url_or_an_image(tmp_path: Path) -> None:
    path = tmp_path / "chart.png"
    path.write_bytes(PNG)
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    loaded = checked_images([path, str(path), PNG, url, Image("image/png", PNG)])
    assert {i for i in loaded} == {Image("image/png", PNG)}
    assert [Image.of(data).media_type for data in (JPEG, GIF, WEBP)] == [
        "image/jpeg", "image/gif", "image/webp"]  # fmt: skip
    image = loaded[0]
    assert image.data_url == url
    assert image.digest() == {"media_type": "image/png", "bytes": len(PNG),
                              "sha256": __import__("hashlib").sha256(PNG).hexdigest()}  # fmt: skip
    assert "sha256=" in repr(image) and len(repr(image)) < 80  # never the bytes


@pytest.mark.parametrize(
    ("sources", "says"),
    [
        ([b"%PDF-1.7 not an image"], "image 1: not an image of a known type"),
        ([PNG, b"<svg/>"], "image 2: not an image of a known type"),
        ([padded(MAX_IMAGE_BYTES + 1)], "at most 4 MiB"),
        ([PNG] * (MAX_IMAGES + 1), f"at most {MAX_IMAGES} images"),
        ([padded(MAX_IMAGE_BYTES)] * 2, "at most 6 MiB in all"),
        (["data:image/jpeg;base64," + base64.b64encode(PNG).decode()],
         "said to be 'image/jpeg' is image/png"),
        (["data:image/png," + "x" * 10_000], "data:<type>;base64,<data>"),
        (["data:image/png;base64,%%%"], "not valid base64"),
        (["https://example.com/cat.png"], "download the image"),
        (["/no/such/" + "dir/" * 500 + "x.png"], "cannot read image"),
        ([12], "not int"),
    ],
)  # fmt: skip
def test_bad_images_are_refused_saying_which_never_what(sources: list[Any], says: str) -> None:
    with pytest.raises(InvalidRequestError, match=says) as raised:
        checked_images(sources)
    assert len(str(raised.value)) < 300  # no path, URL or bytes repeated whole


def test_the_caps_are_the_wire_s() -> None:
    assert (MAX_IMAGES, MAX_IMAGE_BYTES, MAX_IMAGES_BYTES) == (8, 4 * 2**20, 6 * 2**20)
    checked_images([padded(MAX_IMAGE_BYTES), padded(MAX_IMAGES_BYTES - MAX_IMAGE_BYTES)])  # fits
    with pytest.raises(InvalidRequestError, match="said to be 'image/gif' is image/png"):
        Image("image/gif", PNG)


# In process ------------------------------------------------------------------------------


def test_the_model_sees_them_with_the_task_and_the_memory_keeps_them() -> None:
    model = Seen(scripted(calls(("final_answer", {"answer": "a grey square"}))))
    agent = ToolCallingAgent([], model)
    assert agent.run("What is this?", images=[PNG, JPEG]) == "a grey square"
    sent = task_message(model.requests[0])
    assert sent.content == "What is this?"
    assert sent.images == (Image("image/png", PNG), Image("image/jpeg", JPEG))
    assert agent.memory is not None and agent.memory.task_images == sent.images
    assert task_message(agent.write_memory_to_messages()).images == sent.images


def test_the_first_plan_sees_them_too() -> None:
    model = Seen(scripted("1. Describe it.\n<end_plan>",
                          calls(("final_answer", {"answer": "grey"}))))  # fmt: skip
    ToolCallingAgent([], model, planning_interval=3).run("What is this?", images=[PNG])
    (plan_message,) = model.requests[0]
    assert plan_message.images == (Image("image/png", PNG),)
    assert task_message(model.requests[1]).images == (Image("image/png", PNG),)


def test_a_later_turn_reads_the_earlier_task_s_text_only() -> None:
    model = Seen(scripted(*[calls(("final_answer", {"answer": "grey"}))] * 3))  # turns 0 to 2
    agent = ToolCallingAgent([], model)
    agent.run("What colour?", images=[PNG])
    agent.run("And now?", reset=False)
    later = model.requests[-1]
    assert [m.content for m in later if m.role == "user"] == ["What colour?", "And now?"]
    assert all(not m.images for m in later)


def test_a_bad_image_fails_the_run_before_any_model_call() -> None:
    model = Seen(scripted("unused"))
    with pytest.raises(InvalidRequestError, match="image 1: not an image"):
        ToolCallingAgent([], model).run("Look.", images=[b"GIF00a nope"])
    assert model.requests == []


def test_through_litellm_the_request_holds_image_url_parts() -> None:
    cassette = Cassette.from_responses([calls(("final_answer", {"answer": "grey"}))],
                                       task="What is in the picture?")  # fmt: skip
    with ReplayServer(cassette) as server:
        model = LiteLLMModel("openai/gpt-4o-mini", api_base=server.api_base, api_key="test-key")
        agent = ToolCallingAgent([], model)
        assert agent.run("What is in the picture?", images=[PNG]) == "grey"
    (request,) = server.requests
    (user,) = [m for m in request["messages"] if m["role"] == "user"]
    assert user["content"] == [
        {"type": "text", "text": "What is in the picture?"},
        {"type": "image_url",
         "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()}},
    ]  # fmt: skip
    assert from_openai_message(user).images == (Image("image/png", PNG),)


def test_openai_parts_round_trip_and_refuse_a_url_to_fetch() -> None:
    message = ChatMessage("user", "Look.", images=(Image.of(GIF),))
    assert from_openai_message(to_openai_message(message)) == message
    assert to_openai_message(ChatMessage("user", "plain"))["content"] == "plain"
    web = {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}],
    }
    with pytest.raises(InvalidRequestError, match="data: URL"):
        from_openai_message(web)  # fmt: skip


# Tools returning images ------------------------------------------------------------------


@tool
def snapshot(shade: int) -> Image:
    """Takes a picture of the screen.

    Args:
        shade: how grey the screen is (0 to 255)
    """
    return Image.of(png(3, 3, shade))


def test_a_tool_s_image_is_shown_at_the_next_tool_calling_step() -> None:
    model = Seen(scripted(calls(("snapshot", {"shade": 7}, "c1")),
                          calls(("final_answer", {"answer": "dark"}))))  # fmt: skip
    agent = ToolCallingAgent([snapshot], model)
    assert snapshot.output_type == "image"
    assert agent.run("How dark is the screen?") == "dark"
    shot = Image.of(png(3, 3, 7))
    *_, tool_message, shown = model.requests[1]
    assert tool_message.role == "tool"
    assert tool_message.content == f"[image/png, {len(shot.data)} bytes: shown below]"
    assert shown.role == "user" and shown.images == (shot,)
    assert agent.memory is not None
    assert agent.memory.steps[0].observation_images == [shot]


def test_a_code_agent_s_code_gets_a_placeholder_and_the_next_step_sees_the_images() -> None:
    model = Seen(scripted(
        code("shots = [snapshot(shade=i) for i in range(9)]\nprint(type(shots[0]).__name__)\n"
             "print(shots[0])\nprint(shots[8])"),
        code("final_answer('seen')"),
    ))  # fmt: skip
    agent = CodeAgent([snapshot], model)  # the real jail (nsjail)
    assert agent.run("Take nine pictures.") == "seen"
    shown = Image.of(png(3, 3, 0))
    second = model.requests[1]
    observation, images = second[-2], second[-1]
    assert f"str\n[image/png, {len(shown.data)} bytes: shown below]" in (observation.content or "")
    assert "not shown: a step shows at most 8 images" in (observation.content or "")
    assert images.images == tuple(Image.of(png(3, 3, i)) for i in range(MAX_IMAGES))
    assert "1 more not shown" in (images.content or "")
    assert agent.memory is not None and agent.memory.steps[0].images_dropped == 1


# Memory and cassettes --------------------------------------------------------------------


def test_the_memory_json_round_trips_them() -> None:
    model = scripted(calls(("snapshot", {"shade": 9})), calls(("final_answer", {"answer": "ok"})))
    agent = ToolCallingAgent([snapshot], model)
    agent.run("Look twice.", images=[PNG])
    assert agent.memory is not None
    text = agent.memory.to_json()
    again = AgentMemory.from_json(text)
    assert again.task_images == (Image.of(PNG),)
    assert again.steps[0].observation_images == [Image.of(png(3, 3, 9))]
    assert again.steps[1].model_input == agent.memory.steps[1].model_input  # images inside
    assert again.to_json() == text
    assert base64.b64encode(PNG).decode() in json.loads(text)["task_images"][0]["data"]
    # Each image's bytes once: the model inputs that show them again at every step hold
    # their digests (a long run with big images stays a small multiple of its images).
    assert text.count(base64.b64encode(PNG).decode()) == 1
    assert text.count(base64.b64encode(png(3, 3, 9)).decode()) == 1


def test_a_memory_whose_inputs_show_an_unknown_image_is_refused() -> None:
    agent = ToolCallingAgent([], scripted(calls(("final_answer", {"answer": "ok"}))))
    agent.run("Look.", images=[PNG])
    assert agent.memory is not None
    data = agent.memory.to_dict()
    data["task_images"] = []
    with pytest.raises(ValueError, match="not one of the memory's images"):
        AgentMemory.from_dict(data)


def test_a_memory_with_a_forged_image_is_refused() -> None:
    agent = ToolCallingAgent([], scripted(calls(("final_answer", {"answer": "ok"}))))
    agent.run("Look.", images=[PNG])
    assert agent.memory is not None
    data = agent.memory.to_dict()
    data["task_images"][0]["data"] = base64.b64encode(b"MZ\x90\x00 an exe").decode()
    with pytest.raises(ValueError, match="not an image of a known type"):
        AgentMemory.from_dict(data)


def test_a_cassette_recorded_with_images_keeps_digests_and_replays(tmp_path: Path) -> None:
    path = tmp_path / "seen.jsonl"
    big = padded(MAX_IMAGE_BYTES)
    recorder = RecordingModel(scripted(calls(("final_answer", {"answer": "two"}))), path)
    assert ToolCallingAgent([], recorder).run("Count them.", images=[PNG, big]) == "two"
    assert path.stat().st_size < 20_000  # digests, not megabytes of base64
    line = json.loads(path.read_text().splitlines()[1])
    user = next(m for m in line["request"] if m["role"] == "user")
    assert [i["bytes"] for i in user["images"]] == [len(PNG), MAX_IMAGE_BYTES]
    assert user["images"][0]["sha256"] == Image.of(PNG).sha256
    replayed = Seen(ReplayModel(path))
    assert ToolCallingAgent([], replayed).run("Count them.", images=[PNG, big]) == "two"
    assert task_message(replayed.requests[0]).images[1].data == big


# Across the mesh -------------------------------------------------------------------------

SPECIALIST = """
import sys
from mesh import (Cassette, ChatMessage, ModelResponse, RecordingModel, ReplayModel, TokenUsage,
                  ToolCall, ToolCallingAgent, serve)

answer = ModelResponse(ChatMessage("assistant", None, (ToolCall("c1", "final_answer",
                       '{"answer": "a grey square"}'),)), TokenUsage(10, 1))
model = RecordingModel(ReplayModel(Cassette.from_responses([answer])), sys.argv[2])
agent = ToolCallingAgent([], model, name="looker", description="Says what a picture shows.")
serve(agent, sys.argv[1])
"""


@pytest.fixture(scope="module")
def looker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A tool-calling agent in its own process; its model records what it was sent."""
    directory = tmp_path_factory.mktemp("looker")
    recording = directory / "seen.jsonl"
    with serving(SPECIALIST, directory, str(recording)) as (address, _):
        yield address, recording


def received(recording: Path, task: str) -> list[Mapping[str, Any]]:
    """The images (digests) the served model was sent with ``task``, at its last call."""
    lines = [json.loads(line) for line in recording.read_text().splitlines()[1:]]
    last = [line for line in lines if line["task"] == task][-1]
    return list(next(m for m in last["request"] if m["role"] == "user").get("images", []))


def test_the_model_behind_a_service_receives_them(looker: tuple[str, Path]) -> None:
    address, recording = looker
    with AgentClient([address], agent="looker") as client:
        assert client.run("Unary look.", images=[PNG, GIF]).answer == "a grey square"
        events = list(client.run_stream("Streamed look.", images=[JPEG]))
        record, _ = client.start_run("Background look.", images=[WEBP])
        wait_until(lambda: client.get_run(record.run_id).answer is not None)
        assert client.get_run(record.run_id).answer == "a grey square"
    assert any(type(e).__name__ == "FinalAnswer" for e in events)
    assert [i["sha256"] for i in received(recording, "Unary look.")] == [
        Image.of(PNG).sha256, Image.of(GIF).sha256]  # fmt: skip
    assert [i["media_type"] for i in received(recording, "Streamed look.")] == ["image/jpeg"]
    assert [i["media_type"] for i in received(recording, "Background look.")] == ["image/webp"]
    # The audit log says which images each model call was shown: digests, not bytes.
    entries = [json.loads(line) for path in (recording.parent / "a").glob("*.jsonl")
               for line in path.read_text().splitlines()]  # fmt: skip
    unary = next(e for e in entries if e.get("task") == "Unary look.")
    call = next(e for e in entries
                if e["event"] == "ModelOutput" and e["run_id"] == unary["run_id"])  # fmt: skip
    shown = [m["images"] for m in call["prompt"] if m.get("images")]
    assert shown == [[Image.of(PNG).digest(), Image.of(GIF).digest()]]


def test_a_remote_specialist_takes_them_as_a_local_agent_does(looker: tuple[str, Path]) -> None:
    address, recording = looker
    remote = RemoteAgent("looker", address, description="Says what a picture shows.")
    try:
        assert remote.run("Remote look.", images=[PNG]) == "a grey square"
        with pytest.raises(InvalidRequestError, match="not an image"):
            remote.run("Remote look.", images=[b"nope"])  # refused before it travels
    finally:
        remote.close()
    assert [i["bytes"] for i in received(recording, "Remote look.")] == [len(PNG)]


@pytest.mark.parametrize(
    ("images", "says"),
    [
        ([pb.Image(media_type="image/png", data=padded(MAX_IMAGE_BYTES + 1))], "at most 4 MiB"),
        ([pb.Image(media_type="image/gif", data=PNG)], "said to be 'image/gif' is image/png"),
        ([pb.Image(media_type="image/png", data=b"<script>")], "image 1: not an image"),
        ([pb.Image(media_type="image/png", data=PNG)] * 9, "at most 8 images"),
    ],
)
def test_the_service_refuses_bad_ones_as_invalid_argument(
    looker: tuple[str, Path], images: list[pb.Image], says: str
) -> None:
    address, _ = looker
    with grpc.insecure_channel(address) as channel:  # a raw stub: no client-side check
        stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as raised:
            stub.Run(pb.RunRequest(task="Look.", images=images), timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in (raised.value.details() or "")
    assert len(raised.value.details() or "") < 300


def test_mesh_run_sends_them_from_the_command_line(
    looker: tuple[str, Path], tmp_path: Path
) -> None:
    address, recording = looker
    (tmp_path / "shot.png").write_bytes(PNG)
    (tmp_path / "notes.txt").write_text("not a picture")
    mesh = str(Path(sys.executable).parent / "mesh")
    done = subprocess.run([mesh, "run", "--address", address, "--quiet", "--image", "shot.png",
                           "--image", "shot.png", "CLI look."],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "a grey square"
    assert [i["sha256"] for i in received(recording, "CLI look.")] == [Image.of(PNG).sha256] * 2
    bad = subprocess.run([mesh, "run", "--address", address, "--image", "notes.txt", "Look."],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 1 and "not an image of a known type" in bad.stderr
    assert "Traceback" not in bad.stderr
