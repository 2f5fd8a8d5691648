r"""The protobuf wire format, and the ``k8s\x00`` envelope Kubernetes wraps it in.

Protocol buffers encode a message as a sequence of fields, each a *tag*
(``field number << 3 | wire type``, a varint) and a value whose shape the
wire type gives: ``VARINT`` (a base-128 varint), ``I64`` (8 little-endian
bytes), ``LEN`` (a varint length, then that many bytes: strings, bytes,
nested messages, packed repeated numbers) and ``I32`` (4 bytes). Nothing on
the wire says what a field means; :mod:`.protobuf` reads that from
:mod:`.protoschema`.

Kubernetes' protobuf serializer (apimachinery
``runtime/serializer/protobuf``) writes the 4 bytes ``k8s\x00``, then a
``runtime.Unknown`` message: ``1 typeMeta {1 apiVersion, 2 kind}``, ``2 raw``
(the object's own message), ``3 contentEncoding``, ``4 contentType``. A
watch stream (``;stream=watch``) is a sequence of ``WatchEvent`` messages
(``1 type``, ``2 object {1 raw}``, the raw object in its envelope), each
without the magic bytes and preceded by its length in 4 big-endian bytes
(``LengthDelimitedFramer``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator


VARINT, I64, LEN, I32 = 0, 1, 2, 5
#: What precedes every object the protobuf serializer writes.
MAGIC = b"k8s\x00"

#: A decoded field's value: an int (varint, I64, I32) or bytes (LEN).
Value = int | bytes


class WireError(ValueError):
    """Bytes that are no well-formed protobuf."""


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Read a varint at ``pos``; return it (unsigned) and the position after it."""
    result = shift = 0
    while True:
        if pos >= len(data):
            raise WireError("unexpected EOF in a varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint overflows 64 bits")


def fields(data: bytes) -> Iterator[tuple[int, int, Value]]:
    """Yield ``(field number, wire type, value)`` for each field of a message.

    Groups (wire types 3 and 4, long deprecated) and field number 0 are
    malformed input, as for Go's decoders.
    """
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("illegal tag 0")
        value: Value
        if wire == VARINT:
            value, pos = read_varint(data, pos)
        elif wire == I64:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire == I32:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        elif wire == LEN:
            length, pos = read_varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        else:
            raise WireError(f"illegal wire type {wire} for field {number}")
        if pos > len(data):
            raise WireError(f"unexpected EOF in field {number}")
        yield number, wire, value


def packed(data: bytes, wire: int) -> Iterator[int]:
    """The numbers of a packed repeated field (varints, or fixed 4/8 bytes)."""
    pos = 0
    while pos < len(data):
        if wire == VARINT:
            number, pos = read_varint(data, pos)
        else:
            size = 8 if wire == I64 else 4
            if pos + size > len(data):
                raise WireError("unexpected EOF in a packed field")
            number, pos = int.from_bytes(data[pos : pos + size], "little"), pos + size
        yield number


def signed(value: int, bits: int) -> int:
    """A varint's unsigned value read as a two's complement ``bits``-bit int."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def varint(value: int) -> bytes:
    """Encode an int as a varint (negative: 64-bit two's complement, 10 bytes)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(number: int, wire: int) -> bytes:
    """A field's key."""
    return varint(number << 3 | wire)


def length_delimited(number: int, payload: bytes) -> bytes:
    """A ``LEN`` field: key, length, payload."""
    return tag(number, LEN) + varint(len(payload)) + payload


def double(value: float) -> bytes:
    """A ``double`` as its 8 little-endian bytes."""
    return struct.pack("<d", value)


def as_double(value: int) -> float:
    """The ``double`` whose 8 little-endian bytes a field held as an int."""
    number: float = struct.unpack("<d", value.to_bytes(8, "little"))[0]
    return number


def unwrap(body: bytes) -> tuple[str, str, bytes]:
    """Open the envelope: ``(apiVersion, kind, raw)`` of an object's bytes."""
    if not body.startswith(MAGIC):
        raise WireError("provided data does not appear to be a protobuf message")
    type_meta: dict[int, bytes] = {}
    raw = b""
    for number, _, value in fields(body[len(MAGIC) :]):
        if number == 1 and isinstance(value, bytes):
            for inner, _, text in fields(value):
                if isinstance(text, bytes):
                    type_meta[inner] = text
        elif number == 2 and isinstance(value, bytes):
            raw = value
    return type_meta.get(1, b"").decode(), type_meta.get(2, b"").decode(), raw


def wrap(api_version: str, kind: str, raw: bytes) -> bytes:
    """Close the envelope, as the serializer does (empty encoding and type)."""
    type_meta = length_delimited(1, api_version.encode()) + length_delimited(
        2, kind.encode()
    )
    unknown = (
        length_delimited(1, type_meta)
        + length_delimited(2, raw)
        + length_delimited(3, b"")
        + length_delimited(4, b"")
    )
    return MAGIC + unknown


def frame(message: bytes) -> bytes:
    """One frame of a protobuf watch stream: big-endian length, message."""
    return len(message).to_bytes(4, "big") + message
