"""Files as answers: ``File`` and the JSON shape every layer carries unchanged.

An agent's answer crosses a jail, the wire, run records and the shared
database as JSON. A file therefore travels as one JSON object,
``{"$file": {"name", "media_type", "base64" | "url"}}``, which ``File`` makes
and reads back; a code agent's code can build the same dict without
importing anything. Protocols that know files (A2A's file parts) show such an
answer as a file; everything else shows the JSON.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from mesh.errors import InvalidRequestError

__all__ = ["FILE_KEY", "MAX_FILE_BYTES", "File"]

FILE_KEY = "$file"
MAX_FILE_BYTES = 4 * 2**20
MAX_NAME_CHARS = 255
MAX_MEDIA_TYPE_CHARS = 127
MAX_URL_CHARS = 2048


@dataclass(frozen=True)
class File:
    """A named file: its bytes (at most ``MAX_FILE_BYTES``) or a URL where it is."""

    name: str
    media_type: str = "application/octet-stream"
    data: bytes | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        if (self.data is None) == (self.url is None):
            raise InvalidRequestError("a file has either data or a url, not both or neither")
        if len(self.name) > MAX_NAME_CHARS or len(self.media_type) > MAX_MEDIA_TYPE_CHARS:
            raise InvalidRequestError(
                f"a file's name is at most {MAX_NAME_CHARS} characters and its media type "
                f"at most {MAX_MEDIA_TYPE_CHARS}"
            )
        if self.data is not None and len(self.data) > MAX_FILE_BYTES:
            raise InvalidRequestError(f"a file is at most {MAX_FILE_BYTES} bytes")
        if self.url is not None and len(self.url) > MAX_URL_CHARS:
            raise InvalidRequestError(f"a file's url is at most {MAX_URL_CHARS} characters")

    def to_json(self) -> dict[str, Any]:
        where = (
            {"url": self.url}
            if self.data is None
            else {"base64": base64.b64encode(self.data).decode("ascii")}
        )
        return {FILE_KEY: {"name": self.name, "media_type": self.media_type, **where}}

    @classmethod
    def from_json(cls, value: Any) -> File | None:
        """The file ``value`` is the JSON shape of; None if it is not that shape (or a
        file passed through unchanged)."""
        if isinstance(value, File):
            return value
        if not (
            isinstance(value, dict) and len(value) == 1 and isinstance(value.get(FILE_KEY), dict)
        ):
            return None
        spec = value[FILE_KEY]
        name, media_type = spec.get("name", ""), spec.get("media_type", "application/octet-stream")
        encoded, url = spec.get("base64"), spec.get("url")
        if not (isinstance(name, str) and isinstance(media_type, str)):
            return None
        try:
            if isinstance(encoded, str) and url is None:
                if len(encoded) > MAX_FILE_BYTES * 4 // 3 + 4:
                    return None
                return cls(name, media_type, data=base64.b64decode(encoded, validate=True))
            if isinstance(url, str) and encoded is None:
                return cls(name, media_type, url=url)
        except (binascii.Error, InvalidRequestError):
            return None
        return None
