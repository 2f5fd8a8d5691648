r"""Protobuf bodies (``application/vnd.kubernetes.protobuf``), both ways.

client-go, so kubectl and helm, sends the built-in kinds as protobuf: the
``k8s\x00`` envelope around a ``runtime.Unknown`` whose ``raw`` is the
object's message (:mod:`.protowire`). Every real API server accepts that.
Here a body in that format is decoded, by the field numbers of
:mod:`.protoschema`, into the dict a JSON client would have sent for the same
Go object (``json.Marshal`` of what Go's decoder fills: zero ``omitempty``
values left out, pointers kept, ``Time`` as RFC 3339, ``bytes`` as base64),
and from there the request goes on exactly as a JSON one. The kinds are
those of :data:`.protoschema.KINDS` (plus ``Status`` and ``DeleteOptions``);
another kind is a 415 naming it, what any protobuf body was before. Fields
unknown to a message are skipped, as protobuf decoders skip them; bytes that
are no protobuf, or a known field with the wrong wire type, are a 400.

Answers stay JSON whenever the ``Accept`` header allows JSON (client-go sends
``application/vnd.kubernetes.protobuf,application/json``); the API server
would prefer protobuf, but a client takes either. When ``Accept`` admits
protobuf and no JSON, a resource request's answer is encoded with the same
table (objects, lists, ``Status`` errors; watches as length-framed
``WatchEvent`` messages, ``;stream=watch``), and an object of a kind the
table lacks (a custom resource, a ``Table``) is a 406 ``NotAcceptable`` in
JSON. That is decided on the answer, after a write is done; kube-apiserver
refuses an ``Accept`` it cannot serve before it writes, but it takes
protobuf for custom resources (apiextensions-apiserver serves its metadata
types in it) and fails on encoding their answer, after the write too.
Discovery, ``/version`` and the health checks stay JSON or text.

:func:`serve` is the hook :meth:`.server.KubeAPI.handle` calls around the
router.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any

from . import protowire
from .errors import ApiError
from .errors import bad_request
from .errors import unsupported_media
from .kinds import Obj
from .protoschema import INLINE
from .protoschema import KINDS
from .protoschema import MESSAGES
from .protoschema import OPT
from .protoschema import REP
from .protowire import LEN
from .protowire import VARINT
from .protowire import WireError
from .protowire import length_delimited
from .protowire import tag
from .protowire import varint
from .response import Response
from .response import json_response


PROTOBUF = "application/vnd.kubernetes.protobuf"
#: What a watch answer's ``Content-Type`` is in protobuf.
PROTOBUF_WATCH = PROTOBUF + ";stream=watch"
#: Kinds of ``meta/v1`` every group version registers.
META_KINDS = ("Status", "DeleteOptions")
#: The media types a kind without a protobuf message is served in.
TEXT_TYPES = ("application/json", "application/yaml")
_NUMBERS = ("bool", "int32", "int64", "double")
_TIMES = ("Time", "MicroTime")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class EncodeError(ValueError):
    """A JSON value that does not fit its protobuf field."""


def message_for(api_version: str, kind: str) -> str | None:
    """The message of an object's kind, or None when the table has none."""
    if kind in META_KINDS:
        return kind
    return KINDS.get((api_version, kind))


# Decoding: bytes -> the JSON-shaped dict.


