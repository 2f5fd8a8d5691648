"""Structural schemas: pruning, defaulting and validation of custom resources.

A custom resource goes through its version's ``openAPIV3Schema`` the way the
apiextensions-apiserver takes it on every write:

1. :func:`prune` drops fields the schema does not declare, unless a node
   says ``x-kubernetes-preserve-unknown-fields: true`` (``apiVersion``,
   ``kind`` and ``metadata`` are never pruned at the root);
2. :func:`default` fills ``default:`` values of absent (or null and not
   nullable) fields, after pruning, so defaults are themselves pruned;
3. :func:`validate` checks types, ``required``, ``enum``, bounds, lengths,
   ``pattern`` and item counts, each failure a cause in the API server's
   words (``spec.size: Required value``,
   ``spec.size: Invalid value: "string": spec.size in body must be of type
   integer: "string"``).

:func:`structural_causes` checks a CRD's schema is structural (every node has
a ``type`` unless it preserves unknown fields or is int-or-string).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any


Schema = dict[str, Any]
Cause = tuple[str, str]

_ROOT_KEPT = ("apiVersion", "kind", "metadata")
_GO_TYPES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def prune(value: Any, schema: Schema, path: str = "") -> list[str]:
    """Drop undeclared fields from ``value`` in place; return their paths."""
    dropped: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        for key in list(value):
            if not path and key in _ROOT_KEPT:
                continue
            where = _join(path, key)
            if key in properties:
                dropped += prune(value[key], properties[key], where)
            elif isinstance(extra, dict):
                dropped += prune(value[key], extra, where)
            elif not preserve and extra is not True:
                del value[key]
                dropped.append(where)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            dropped += prune(item, schema["items"], f"{path}[{index}]")
    return dropped


def default(value: Any, schema: Schema) -> None:
    """Fill schema defaults into ``value`` in place, outermost first."""
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key, sub in properties.items():
            absent = key not in value or (
                value[key] is None and not sub.get("nullable")
            )
            if absent and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                default(value[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                if key not in properties:
                    default(value[key], extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            default(item, schema["items"])


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return _GO_TYPES.get(type(value), "object")


def _quote(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value)


def _type_ok(value: Any, wanted: str, schema: Schema) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    if wanted == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if wanted == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if wanted == "boolean":
        return isinstance(value, bool)
    return _GO_TYPES.get(type(value)) == wanted


def validate(value: Any, schema: Schema, path: str = "") -> Iterator[Cause]:
    """Yield a cause for every way ``value`` breaks ``schema``."""
    where = path or "<root>"
    wanted = schema.get("type")
    if value is None:
        if not schema.get("nullable") and wanted:
            yield (
                where,
                f'Invalid value: "null": {where} in body must be of type '
                f'{wanted}: "null"',
            )
        return
    if wanted and not _type_ok(value, wanted, schema):
        got = _type_name(value)
        yield (
            where,
            f'Invalid value: "{got}": {where} in body must be of type '
            f'{wanted}: "{got}"',
        )
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(_quote(v) for v in schema["enum"])
        yield where, f"Unsupported value: {_quote(value)}: supported values: {allowed}"
    yield from _bounds(value, schema, where)
    if isinstance(value, dict):
        for key in schema.get("required") or []:
            if key not in value:
                yield _join(path, key), "Required value"
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if not path and key in _ROOT_KEPT:
                continue
            if key in properties:
                yield from validate(item, properties[key], _join(path, key))
            elif isinstance(extra, dict):
                yield from validate(item, extra, _join(path, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from validate(item, schema["items"], f"{path}[{index}]")


def _bounds(value: Any, schema: Schema, where: str) -> Iterator[Cause]:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and "minimum" in schema:
        low = schema["minimum"]
        exclusive = schema.get("exclusiveMinimum") is True
        if value < low or (exclusive and value == low):
            than = "greater than" if exclusive else "greater than or equal to"
            yield (
                where,
                f"Invalid value: {value}: {where} in body should be {than} {low}",
            )
    if number and "maximum" in schema:
        high = schema["maximum"]
        exclusive = schema.get("exclusiveMaximum") is True
        if value > high or (exclusive and value == high):
            than = "less than" if exclusive else "less than or equal to"
            yield (
                where,
                f"Invalid value: {value}: {where} in body should be {than} {high}",
            )
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            yield (
                where,
                (
                    f"Invalid value: {_quote(value)}: {where} in body should be at "
                    f"least {schema['minLength']} chars long"
                ),
            )
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            yield where, f"Too long: may not be more than {schema['maxLength']} bytes"
        if "pattern" in schema and not re.search(schema["pattern"], value):
            yield (
                where,
                (
                    f"Invalid value: {_quote(value)}: {where} in body should match "
                    f"'{schema['pattern']}'"
                ),
            )
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            yield (
                where,
                (
                    f"Invalid value: {len(value)}: {where} in body should have at "
                    f"least {schema['minItems']} items"
                ),
            )
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            yield (
                where,
                f"Too many: {len(value)}: must have at most {schema['maxItems']} items",
            )


def structural_causes(schema: Any, path: str) -> Iterator[Cause]:
    """Yield why a CRD version's schema is not structural (v1 requires it)."""
    if not isinstance(schema, dict):
        yield path, "Required value: schemas are required"
        return
    if schema.get("type") != "object":
        yield (
            f"{path}.type",
            (
                'Unsupported value: "{}": supported values: "object"'.format(
                    schema.get("type", "")
                )
                if schema.get("type")
                else "Required value: must not be empty at the root"
            ),
        )
    yield from _node_causes(schema, path)


def _node_causes(schema: Schema, path: str) -> Iterator[Cause]:
    for key, sub in (schema.get("properties") or {}).items():
        where = f"{path}.properties[{key}]"
        if not isinstance(sub, dict):
            continue
        lenient = sub.get("x-kubernetes-preserve-unknown-fields") or sub.get(
            "x-kubernetes-int-or-string"
        )
        if not sub.get("type") and not lenient:
            yield (
                f"{where}.type",
                "Required value: must not be empty for specified object fields",
            )
        yield from _node_causes(sub, where)
    items = schema.get("items")
    if isinstance(items, dict):
        lenient = items.get("x-kubernetes-preserve-unknown-fields") or items.get(
            "x-kubernetes-int-or-string"
        )
        if not items.get("type") and not lenient:
            yield (
                f"{path}.items.type",
                "Required value: must not be empty for specified array items",
            )
        yield from _node_causes(items, f"{path}.items")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _node_causes(extra, f"{path}.additionalProperties")
