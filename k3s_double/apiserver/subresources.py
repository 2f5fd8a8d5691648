"""The ``log`` and ``scale`` subresources.

``pods/<name>/log`` comes from the pod's kubelet when that kubelet runs the
pod as processes (:mod:`.kubelets`), else (no container of the pod runs)
with a few canned lines and an event that says so; ``<kind>/<name>/scale``
reads and writes an ``autoscaling/v1`` Scale: ``spec.replicas`` of
Deployments and ReplicaSets, or the paths a CustomResourceDefinition declares
for its custom resources (:mod:`.customresources`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from k3s_double.constants import GO_TRUE

from . import kubelets
from .bodies import decode_body
from .customresources import scale_of as custom_scale_of
from .customresources import set_replicas
from .errors import STALE
from .errors import ApiError
from .errors import bad_request
from .errors import conflict
from .errors import method_not_allowed
from .errors import unsupported_media
from .kinds import BY_KIND
from .kinds import Kind
from .kinds import Obj
from .kinds import now
from .patches import PatchError
from .response import Response
from .response import json_response


if TYPE_CHECKING:
    from .storage import Storage

#: The patch formats a Scale accepts (it is a built-in type: strategic too).
SCALE_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)


def pod_log(
    api: Storage,
    namespace: str,
    name: str,
    query: Mapping[str, str],
    client: kubelets.KubeletClient | None = None,
    raw_query: str = "",
) -> Response:
    """``GET pods/<name>/log``: from the pod's kubelet when it runs the pod."""
    pod = api.get(BY_KIND["Pod"], namespace, name)
    container = kubelets.pick_container(pod, query)
    if pod.get("status", {}).get("phase") not in ("Running", "Succeeded", "Failed"):
        raise bad_request(
            f'container "{container}" in pod "{name}" is waiting to start: '
            "ContainerCreating"
        )
    endpoint = kubelets.reachable(api, pod)
    if endpoint is not None:
        if client is None:
            raise kubelets.not_running(name, "pods/log")
        path = kubelets.kubelet_path("log", namespace, name, {"container": container})
        return kubelets.container_log(client, *endpoint, path, raw_query)
    image = next(
        c["image"] for c in pod["spec"]["containers"] if c["name"] == container
    )
    started = pod["status"].get("startTime", now())
    lines = [
        (started, f"Starting container {container} from image {image}"),
        (started, f"{container}: configuration loaded"),
        (started, f"{container}: ready"),
    ]
    _say_logs_are_canned(api, pod, container)
    tail = query.get("tailLines")
    if tail and tail.isdigit():
        lines = lines[len(lines) - int(tail) :] if int(tail) else []
    stamps = query.get("timestamps") in GO_TRUE
    text = "".join(
        (f"{stamp.replace('Z', '.000000000Z')} " if stamps else "") + line + "\n"
        for stamp, line in lines
    )
    return Response(200, text.encode(), "text/plain")


def _say_logs_are_canned(api: Storage, pod: Obj, container: str) -> None:
    """Record, once per container, a ``DoubleSimulated`` Event: logs are canned."""
    meta = pod["metadata"]
    message = (
        f"log lines are canned: container {container} never ran, the k3s "
        "double answers its log with made-up lines"
    )
    for event in api.objects("Event", meta["namespace"]):
        involved = event.get("involvedObject") or {}
        if involved.get("uid") == meta["uid"] and event.get("message") == message:
            return
    stamp = now()
    body: Obj = {
        "metadata": {
            "name": f"{meta['name']}.{time.time_ns():x}",
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "kind": "Pod",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
            "apiVersion": "v1",
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": "DoubleSimulated",
        "message": message,
        "source": {"component": "k3s-double"},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "type": "Normal",
        "reportingComponent": "k3s-double",
    }
    with contextlib.suppress(ApiError):
        api.create(BY_KIND["Event"], meta["namespace"], body)


def scale(
    api: Storage,
    method: str,
    kind: Kind,
    namespace: str,
    name: str,
    headers: Mapping[str, str],
    body: bytes,
) -> Response:
    """``GET``, ``PUT`` or ``PATCH`` on ``<kind>/<name>/scale``."""
    with api.store.lock:
        obj = api.get(kind, namespace, name)
        current = _scale_of(kind, obj)
        if method == "GET":
            return json_response(200, current)
        if method == "PUT":
            wanted = decode_body(body, headers)
        elif method == "PATCH":
            ctype = headers.get("content-type", "").split(";")[0].strip()
            if ctype not in SCALE_PATCH_TYPES:
                raise unsupported_media(ctype, SCALE_PATCH_TYPES)
            try:
                wanted = api.apply_patch(ctype, current, json.loads(body))
            except (ValueError, PatchError) as error:
                raise bad_request(str(error)) from error
        else:
            raise method_not_allowed()
        rv = (wanted.get("metadata") or {}).get("resourceVersion")
        if rv and rv != obj["metadata"]["resourceVersion"]:
            raise conflict(kind, name, STALE)
        replicas = (wanted.get("spec") or {}).get("replicas", 0)
        if kind.custom:
            set_replicas(kind, obj, replicas)
        else:
            obj["spec"]["replicas"] = replicas
        updated = api.update(kind, namespace, name, obj)
        return json_response(200, _scale_of(kind, updated))


def _scale_of(kind: Kind, obj: Obj) -> Obj:
    if kind.custom:
        return custom_scale_of(kind, obj)
    meta = obj["metadata"]
    selector = (obj["spec"].get("selector") or {}).get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            key: meta[key]
            for key in (
                "name",
                "namespace",
                "uid",
                "resourceVersion",
                "creationTimestamp",
            )
        },
        "spec": {"replicas": obj["spec"].get("replicas", 0)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in selector.items()),
        },
    }
