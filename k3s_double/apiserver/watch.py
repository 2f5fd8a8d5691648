"""Watches: a stream of ADDED/MODIFIED/DELETED/BOOKMARK events, one JSON line each.

A watch is filtered by the same label and field selectors as a list (an
object that stops matching is DELETED for the watcher, one that starts is
ADDED) and ends after ``timeoutSeconds`` (30 minutes unless asked) or when
the API stops. Its options pass :func:`~.listoptions.validate` first. Where
it starts is the watch cache's choice (``staging/src/k8s.io/apiserver/pkg/
storage/cacher``: ``cacher.go`` ``Watch``, ``watch_cache.go``
``getAllEventsSinceLocked``, ``cache_watcher.go`` ``processInterval``):

- ``sendInitialEvents`` unset (the legacy watch): without a
  ``resourceVersion`` (or with ``0``) one synthetic ADDED per current
  object, then what happens next; with one, the kept history after it
  (410 Expired when that is too old);
- ``sendInitialEvents=true`` (client-go's watch-list, with
  ``resourceVersionMatch=NotOlderThan``): the current objects as ADDED,
  whatever the ``resourceVersion`` (it is a lower bound: a version the
  store has not reached yet is waited for up to 3 s, then an ERROR event
  ``Timeout: Too large resource version``), then, with
  ``allowWatchBookmarks``, one BOOKMARK at the store's resourceVersion
  annotated ``k8s.io/initial-events-end: "true"``, then what happens next;
- ``sendInitialEvents=false``: no initial objects, from the given
  ``resourceVersion`` (its history) or, without one or with ``0``, from now.

With ``allowWatchBookmarks`` a watch also gets a plain BOOKMARK about every
minute and 2 s before its timeout, as the cacher sends them, when nothing
else is pending. A bookmark's object is empty but for ``kind``,
``apiVersion``, ``metadata.resourceVersion`` and, for the initial-events-end
one, the annotation: kube-apiserver's is an empty object of the kind
(``newFunc()``), whose other fields clients ignore.
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
from .database import Watcher
from .errors import ApiError
from .errors import bad_request
from .kinds import Kind
from .kinds import Obj
from .listoptions import ListOptions
from .listoptions import validate
from .response import Response


if TYPE_CHECKING:
    from .storage import Storage

WATCH_DEFAULT_TIMEOUT = 1800.0
#: The annotation of the BOOKMARK that ends a watch-list's initial events.
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
#: How often the cacher sends a watcher bookmarks (``bookmarkFrequency``).
BOOKMARK_EVERY = 60.0
#: The cacher's last bookmark comes this long before the watch's deadline.
BOOKMARK_BEFORE_DEADLINE = 2.0
#: How long a watch-list waits for a resourceVersion the store has not
#: reached (the watch cache's ``blockTimeout``).
FRESH_TIMEOUT = 3.0


def bookmark(kind: Kind, rv: str, *, initial_events_end: bool = False) -> Obj:
    """The object of a BOOKMARK event at resourceVersion ``rv``."""
    metadata: Obj = {"resourceVersion": rv}
    if initial_events_end:
        metadata["annotations"] = {INITIAL_EVENTS_END: "true"}
    return {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": metadata}


def too_large(wanted: int, current: str) -> ApiError:
    """``storage.NewTooLargeResourceVersionError``: 504 Timeout, retry after 1 s."""
    return ApiError(
        504,
        "Timeout",
        f"Timeout: Too large resource version: {wanted}, current: {current}",
        {
            "causes": [
                {
                    "reason": "ResourceVersionTooLarge",
                    "message": "Too large resource version",
                }
            ],
            "retryAfterSeconds": 1,
        },
    )


def _error_stream(error: ApiError) -> Response:
    """A watch that is one ERROR event: how the cacher fails once it started."""
    line = json.dumps({"type": "ERROR", "object": error.status()}) + "\n"
    return Response(200, stream=iter([line.encode()]))


def _wait_fresh(api: Storage, wanted: int) -> bool:
    """Wait until the store has reached resourceVersion ``wanted`` (3 s at most)."""
    deadline = time.monotonic() + FRESH_TIMEOUT
    while int(api.store.resource_version) < wanted:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def start_watch(
    api: Storage,
    kind: Kind,
    namespace: str | None,
    query: Mapping[str, str],
    render: Callable[[Obj], Obj] | None = None,
    *,
    watch_list: bool = True,
) -> Response:
    """Start a watch; ``render`` turns each event's object into a Table.

    ``watch_list`` is whether the claimed release serves ``sendInitialEvents``
    (:func:`k3s_double.releases.serves_watch_list`).
    """
    options = ListOptions.parse(query)
    validate(options, watch_list=watch_list)
    labels, fields = api.selectors(kind, query)
    try:
        timeout = float(query.get("timeoutSeconds") or WATCH_DEFAULT_TIMEOUT)
    except ValueError as error:
        raise bad_request(f"invalid timeoutSeconds: {error}") from error
    requested = options.resource_version
    if requested not in ("", "0") and not requested.isdigit():
        raise bad_request(f'invalid resource version "{requested}"')
    since = int(requested) if requested not in ("", "0") else None
    initial = options.send_initial_events
    if initial and since is not None and not _wait_fresh(api, since):
        return _error_stream(too_large(since, api.store.resource_version))
    try:
        with api.store.lock:
            if initial is False and since is None:
                since = int(api.store.resource_version)
            watcher, replay = api.store.subscribe(
                kind, namespace, None if initial else since
            )
            snapshot_rv = api.store.resource_version
    except TooOld:
        expired = ApiError(410, "Expired", f"too old resource version: {requested}")
        return _error_stream(expired)

    def visible(obj: Obj | None) -> bool:
        if obj is None:
            return False
        if namespace is not None and obj["metadata"].get("namespace") != namespace:
            return False
        return api.matches(kind, obj, labels, fields)

    def line(kind_of: str, obj: Obj) -> bytes:
        shown = render(obj) if render else obj
        return (json.dumps({"type": kind_of, "object": shown}) + "\n").encode()

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
        return line(kind_of, shown)

    bookmarks = options.allow_watch_bookmarks
    end_bookmark = bool(initial) and bookmarks

    def stream() -> Iterator[bytes]:
        deadline = time.monotonic() + timeout
        try:
            for old in replay:
                sent = event(old)
                if sent is not None:
                    yield sent
            if end_bookmark:
                marker = bookmark(kind, snapshot_rv, initial_events_end=True)
                yield line("BOOKMARK", marker)
            yield from _follow(
                watcher, deadline, event, periodic if bookmarks else None
            )
        finally:
            api.store.unsubscribe(watcher)

    def periodic() -> bytes | None:
        rv = _quiet_resource_version(api, watcher)
        return None if rv is None else line("BOOKMARK", bookmark(kind, rv))

    return Response(200, stream=stream())


def _quiet_resource_version(api: Storage, watcher: Watcher) -> str | None:
    """The store's resourceVersion if the watcher has every change up to it.

    Writes publish under the store lock, so with the lock held an empty queue
    means this watcher has taken (and sent) every event up to that version:
    a bookmark there never runs ahead of an event still to come.
    """
    with api.store.lock:
        if not watcher.events.empty():
            return None
        return api.store.resource_version


def _next_bookmark(now: float, deadline: float) -> float | None:
    """When the next periodic bookmark is due, or None when none is left."""
    due = min(now + BOOKMARK_EVERY, deadline - BOOKMARK_BEFORE_DEADLINE)
    return due if due > now else None


def _follow(
    watcher: Watcher,
    deadline: float,
    event: Callable[[Change], bytes | None],
    periodic: Callable[[], bytes | None] | None,
) -> Iterator[bytes]:
    """Send the watcher's changes until the deadline, with periodic bookmarks."""
    now = time.monotonic()
    due = _next_bookmark(now, deadline) if periodic else None
    while (remaining := deadline - now) > 0:
        wait = remaining if due is None else max(0.0, min(remaining, due - now))
        try:
            change = watcher.events.get(timeout=wait)
        except queue.Empty:
            now = time.monotonic()
            if periodic is not None and due is not None and now >= due:
                marker = periodic()
                if marker is not None:
                    yield marker
                    due = _next_bookmark(now, deadline)
            continue
        if change is None:
            return
        sent = event(change)
        if sent is not None:
            yield sent
        now = time.monotonic()
