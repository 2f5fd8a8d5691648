"""The three patch formats of the Kubernetes API.

- JSON merge patch (RFC 7386): maps merge, ``null`` deletes, lists replace.
- Strategic merge patch: like a merge patch, but lists that Kubernetes
  declares with a merge key (containers by ``name``, volumeMounts by
  ``mountPath``, ...) merge item by item, and the directives ``$patch``,
  ``$setElementOrder/<list>``, ``$deleteFromPrimitiveList/<list>`` and
  ``$retainKeys`` are understood.
- JSON patch (RFC 6902): add, remove, replace, move, copy, test.
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    """A patch that cannot be applied; the API answers 422 (or 400)."""


_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "conditions": "type",
    "addresses": "type",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "secrets": "name",
    "resourceClaims": "name",
    "topologySpreadConstraints": "topologyKey",
    "readinessGates": "conditionType",
}
# Lists of scalars that merge as sets instead of being replaced.
_SET_LISTS = ("finalizers",)


def _merge_key(path: tuple[str, ...]) -> str | None:
    field = path[-1] if path else ""
    if field == "ports":
        in_container = any(p in _CONTAINER_LISTS for p in path[:-1])
        return "containerPort" if in_container else "port"
    return _MERGE_KEYS.get(field)


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch and return the result."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    """Apply a strategic merge patch, using Kubernetes' merge keys by field."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, (*path, key))
        else:
            result[key] = strategic_merge_patch(result.get(key), value, (*path, key))
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _reorder(result[field], order, _merge_key((*path, field)))
    if "$retainKeys" in patch:
        keep = set(patch["$retainKeys"])
        result = {k: v for k, v in result.items() if k in keep}
    return result


def _merge_list(current: Any, patch: list[Any], path: tuple[str, ...]) -> list[Any]:
    key = _merge_key(path)
    items = list(current) if isinstance(current, list) else []
    if path[-1] in _SET_LISTS:
        return items + [v for v in patch if v not in items]
    if key is None or not all(isinstance(p, dict) for p in patch):
        return copy.deepcopy(patch)
    if any(p.get("$patch") == "replace" for p in patch):
        return [copy.deepcopy(p) for p in patch if p.get("$patch") != "replace"]
    for item in patch:
        if key not in item:
            raise PatchError(f"map: {item} does not contain declared merge key: {key}")
        index = next(
            (
                i
                for i, old in enumerate(items)
                if isinstance(old, dict) and old.get(key) == item[key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del items[index]
        elif index is None:
            added = strategic_merge_patch({}, item, path)
            items.append(added)
        else:
            items[index] = strategic_merge_patch(items[index], item, path)
    return items


def _reorder(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    def ident(item: Any) -> Any:
        return item.get(key) if key and isinstance(item, dict) else item

    wanted = [ident(o) for o in order]
    ranked = [i for w in wanted for i in items if ident(i) == w]
    return ranked + [i for i in items if ident(i) not in wanted]


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _walk(doc: Any, pointer: str) -> tuple[Any, str]:
    """Return the container holding the pointer's target, and the last token."""
    if not pointer.startswith("/"):
        raise PatchError(f"invalid JSON pointer {pointer!r}")
    tokens = [_unescape(t) for t in pointer[1:].split("/")]
    node = doc
    for token in tokens[:-1]:
        node = _child(node, token, pointer)
    return node, tokens[-1]


def _child(node: Any, token: str, pointer: str) -> Any:
    if isinstance(node, dict) and token in node:
        return node[token]
    if isinstance(node, list) and token.isdigit() and int(token) < len(node):
        return node[int(token)]
    raise PatchError(f"doc is missing path: {pointer!r}")


def _get(doc: Any, pointer: str) -> Any:
    if pointer == "":
        return doc
    parent, last = _walk(doc, pointer)
    return _child(parent, last, pointer)


def _remove(doc: Any, pointer: str) -> Any:
    parent, last = _walk(doc, pointer)
    value = _child(parent, last, pointer)
    if isinstance(parent, dict):
        del parent[last]
    else:
        del parent[int(last)]
    return value


def _add(doc: Any, pointer: str, value: Any) -> Any:
    if pointer == "":
        return value
    parent, last = _walk(doc, pointer)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise PatchError(
                f"add operation does not apply: doc is missing path: {pointer!r}"
            )
    else:
        raise PatchError(f"doc is missing path: {pointer!r}")
    return doc


def json_patch(doc: Any, operations: Any) -> Any:
    """Apply an RFC 6902 JSON patch to a copy of ``doc`` and return it."""
    if not isinstance(operations, list):
        raise PatchError(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
        )
    result = copy.deepcopy(doc)
    for operation in operations:
        if not isinstance(operation, dict) or "path" not in operation:
            raise PatchError(f"invalid JSON patch operation: {operation!r}")
        op, pointer = operation.get("op"), str(operation["path"])
        if op == "add":
            result = _add(result, pointer, copy.deepcopy(operation.get("value")))
        elif op == "remove":
            _remove(result, pointer)
        elif op == "replace":
            _get(result, pointer)
            if pointer == "":
                result = copy.deepcopy(operation.get("value"))
            else:
                parent, last = _walk(result, pointer)
                index: Any = last if isinstance(parent, dict) else int(last)
                parent[index] = copy.deepcopy(operation.get("value"))
        elif op in ("move", "copy"):
            source = str(operation.get("from", ""))
            value = _remove(result, source) if op == "move" else _get(result, source)
            result = _add(result, pointer, copy.deepcopy(value))
        elif op == "test":
            if _get(result, pointer) != operation.get("value"):
                raise PatchError(f"testing value {pointer} failed: test failed")
        else:
            raise PatchError(f"Unexpected kind: {op}")
    return result
