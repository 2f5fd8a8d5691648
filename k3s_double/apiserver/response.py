"""What the API answers: a status, a body, and for watches a stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any


@dataclass
class Response:
    """One answer of the API; ``stream`` (watch) is sent chunked, one event a line."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    stream: Iterator[bytes] | None = None
    #: Extra response headers (``Retry-After``).
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, obj: Any) -> Response:
    """A JSON answer."""
    return Response(status, json.dumps(obj).encode())
