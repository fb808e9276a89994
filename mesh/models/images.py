"""Images a run shows its model: the task's (``run(task, images=[...])``) and tools'.

An ``Image`` is bytes and their media type, checked when it is made: the type is sniffed
from the bytes themselves (PNG, JPEG, GIF or WebP, nothing else) and must be the one it
claims, and the bytes are at most ``MAX_IMAGE_BYTES``. A run takes at most ``MAX_IMAGES``
of at most ``MAX_IMAGES_BYTES`` in all: the limits the wire promises (``Image`` in
``protos/smolmesh/v1/agent.proto``), so that what runs in process runs across the mesh too,
within gRPC's 8 MiB message limit.

Images come from a path, bytes, or a ``data:`` URL: a caller that has an image on the web
fetches it first (a run never reaches out for its input). Errors are
``InvalidRequestError``s that name the problem and never repeat the input (a path or a
URL's header is clipped).

Logs and recordings show an image as its ``digest``, a few dozen bytes (media type, size,
sha256); the memory's JSON keeps the bytes, base64.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from mesh.errors import InvalidRequestError
from mesh.text import clip

__all__ = [
    "MAX_IMAGES",
    "MAX_IMAGES_BYTES",
    "MAX_IMAGE_BYTES",
    "MEDIA_TYPES",
    "Image",
    "ImageSource",
    "checked_images",
    "fits",
    "sniff",
]

MAX_IMAGES = 8
"""Images per run (and per step, for images tools return)."""
MAX_IMAGE_BYTES = 4 * 1024 * 1024
MAX_IMAGES_BYTES = 6 * 1024 * 1024
"""All of a run's images together: with the task, a run request stays under 8 MiB."""
MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
_SHOWN_CHARS = 80
"""How much of a path or a data URL's header an error shows."""