def decode_object(body: bytes) -> Obj:
    """Decode an enveloped object into its JSON form (415, 400 as the server)."""
    try:
        api_version, kind, raw = protowire.unwrap(body)
    except WireError as error:
        raise bad_request(f"error decoding request body: {error}") from error
    message = message_for(api_version, kind)
    if message is None:
        refused = unsupported_media(PROTOBUF, TEXT_TYPES).message
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f'{refused} (the k3s double has no protobuf message for kind "{kind}"'
            f' of "{api_version}")',
            {},
        )
    try:
        fields = decode_message(message, raw)
    except (WireError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise bad_request(f"error decoding request body: {error}") from error
    return {"kind": kind, "apiVersion": api_version, **fields}


def decode_message(name: str, data: bytes) -> Obj:
    """Decode one message of :data:`MESSAGES` into a JSON object."""
    schema = MESSAGES[name]
    obj: Obj = {}
    for number, wire, value in protowire.fields(data):
        field = schema.get(number)
        if field is None:
            continue  # a field newer than the table: skipped, as protobuf does
        json_name, type_, label = field
        if label == INLINE:
            obj.update(decode_message(type_, _payload(value, name, number)))
        elif type_.startswith("map["):
            key, item = _entry(type_[len("map[string]") :], value, name, number)
            obj.setdefault(json_name, {})[key] = item
        elif label == REP and type_ in _NUMBERS and wire == LEN:
            numbers = protowire.packed(_payload(value, name, number), _wire(type_))
            items = obj.setdefault(json_name, [])
            items.extend(_scalar(type_, n) for n in numbers)
        elif label == REP:
            obj.setdefault(json_name, []).append(
                _value(type_, wire, value, name, number)
            )
        else:
            item = _value(type_, wire, value, name, number)
            if label == OPT and _zero(item):
                obj.pop(json_name, None)  # the last one on the wire wins
            else:
                obj[json_name] = item
    return obj


def _zero(value: Any) -> bool:
    """Whether a decoded value is its type's zero (the zero time is None)."""
    return value is None or (
        isinstance(value, (str, int, float)) and value in ("", 0, False)
    )


def _wire(type_: str) -> int:
    if type_ == "double":
        return protowire.I64
    return VARINT if type_ in _NUMBERS else LEN


def _payload(value: protowire.Value, name: str, number: int) -> bytes:
    if not isinstance(value, bytes):
        raise WireError(f"field {number} of {name}: wrong wire type")
    return value


def _scalar(type_: str, value: int) -> Any:
    if type_ == "bool":
        return bool(value)
    if type_ == "int32":
        return protowire.signed(value, 32)
    if type_ == "int64":
        return protowire.signed(value, 64)
    return protowire.as_double(value)


def _value(
    type_: str, wire: int, value: protowire.Value, name: str, number: int
) -> Any:
    """One field's value in JSON form."""
    if wire != _wire(type_):
        raise WireError(f"field {number} of {name}: wrong wire type {wire}")
    if isinstance(value, int):
        return _scalar(type_, value)
    if type_ == "string":
        return value.decode()
    if type_ == "bytes":
        return base64.b64encode(value).decode()
    special = _SPECIAL_DECODERS.get(type_)
    if special is not None:
        return special(value)
    return decode_message(type_, value)


def _entry(
    type_: str, value: protowire.Value, name: str, number: int
) -> tuple[str, Any]:
    """A map entry (key 1, value 2); a missing part is its zero value."""
    key = ""
    item = _value(type_, LEN, b"", name, number) if type_ != "string" else ""
    for inner, wire, part in protowire.fields(_payload(value, name, number)):
        if inner == 1:
            key = _payload(part, name, number).decode()
        elif inner == 2:
            item = _value(type_, wire, part, name, number)
    return key, item


def _seconds_and_nanos(data: bytes) -> tuple[int, int]:
    seconds = nanos = 0
    for number, wire, value in protowire.fields(data):
        if wire == VARINT and isinstance(value, int):
            if number == 1:
                seconds = protowire.signed(value, 64)
            elif number == 2:
                nanos = protowire.signed(value, 32)
    return seconds, nanos


def _instant(seconds: int, nanos: int) -> datetime.datetime:
    try:
        return _EPOCH + datetime.timedelta(seconds=seconds, microseconds=nanos // 1000)
    except OverflowError as error:
        raise WireError(f"time out of range: {seconds}s") from error


def _time(data: bytes) -> str | None:
    """``metav1.Time``: empty is the zero time (JSON null); nanos are dropped."""
    if not data:
        return None
    seconds, _ = _seconds_and_nanos(data)
    return _instant(seconds, 0).isoformat(timespec="seconds").replace("+00:00", "Z")


def _micro_time(data: bytes) -> str | None:
    """``metav1.MicroTime``: RFC 3339 with six fractional digits."""
    if not data:
        return None
    seconds, nanos = _seconds_and_nanos(data)
    stamp = _instant(seconds, nanos).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")


def _strings(data: bytes, number: int) -> list[str]:
    return [
        value.decode()
        for field, wire, value in protowire.fields(data)
        if field == number and wire == LEN and isinstance(value, bytes)
    ]


def _quantity(data: bytes) -> str:
    """``resource.Quantity``: its string, field 1 (the zero Quantity is "0")."""
    return (_strings(data, 1) or ["0"])[-1]


def _int_or_string(data: bytes) -> int | str:
    """``intstr.IntOrString``: ``1 type`` (1: string), ``2 intVal``, ``3 strVal``."""
    kind = int_value = 0
    text = ""
    for number, _, value in protowire.fields(data):
        if number == 1 and isinstance(value, int):
            kind = value
        elif number == 2 and isinstance(value, int):
            int_value = protowire.signed(value, 32)
        elif number == 3 and isinstance(value, bytes):
            text = value.decode()
    return text if kind == 1 else int_value


def _fields_v1(data: bytes) -> Any:
    """``metav1.FieldsV1``: JSON bytes, field 1."""
    for number, _, value in protowire.fields(data):
        if number == 1 and isinstance(value, bytes):
            return json.loads(value)
    return None


def _extra_value(data: bytes) -> list[str]:
    """``authorization/v1`` ExtraValue: a list of strings in a message."""
    return _strings(data, 1)


_SPECIAL_DECODERS: dict[str, Callable[[bytes], Any]] = {
    "Time": _time,
    "MicroTime": _micro_time,
    "Quantity": _quantity,
    "IntOrString": _int_or_string,
    "FieldsV1": _fields_v1,
    "ExtraValue": _extra_value,
}


# Encoding: the JSON-shaped dict -> bytes.


def encode_object(obj: Mapping[str, Any]) -> bytes | None:
    """Encode an object into its envelope; None when its kind has no message."""
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    message = message_for(api_version, kind)
    if message is None:
        return None
    return protowire.wrap(api_version, kind, encode_message(message, obj))


def encode_message(name: str, obj: Mapping[str, Any]) -> bytes:
    """Encode a JSON object as message ``name`` (unknown keys are left out)."""
    if not isinstance(obj, Mapping):
        raise EncodeError(f"{name}: expected an object, got {obj!r}")
    out = bytearray()
    for number, (json_name, type_, label) in sorted(MESSAGES[name].items()):
        if label == INLINE:
            out += length_delimited(number, encode_message(type_, obj))
            continue
        value = obj.get(json_name)
        if value is None and json_name in obj and type_ in _TIMES and label != OPT:
            # The zero time, JSON's null: an empty message, as Go writes it.
            out += length_delimited(number, b"")
            continue
        if value is None or (label == OPT and _zero(value)):
            continue
        if type_.startswith("map["):
            item_type = type_[len("map[string]") :]
            for key in sorted(_mapping(value, name, json_name)):
                entry = length_delimited(1, str(key).encode()) + _field(
                    2, item_type, value[key], name
                )
                out += length_delimited(number, entry)
        elif label == REP:
            if not isinstance(value, list):
                raise EncodeError(f"{name}.{json_name}: expected a list")
            for item in value:
                out += _field(number, type_, item, name)
        else:
            out += _field(number, type_, value, name)
    return bytes(out)


def _mapping(value: Any, name: str, json_name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise EncodeError(f"{name}.{json_name}: expected an object")
    return value


def _field(number: int, type_: str, value: Any, name: str) -> bytes:
    """One field: key and value."""
    if type_ == "string":
        if not isinstance(value, str):
            raise EncodeError(f"{name}: field {number} wants a string: {value!r}")
        return length_delimited(number, value.encode())
    if type_ == "bool":
        return tag(number, VARINT) + varint(1 if value else 0)
    if type_ in ("int32", "int64"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise EncodeError(f"{name}: field {number} wants an integer: {value!r}")
        return tag(number, VARINT) + varint(value)
    if type_ == "double":
        return tag(number, protowire.I64) + protowire.double(float(value))
    if type_ == "bytes":
        try:
            return length_delimited(number, base64.b64decode(value, validate=True))
        except (binascii.Error, TypeError) as error:
            raise EncodeError(f"{name}: field {number}: {error}") from error
    special = _SPECIAL_ENCODERS.get(type_)
    if special is not None:
        return length_delimited(number, special(value))
    return length_delimited(number, encode_message(type_, value))


def _parse_time(value: Any) -> datetime.datetime:
    if not isinstance(value, str):
        raise EncodeError(f"not a time: {value!r}")
    # Python's parser takes at most microseconds; RFC 3339 allows any digits.
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError as error:
        raise EncodeError(f"not an RFC 3339 time: {value!r}") from error
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed


def _timestamp(value: Any, with_nanos: bool) -> bytes:
    delta = _parse_time(value) - _EPOCH
    seconds = delta.days * 86400 + delta.seconds
    out = tag(1, VARINT) + varint(seconds)
    if with_nanos and delta.microseconds:
        out += tag(2, VARINT) + varint(delta.microseconds * 1000)
    return out


def _encode_int_or_string(value: Any) -> bytes:
    if isinstance(value, str):
        return tag(1, VARINT) + varint(1) + length_delimited(3, value.encode())
    if isinstance(value, bool) or not isinstance(value, int):
        raise EncodeError(f"not an int or a string: {value!r}")
    return tag(1, VARINT) + varint(0) + tag(2, VARINT) + varint(value)


def _encode_quantity(value: Any) -> bytes:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise EncodeError(f"not a quantity: {value!r}")
    return length_delimited(1, str(value).encode())


def _encode_strings(value: Any) -> bytes:
    if not isinstance(value, list):
        raise EncodeError(f"not a list of strings: {value!r}")
    return b"".join(length_delimited(1, str(item).encode()) for item in value)


_SPECIAL_ENCODERS: dict[str, Callable[[Any], bytes]] = {
    "Time": lambda value: _timestamp(value, with_nanos=False),
    "MicroTime": lambda value: _timestamp(value, with_nanos=True),
    "Quantity": _encode_quantity,
    "IntOrString": _encode_int_or_string,
    "FieldsV1": lambda value: length_delimited(
        1, json.dumps(value, separators=(",", ":")).encode()
    ),
    "ExtraValue": _encode_strings,
}


def encode_watch_event(event: Mapping[str, Any]) -> bytes | None:
    """A ``WatchEvent`` (``1 type``, ``2 object {1 raw}``), framed; None as above."""
    raw = encode_object(event.get("object") or {})
    if raw is None:
        return None
    message = length_delimited(1, str(event.get("type", "")).encode())
    message += length_delimited(2, length_delimited(1, raw))
    return protowire.frame(message)


# Negotiation: the hook around the router.


def _media_ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    """The media ranges of an ``Accept`` header, but those with ``q=0``."""
    ranges = []
    for part in accept.split(","):
        media, *raw_params = (p.strip() for p in part.split(";"))
        params: dict[str, str] = {}
        for param in raw_params:
            key, _, value = param.partition("=")
            params[key.strip().lower()] = value.strip()
        try:
            if float(params.get("q", "1")) <= 0:
                continue
        except ValueError:
            continue
        if media:
            ranges.append((media.lower(), params))
    return ranges


def protobuf_only(accept: str) -> bool:
    """Whether ``Accept`` admits a plain protobuf answer and no JSON one."""
    ranges = _media_ranges(accept)
    admits_json = not ranges or any(
        media in ("application/json", "application/*", "*/*") for media, _ in ranges
    )
    admits_protobuf = any(
        media == PROTOBUF and "as" not in params for media, params in ranges
    )
    return admits_protobuf and not admits_json


def _resource_path(target: str) -> bool:
    """Whether a request target names resources (not discovery, not health)."""
    segments = target.split("?", 1)[0].strip("/").split("/")
    if segments[:2] == ["api", "v1"]:
        return len(segments) > 2
    return len(segments) > 3 and segments[0] == "apis"


def serve(
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    respond: Callable[[Mapping[str, str], bytes], Response],
) -> Response:
    """Answer a request through ``respond`` (the router) with protobuf on either side.

    A protobuf body of a POST, PUT or DELETE to a resource is handed on as
    the JSON it decodes to; the answer is encoded when ``Accept`` asks for
    protobuf only (:func:`protobuf_only`).
    """
    if not _resource_path(target):
        return respond(headers, body)
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == PROTOBUF and body and method.upper() in ("POST", "PUT", "DELETE"):
        try:
            obj = decode_object(body)
        except ApiError as error:
            reply = json_response(error.code, error.status())
        else:
            headers = {**headers, "content-type": "application/json"}
            reply = respond(headers, json.dumps(obj).encode())
    else:
        reply = respond(headers, body)
    if not protobuf_only(headers.get("accept", "")):
        return reply
    return encode_reply(reply)


def encode_reply(reply: Response) -> Response:
    """A JSON answer in protobuf; a 406 for an object the table cannot encode."""
    if reply.takeover is not None or not reply.content_type.startswith(
        "application/json"
    ):
        return reply
    if reply.stream is not None:
        return Response(
            reply.status,
            content_type=PROTOBUF_WATCH,
            stream=_watch_frames(reply.stream),
            headers=reply.headers,
        )
    try:
        obj = json.loads(reply.body)
    except ValueError:
        return reply
    try:
        encoded = encode_object(obj) if isinstance(obj, dict) else None
    except EncodeError as error:
        failure = ApiError(500, "InternalError", f"Internal error occurred: {error}")
        return json_response(500, failure.status())
    if encoded is None:
        accepted = ", ".join(TEXT_TYPES)
        message = f"only the following media types are accepted: {accepted}"
        refused = ApiError(406, "NotAcceptable", message)
        return json_response(406, refused.status())
    return Response(reply.status, encoded, PROTOBUF, headers=reply.headers)


def _watch_frames(lines: Iterator[bytes]) -> Iterator[bytes]:
    """A JSON watch stream (one event a line) as protobuf frames.

    An event whose object has no message, or does not fit it, ends the
    stream, as an encoding error ends a watch in the API server.
    """
    pending = b""
    try:
        for chunk in lines:
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                if not line.strip():
                    continue
                try:
                    framed = encode_watch_event(json.loads(line))
                except ValueError:  # EncodeError, or a line that is no JSON
                    framed = None
                if framed is None:
                    return
                yield framed
    finally:
        close = getattr(lines, "close", None)
        if close is not None:
            close()
