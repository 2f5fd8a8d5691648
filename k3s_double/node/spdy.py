"""SPDY/3.1 port-forwarding, the server end, as kubectl speaks it.

kubectl 1.31+ forwards ports over a websocket whose subprotocol is
``SPDY/3.1+portforward.k8s.io``: SPDY frames travel as the bytes of binary
messages (client-go ``tools/portforward/tunneling_connection.go``); older
clients (and kubectl when that upgrade fails) upgrade the HTTP connection
itself to ``SPDY/3.1`` with ``X-Stream-Protocol-Version:
portforward.k8s.io``. Either way, per forwarded connection the client opens
two streams whose headers say ``streamtype`` (``error``, then ``data``),
``port`` and ``requestid``; the kubelet answers each with a SYN_REPLY,
relays the data stream to a TCP connection to the port, writes a failure on
the error stream, and ends a stream with an empty DATA frame flagged FIN.

Frames are SPDY/3 (draft-mbelshe-httpbis-spdy-00; moby/spdystream's
``spdy`` package): header blocks compressed with one zlib stream per
direction and the draft's dictionary (:data:`DICTIONARY`). Flow control
windows are not enforced (spdystream enforces none either).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import zlib
from collections.abc import Callable
from typing import Protocol


VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW = (
    1, 2, 3, 4, 6, 7, 8, 9,
)  # fmt: skip
FLAG_FIN = 0x01
PORTFORWARD = "portforward.k8s.io"
#: The websocket subprotocol that tunnels SPDY (client-go's constant).
TUNNEL_PROTOCOL = "SPDY/3.1+portforward.k8s.io"

_HEADER_NAMES = (
    "options head post put delete trace accept accept-charset accept-encoding "
    "accept-language accept-ranges age allow authorization cache-control "
    "connection content-base content-encoding content-language content-length "
    "content-location content-md5 content-range content-type date etag expect "
    "expires from host if-match if-modified-since if-none-match if-range "
    "if-unmodified-since last-modified location max-forwards pragma "
    "proxy-authenticate proxy-authorization range referer retry-after server "
    "te trailer transfer-encoding upgrade user-agent vary via warning "
    "www-authenticate method get status"
)
#: The length-prefixed words of the SPDY/3 header dictionary, in order.
_WORDS = [
    *_HEADER_NAMES.split(),
    "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive",
    "origin",
]  # fmt: skip
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414"
    "415416417502504505203 Non-Authoritative Information204 No Content301 Moved "
    "Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 "
    "Internal Server Error501 Not Implemented503 Service UnavailableJan Feb Mar "
    "Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, "
    "Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,"
    "application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
#: The SPDY/3 header compression dictionary (the draft, section 2.6.10.1).
DICTIONARY = (
    b"".join(struct.pack("!I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()
)


class Transport(Protocol):
    """Bytes both ways: a socket, or a websocket's binary messages."""

    def read(self) -> bytes:
        """Some bytes; ``b""`` once closed."""
        ...

    def write(self, data: bytes) -> None:
        """Send all of ``data``."""
        ...

    def close(self) -> None:
        """Close the transport."""
        ...


class _Reader:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.buffer = b""

    def exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            more = self.transport.read()
            if not more:
                raise EOFError("connection closed")
            self.buffer += more
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def encode_headers(headers: dict[str, str], compressor: zlib._Compress) -> bytes:
    """A header block, compressed on the connection's zlib stream."""
    block = struct.pack("!I", len(headers))
    for name, value in headers.items():
        block += struct.pack("!I", len(name)) + name.encode()
        block += struct.pack("!I", len(value)) + value.encode()
    return compressor.compress(block) + compressor.flush(zlib.Z_SYNC_FLUSH)


def decode_headers(data: bytes, decompressor: zlib._Decompress) -> dict[str, str]:
    """A header block, decompressed on the connection's zlib stream."""
    block = decompressor.decompress(data)
    (count,) = struct.unpack("!I", block[:4])
    headers, at = {}, 4
    for _ in range(count):
        (size,) = struct.unpack("!I", block[at : at + 4])
        name = block[at + 4 : at + 4 + size].decode()
        at += 4 + size
        (size,) = struct.unpack("!I", block[at : at + 4])
        headers[name.lower()] = block[at + 4 : at + 4 + size].decode()
        at += 4 + size
    return headers


def control(kind: int, flags: int, payload: bytes) -> bytes:
    """A control frame."""
    return struct.pack("!HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + (
        payload
    )