@dataclass(frozen=True)
class Image:
    """An image as bytes and their media type, checked on creation (see the module)."""

    media_type: str
    data: bytes = field(repr=False)
    tool_output_type: ClassVar[str] = "image"
    """What ``@tool`` makes of a function that returns one (tools sit below models)."""

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise InvalidRequestError("an image's data must be bytes")
        if len(self.data) > MAX_IMAGE_BYTES:
            raise InvalidRequestError(
                f"an image is at most {_mib(MAX_IMAGE_BYTES)}; this one is {len(self.data):,} bytes"
            )
        sniffed = sniff(self.data)
        if sniffed is None:
            raise InvalidRequestError(
                f"not an image of a known type (the bytes are none of {', '.join(MEDIA_TYPES)})"
            )
        if self.media_type != sniffed:
            claimed = clip(repr(self.media_type), _SHOWN_CHARS)
            raise InvalidRequestError(f"an image said to be {claimed} is {sniffed}")

    @classmethod
    def of(cls, source: ImageSource) -> Image:
        """An image from a path (str or Path), bytes, a ``data:`` URL, or an Image."""
        if isinstance(source, Image):
            return source
        if isinstance(source, bytes | bytearray | memoryview):
            data = bytes(source)
            return cls(sniff(data) or "", data)
        if isinstance(source, str) and source.startswith("data:"):
            return cls.from_data_url(source)
        if isinstance(source, str) and source.startswith(("http://", "https://")):
            raise InvalidRequestError(
                "an image URL is not fetched: download the image and pass its bytes or path"
            )
        if isinstance(source, str | Path):
            return cls.from_path(source)
        raise InvalidRequestError(
            f"an image is a path, bytes or a data: URL, not {type(source).__name__}"
        )

    @classmethod
    def from_path(cls, path: str | Path) -> Image:
        """The image in the file ``path``; its size is checked before it is read."""
        shown = clip(str(path), _SHOWN_CHARS)
        try:
            with Path(path).open("rb") as file:
                data = file.read(MAX_IMAGE_BYTES + 1)  # one more: enough to say it is too big
        except OSError as err:
            raise InvalidRequestError(f"cannot read image {shown}: {err.strerror}") from None
        if len(data) > MAX_IMAGE_BYTES:
            raise InvalidRequestError(f"image {shown} is over {_mib(MAX_IMAGE_BYTES)}")
        return cls(sniff(data) or "", data)

    @classmethod
    def from_data_url(cls, url: str) -> Image:
        """The image of ``data:<media type>;base64,<data>``; the type must be the bytes'."""
        header, comma, payload = url.partition(",")
        media_type, _, encoding = header.removeprefix("data:").partition(";")
        if not comma or encoding != "base64":
            shown = clip(repr(header), _SHOWN_CHARS)
            raise InvalidRequestError(f"a data URL is data:<type>;base64,<data>, not {shown}...")
        if len(payload) > (MAX_IMAGE_BYTES + 2) // 3 * 4 + 4:  # before decoding any of it
            raise InvalidRequestError(f"an image is at most {_mib(MAX_IMAGE_BYTES)}")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError("a data URL's image is not valid base64") from None
        return cls(media_type, data)

    @classmethod
    def from_dict(cls, data: Any) -> Image:
        """What ``to_dict`` wrote (ValueError for anything else)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("data"), str):
            raise ValueError("an image is an object with its media_type and base64 data")
        try:
            return cls(str(data.get("media_type")), base64.b64decode(data["data"], validate=True))
        except (binascii.Error, InvalidRequestError) as err:
            raise ValueError(f"an image: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        """The image as JSON: its digest and its bytes, base64."""
        return {**self.digest(), "data": base64.b64encode(self.data).decode("ascii")}

    @property
    def data_url(self) -> str:
        """``data:image/png;base64,...``: how an image reaches a model (OpenAI's format)."""
        return f"data:{self.media_type};base64,{base64.b64encode(self.data).decode('ascii')}"

    @cached_property
    def sha256(self) -> str:
        """Computed once: digests name an image in every audit record and recording."""
        return hashlib.sha256(self.data).hexdigest()

    def digest(self) -> dict[str, Any]:
        """The image in a few dozen bytes, for logs and recordings: type, size, sha256."""
        return {"media_type": self.media_type, "bytes": len(self.data), "sha256": self.sha256}

    @property
    def summary(self) -> str:
        """``image/png, 12,345 bytes``: what a model reads where an image was."""
        return f"{self.media_type}, {len(self.data):,} bytes"

    def __repr__(self) -> str:
        return f"Image({self.summary}, sha256={self.sha256[:12]})"


ImageSource = Image | str | Path | bytes
"""What ``Image.of`` takes: an Image, a path (str or Path), bytes, or a ``data:`` URL."""


def sniff(data: bytes) -> str | None:
    """The media type the bytes begin as (their magic number); None: none we take."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def checked_images(
    sources: Iterable[ImageSource] | None,
) -> tuple[Image, ...]:
    """A run's images, each loaded and checked, and all within ``MAX_IMAGES`` and
    ``MAX_IMAGES_BYTES``; a clear error otherwise (which image, never its content)."""
    if sources is None:
        return ()
    if isinstance(sources, str | bytes | Path | Image):
        raise InvalidRequestError("images must be a list (of paths, bytes or data: URLs)")
    images: list[Image] = []
    for number, source in enumerate(sources, 1):
        if number > MAX_IMAGES:
            raise InvalidRequestError(f"a run takes at most {MAX_IMAGES} images")
        try:
            images.append(Image.of(source))
        except InvalidRequestError as err:
            raise InvalidRequestError(f"image {number}: {err.message}") from None
    total = sum(len(image.data) for image in images)
    if total > MAX_IMAGES_BYTES:
        raise InvalidRequestError(
            f"a run's images are at most {_mib(MAX_IMAGES_BYTES)} in all; these are {total:,} bytes"
        )
    return tuple(images)


def fits(kept: Sequence[Image], image: Image) -> bool:
    """Whether ``image`` may join ``kept`` within the limits of one run's (or step's) images."""
    total = sum(len(k.data) for k in kept) + len(image.data)
    return len(kept) < MAX_IMAGES and total <= MAX_IMAGES_BYTES


def _mib(size: int) -> str:
    return f"{size / 2**20:g} MiB"
