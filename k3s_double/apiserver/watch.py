"""Watches: a stream of ADDED/MODIFIED/DELETED events, one JSON line each.

A watch may start from a ``resourceVersion`` (the store replays what came
after it, or answers 410 Expired when that is too old), is filtered by the
same label and field selectors as a list (an object that stops matching is
DELETED for the watcher, one that starts is ADDED), and ends after
``timeoutSeconds`` (30 minutes unless asked) or when the API stops.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .database import Change
from .database import TooOld
from .errors import ApiError
from .errors import bad_request
from .kinds import Kind
from .kinds import Obj
from .response import Response


if TYPE_CHECKING:
    from .storage import Storage

WATCH_DEFAULT_TIMEOUT = 1800.0


def start_watch(
    api: Storage,
    kind: Kind,
    namespace: str | None,
    query: Mapping[str, str],
    render: Callable[[Obj], Obj] | None = None,
) -> Response:
    """Start a watch; ``render`` turns each event's object into a Table."""
    labels, fields = api.selectors(kind, query)
    try:
        timeout = float(query.get("timeoutSeconds") or WATCH_DEFAULT_TIMEOUT)
    except ValueError as error:
        raise bad_request(f"invalid timeoutSeconds: {error}") from error
    requested = query.get("resourceVersion", "")
    if requested not in ("", "0") and not requested.isdigit():
        raise bad_request(f'invalid resource version "{requested}"')
    since = int(requested) if requested not in ("", "0") else None
    try:
        watcher, replay = api.store.subscribe(kind, namespace, since)
    except TooOld:
        expired = ApiError(410, "Expired", f"too old resource version: {requested}")
        line = json.dumps({"type": "ERROR", "object": expired.status()}) + "\n"
        return Response(200, stream=iter([line.encode()]))

    def visible(obj: Obj | None) -> bool:
        if obj is None:
            return False
        if namespace is not None and obj["metadata"].get("namespace") != namespace:
            return False
        return api.matches(kind, obj, labels, fields)

    def event(change: Change) -> bytes | None:
        before, after = visible(change.old), visible(change.new)
        if change.type == "DELETED":
            kind_of = "DELETED" if before else None
        elif before and after:
            kind_of = "MODIFIED"
        elif after:
            kind_of = "ADDED"
        else:
            kind_of = "DELETED" if before else None
        if kind_of is None:
            return None
        shown = change.new
        if kind.custom and shown.get("apiVersion") != kind.api_version:
            # The versions of a custom resource share storage ("None" conversion).
            shown = {**shown, "apiVersion": kind.api_version}
        shown = render(shown) if render else shown
        return (json.dumps({"type": kind_of, "object": shown}) + "\n").encode()

    def stream() -> Iterator[bytes]:
        deadline = time.monotonic() + timeout
        try:
            for old in replay:
                line = event(old)
                if line is not None:
                    yield line
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    change = watcher.events.get(timeout=remaining)
                except queue.Empty:
                    return
                if change is None:
                    return
                line = event(change)
                if line is not None:
                    yield line
        finally:
            api.store.unsubscribe(watcher)

    return Response(200, stream=stream())
