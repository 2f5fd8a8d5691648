"""How storage treats custom resources, where they differ from built-in kinds.

The apiextensions-apiserver's strategy for a custom resource
(``pkg/registry/customresource/strategy.go``), as :class:`~.storage.Storage`
calls it:

- create: with a status subresource, a create cannot set ``status``;
  ``metadata.generation`` starts at 1;
- every write: the body is pruned, defaulted and validated against the
  version's schema (:mod:`.schemas`); with ``fieldValidation=Strict`` a
  pruned field is a 400 ``strict decoding error: unknown field "spec.x"``;
- update: with a status subresource the main endpoint keeps the old status
  and ``/status`` keeps everything but the status; the generation grows when
  anything outside ``metadata`` (and ``status``, with the subresource)
  changes;
- the ``scale`` subresource reads and writes the CRD's
  ``specReplicasPath``, ``statusReplicasPath`` and ``labelSelectorPath``.
"""

from __future__ import annotations

import copy
from typing import Any

from .crds import json_path
from .errors import bad_request
from .kinds import Kind
from .kinds import Obj
from .schemas import default
from .schemas import prune
from .schemas import validate
from .validation import Cause


def prepare_create(kind: Kind, obj: Obj) -> None:
    """Drop what a create may not set."""
    if kind.has_status:
        obj.pop("status", None)


def prepare_update(kind: Kind, old: Obj, body: Obj, sub: str | None) -> Obj:
    """The object an update stores, before schema handling."""
    if sub == "status":
        new = copy.deepcopy(old)
        if "status" in body:
            new["status"] = copy.deepcopy(body["status"])
        else:
            new.pop("status", None)
        return new
    new = copy.deepcopy(body)
    new.setdefault("metadata", {})
    if sub is None and kind.has_status:
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        else:
            new.pop("status", None)
    return new


def schema_causes(kind: Kind, obj: Obj, field_validation: str) -> list[Cause]:
    """Prune and default ``obj`` in place, then validate it against the schema."""
    schema = kind.schema or {}
    dropped = prune(obj, schema)
    if dropped and field_validation == "Strict":
        unknown = ", ".join(f'unknown field "{path}"' for path in dropped)
        raise bad_request(f"strict decoding error: {unknown}")
    default(obj, schema)
    return list(validate(obj, schema))


def generation_changed(kind: Kind, old: Obj, new: Obj) -> bool:
    """Tell whether an update moves ``metadata.generation`` on."""
    skipped = {"metadata", "apiVersion", "kind"}
    if kind.has_status:
        skipped.add("status")

    def relevant(obj: Obj) -> Obj:
        return {k: v for k, v in obj.items() if k not in skipped}

    return relevant(old) != relevant(new)


def scale_of(kind: Kind, obj: Obj) -> Obj:
    """The ``autoscaling/v1`` Scale of a custom resource."""
    assert kind.scale_paths is not None
    spec_path, status_path, selector_path = kind.scale_paths
    meta = obj["metadata"]
    status: Obj = {"replicas": json_path(obj, status_path) or 0}
    if selector_path:
        selector = json_path(obj, selector_path)
        if selector:
            status["selector"] = selector
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            key: meta[key]
            for key in ("name", "namespace", "uid", "resourceVersion")
            if key in meta
        }
        | {"creationTimestamp": meta.get("creationTimestamp")},
        "spec": {"replicas": json_path(obj, spec_path) or 0},
        "status": status,
    }


def set_replicas(kind: Kind, obj: Obj, replicas: Any) -> None:
    """Write the wanted replicas at the CRD's ``specReplicasPath``."""
    assert kind.scale_paths is not None
    parts = [p for p in kind.scale_paths[0].split(".") if p]
    node = obj
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = replicas