def data_frame(stream: int, data: bytes, *, fin: bool = False) -> bytes:
    """A DATA frame."""
    flags = FLAG_FIN if fin else 0
    return struct.pack("!II", stream & 0x7FFFFFFF, (flags << 24) | len(data)) + data


class _Pair:
    """The error and data streams of one forwarded connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.error = 0
        self.data = 0
        self.sock: socket.socket | None = None


class PortForwardSession:
    """Serves one SPDY port-forward connection until the client closes it."""

    def __init__(
        self,
        transport: Transport,
        pod: str,
        connect: Callable[[int], socket.socket] = lambda port: socket.create_connection(
            ("127.0.0.1", port), timeout=5
        ),
    ) -> None:
        self.transport = transport
        self.pod = pod
        self.connect = connect
        self._compressor = zlib.compressobj(9, zdict=DICTIONARY)
        self._decompressor = zlib.decompressobj(zdict=DICTIONARY)
        self._lock = threading.Lock()
        self._pairs: dict[str, _Pair] = {}
        self._by_data: dict[int, _Pair] = {}

    def _send(self, frame: bytes) -> None:
        with self._lock:
            self.transport.write(frame)

    def _reply(self, stream: int) -> None:
        with self._lock:
            block = encode_headers({}, self._compressor)
            self.transport.write(
                control(SYN_REPLY, 0, struct.pack("!I", stream) + block)
            )

    def serve(self) -> None:
        """Read frames until the connection ends; close every TCP connection."""
        reader = _Reader(self.transport)
        try:
            while True:
                first, second = struct.unpack("!II", reader.exact(8))
                flags, length = second >> 24, second & 0xFFFFFF
                payload = reader.exact(length)
                if first & 0x80000000:
                    self._control(first & 0xFFFF, flags, payload)
                else:
                    self._data(first & 0x7FFFFFFF, flags, payload)
        except (EOFError, OSError, zlib.error, struct.error):
            pass
        finally:
            for pair in list(self._pairs.values()):
                if pair.sock is not None:
                    with contextlib.suppress(OSError):
                        pair.sock.close()
            self.transport.close()

    def _control(self, kind: int, flags: int, payload: bytes) -> None:
        if kind == PING:
            self._send(control(PING, 0, payload))
        elif kind == SYN_STREAM:
            (stream,) = struct.unpack("!I", payload[:4])
            stream &= 0x7FFFFFFF
            headers = decode_headers(payload[10:], self._decompressor)
            self._reply(stream)
            self._stream(stream, headers)
        elif kind == HEADERS:
            decode_headers(payload[4:], self._decompressor)  # keep zlib in step
        elif kind == GOAWAY:
            raise EOFError("goaway")

    def _stream(self, stream: int, headers: dict[str, str]) -> None:
        request = headers.get("requestid", "")
        port_text = headers.get("port", "")
        pair = self._pairs.get(request)
        if pair is None:
            port = int(port_text) if port_text.isdigit() else 0
            pair = self._pairs[request] = _Pair(port)
        if headers.get("streamtype") == "error":
            pair.error = stream
        elif headers.get("streamtype") == "data":
            pair.data = stream
            self._by_data[stream] = pair
        if pair.error and pair.data and pair.sock is None:
            # Connected before the next frame is read: no data goes astray.
            self._connect(pair)

    def _connect(self, pair: _Pair) -> None:
        try:
            sock = self.connect(pair.port)
            sock.settimeout(None)
        except OSError as error:
            message = (
                f"error forwarding port {pair.port} to pod {self.pod}: failed to "
                f"connect to localhost:{pair.port} inside the node: dial tcp4 "
                f"127.0.0.1:{pair.port}: connect: {error.strerror or error}"
            )
            with contextlib.suppress(OSError):
                self._send(data_frame(pair.error, message.encode(), fin=True))
                self._send(data_frame(pair.data, b"", fin=True))
            return
        pair.sock = sock
        threading.Thread(target=self._pump, args=(pair, sock), daemon=True).start()

    def _pump(self, pair: _Pair, sock: socket.socket) -> None:
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                self._send(data_frame(pair.data, data))
        except OSError:
            pass
        with contextlib.suppress(OSError):
            self._send(data_frame(pair.data, b"", fin=True))
            self._send(data_frame(pair.error, b"", fin=True))

    def _data(self, stream: int, flags: int, payload: bytes) -> None:
        pair = self._by_data.get(stream)
        if pair is None or pair.sock is None:
            return
        try:
            if payload:
                pair.sock.sendall(payload)
            if flags & FLAG_FIN:
                pair.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
