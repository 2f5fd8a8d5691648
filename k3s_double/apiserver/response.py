"""What the API answers: a status, a body, and for watches a stream."""

from __future__ import annotations

import json
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import BinaryIO


@dataclass
class Response:
    """One answer of the API; ``stream`` (watch) is sent chunked, one event a line."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    stream: Iterator[bytes] | None = None
    #: Extra response headers (``Retry-After``).
    headers: dict[str, str] = field(default_factory=dict)
    #: For an upgrade (exec, port-forward): takes the client's connection and
    #: its buffered reader over; the listener writes nothing itself.
    takeover: Callable[[Any, BinaryIO], None] | None = None


def json_response(status: int, obj: Any) -> Response:
    """A JSON answer."""
    return Response(status, json.dumps(obj).encode())
