"""The server end of RFC 6455 websockets and Kubernetes' channel protocols.

The kubelet's streaming server speaks them for ``exec`` and ``portForward``
(apimachinery ``pkg/util/httpstream/wsstream``): every binary (or text)
message starts with a channel byte. ``exec``: 0 stdin, 1 stdout, 2 stderr,
3 the error channel (``v4``: a JSON ``metav1.Status``), 4 resize; ``v5``
adds 255, "close channel <n>" (half-close of stdin). ``portForward``: for
the n-th requested port a data channel 2n and an error channel 2n+1, each
opened by a frame carrying the port as two little-endian bytes.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import threading
from collections.abc import Mapping
from collections.abc import Sequence
from typing import BinaryIO


#: RFC 6455's key suffix for ``Sec-WebSocket-Accept``.
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10

V4 = "v4.channel.k8s.io"
V5 = "v5.channel.k8s.io"
#: What ``exec`` speaks, newest first (kubelet 1.30+ knows v5).
EXEC_PROTOCOLS = (V5, V4, "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
#: What ``portForward`` over websockets speaks: SPDY tunnelled in binary
#: messages (kubectl), or wsstream's port-forward channels.
PORTFORWARD_PROTOCOLS = ("SPDY/3.1+portforward.k8s.io", "portforward.k8s.io", V4)
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


class ProtocolError(Exception):
    """The peer broke RFC 6455, or asked for no protocol we speak."""


def is_upgrade(headers: Mapping[str, str]) -> bool:
    """Whether a request (lower-cased headers) asks for a websocket."""
    return (
        headers.get("upgrade", "").lower() == "websocket"
        and "upgrade" in headers.get("connection", "").lower()
    )


def choose(headers: Mapping[str, str], supported: Sequence[str]) -> str:
    """The first subprotocol the client offers that we speak.

    As wsstream does, the client's order decides; an empty offer is
    refused (the channel protocols need one).
    """
    offered = [
        p.strip()
        for p in headers.get("sec-websocket-protocol", "").split(",")
        if p.strip()
    ]
    for protocol in offered:
        if protocol in supported:
            return protocol
    raise ProtocolError(
        f"unable to upgrade: unable to negotiate protocol: client supports "
        f"{offered}, server supports {list(supported)}"
    )


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def handshake(headers: Mapping[str, str], protocol: str) -> bytes:
    """The ``101 Switching Protocols`` answer."""
    key = headers.get("sec-websocket-key", "")
    if not key:
        raise ProtocolError("missing Sec-WebSocket-Key")
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n"
        f"Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
    ).encode()


def encode_frame(opcode: int, payload: bytes, *, mask: bytes | None = None) -> bytes:
    """One final frame; servers send unmasked, clients masked (``mask``)."""
    head = bytes([0x80 | opcode])
    bit = 0x80 if mask is not None else 0
    size = len(payload)
    if size < 126:
        head += bytes([bit | size])
    elif size < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    if mask is None:
        return head + payload
    return head + mask + _unmask(payload, mask)


def _unmask(data: bytes, mask: bytes) -> bytes:
    repeated = (mask * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(data), "big"
    )


def _read_exact(source: BinaryIO, size: int) -> bytes:
    data = source.read(size) if size else b""
    if len(data) != size:
        raise EOFError("connection closed")
    return data


def read_frame(source: BinaryIO) -> tuple[bool, int, bytes]:
    """``(fin, opcode, payload)`` of the next frame, unmasked."""
    first, second = _read_exact(source, 2)
    size = second & 0x7F
    if size == 126:
        size = struct.unpack("!H", _read_exact(source, 2))[0]
    elif size == 127:
        size = struct.unpack("!Q", _read_exact(source, 8))[0]
    mask = _read_exact(source, 4) if second & 0x80 else None
    payload = _read_exact(source, size)
    if mask is not None:
        payload = _unmask(payload, mask)
    return bool(first & 0x80), first & 0x0F, payload


class Connection:
    """A websocket after its handshake: whole messages in, frames out."""

    def __init__(self, rfile: BinaryIO, wfile: BinaryIO, protocol: str) -> None:
        self.rfile = rfile
        self.wfile = wfile
        self.protocol = protocol
        self._lock = threading.Lock()
        self.closed = False

    def send(self, channel: int, data: bytes) -> None:
        """One binary message on ``channel``."""
        self._send(OP_BINARY, bytes([channel]) + data)

    def send_raw(self, data: bytes) -> None:
        """One binary message of ``data`` as it is (a tunnel's bytes)."""
        self._send(OP_BINARY, data)

    def _send(self, opcode: int, payload: bytes) -> None:
        with self._lock:
            if self.closed:
                raise OSError("websocket closed")
            self.wfile.write(encode_frame(opcode, payload))
            self.wfile.flush()

    def receive(self) -> bytes | None:
        """The next data message (channel byte first); None once closed."""
        parts: list[bytes] = []
        while True:
            try:
                fin, opcode, payload = read_frame(self.rfile)
            except (EOFError, OSError, ValueError):
                return None
            if opcode == OP_CLOSE:
                self.close(payload[:2] or struct.pack("!H", 1000))
                return None
            if opcode == OP_PING:
                try:
                    self._send(OP_PONG, payload)
                except OSError:
                    return None
                continue
            if opcode == OP_PONG:
                continue
            parts.append(payload)
            if fin:
                return b"".join(parts)

    def close(self, code: bytes = struct.pack("!H", 1000)) -> None:
        """Send a close frame once; later sends fail."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            try:
                self.wfile.write(encode_frame(OP_CLOSE, code))
                self.wfile.flush()
            except OSError:
                pass
