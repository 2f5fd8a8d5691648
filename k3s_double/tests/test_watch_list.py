"""Watch-list (``sendInitialEvents``) and list options, as kube-apiserver serves them.

Raw HTTP against the in-process API, and the official client's watch, which
asks for ``sendInitialEvents`` like client-go's reflector does.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode
from urllib.parse import urlsplit

import pytest
from kubernetes import client as k8s
from kubernetes import watch

from k3s_double import releases
from k3s_double.apiserver import watch as watches
from k3s_double.apiserver.server import KubeAPI


WATCH_LIST = {
    "watch": "true",
    "sendInitialEvents": "true",
    "resourceVersionMatch": "NotOlderThan",
    "allowWatchBookmarks": "true",
}
NS = "wl"


def _stream(url: str, path: str, query: dict[str, str]) -> Iterator[dict[str, Any]]:
    """The events of a watch, once it started, until the caller stops reading."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    conn.request("GET", f"{path}?{urlencode(query)}")
    # The answer's head comes once the API subscribed: later writes are seen.
    response = conn.getresponse()
    assert response.status == 200, response.read()

    def events() -> Iterator[dict[str, Any]]:
        try:
            while line := response.readline():
                yield json.loads(line)
        finally:
            conn.close()

    return events()


def _get(url: str, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("GET", f"{path}?{urlencode(query)}")
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _configmap(core: Any, name: str, **labels: str) -> Any:
    body = {"metadata": {"name": name, "labels": labels}, "data": {"k": name}}
    return core.create_namespaced_config_map(NS, body)


@pytest.fixture
def namespace(core: Any) -> str:
    core.create_namespace({"metadata": {"name": NS}})
    return NS


def test_watch_list_sends_objects_then_the_end_bookmark_then_changes(
    url: str, core: Any, namespace: str
) -> None:
    _configmap(core, "a", app="x")
    _configmap(core, "b", app="x")
    _configmap(core, "other", app="y")
    listed_rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    query = {**WATCH_LIST, "labelSelector": "app=x"}
    events = _stream(url, f"/api/v1/namespaces/{namespace}/configmaps", query)
    first, second, end = next(events), next(events), next(events)
    assert [first["type"], second["type"]] == ["ADDED", "ADDED"]
    assert {
        first["object"]["metadata"]["name"],
        second["object"]["metadata"]["name"],
    } == {
        "a",
        "b",
    }
    assert end == {
        "type": "BOOKMARK",
        "object": {
            "kind": "ConfigMap",
            "apiVersion": "v1",
            "metadata": {
                "resourceVersion": listed_rv,
                "annotations": {"k8s.io/initial-events-end": "true"},
            },
        },
    }
    created = _configmap(core, "c", app="x")
    _configmap(core, "not-selected", app="y")
    live = next(events)
    assert live["type"] == "ADDED"
    assert live["object"]["metadata"]["name"] == "c"
    assert live["object"]["metadata"]["resourceVersion"] == (
        created.metadata.resource_version
    )
    assert int(live["object"]["metadata"]["resourceVersion"]) > int(listed_rv)


def test_without_bookmarks_the_initial_events_have_no_end_marker(
    url: str, core: Any, namespace: str
) -> None:
    _configmap(core, "a")
    query = {k: v for k, v in WATCH_LIST.items() if k != "allowWatchBookmarks"}
    events = _stream(url, f"/api/v1/namespaces/{namespace}/configmaps", query)
    assert next(events)["object"]["metadata"]["name"] == "a"
    _configmap(core, "b")
    following = next(events)
    assert (following["type"], following["object"]["metadata"]["name"]) == (
        "ADDED",
        "b",
    )


def test_send_initial_events_false_starts_from_now(
    url: str, core: Any, namespace: str
) -> None:
    _configmap(core, "before")
    query = {**WATCH_LIST, "sendInitialEvents": "false"}
    events = _stream(url, f"/api/v1/namespaces/{namespace}/configmaps", query)
    _configmap(core, "after")
    first = next(events)
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "after")


def test_a_resource_version_not_reached_is_a_timeout_event(
    url: str, core: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watches, "FRESH_TIMEOUT", 0.3)
    current = int(core.list_namespaced_config_map(namespace).metadata.resource_version)
    query = {**WATCH_LIST, "resourceVersion": str(current + 1000)}
    (event,) = list(_stream(url, f"/api/v1/namespaces/{namespace}/configmaps", query))
    assert event["type"] == "ERROR"
    status = event["object"]
    assert (status["code"], status["reason"]) == (504, "Timeout")
    assert status["message"] == (
        f"Timeout: Too large resource version: {current + 1000}, current: {current}"
    )
    assert status["details"]["causes"] == [
        {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
    ]


def test_an_old_resource_version_still_gets_the_current_objects(
    url: str, core: Any, namespace: str
) -> None:
    """NotOlderThan is a lower bound: an old version is no 410 for a watch-list."""
    _configmap(core, "a")
    query = {**WATCH_LIST, "resourceVersion": "1"}
    events = _stream(url, f"/api/v1/namespaces/{namespace}/configmaps", query)
    assert next(events)["object"]["metadata"]["name"] == "a"
    assert next(events)["type"] == "BOOKMARK"


def test_watching_one_object_by_name(url: str, core: Any, namespace: str) -> None:
    _configmap(core, "a")
    _configmap(core, "b")
    events = _stream(url, f"/api/v1/namespaces/{namespace}/configmaps/b", WATCH_LIST)
    assert next(events)["object"]["metadata"]["name"] == "b"
    assert next(events)["type"] == "BOOKMARK"


def test_periodic_bookmarks_carry_the_current_version_without_the_annotation(
    url: str, core: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watches, "BOOKMARK_EVERY", 0.2)
    _configmap(core, "a")
    query = {"watch": "1", "allowWatchBookmarks": "true"}
    events = _stream(url, f"/api/v1/namespaces/{namespace}/configmaps", query)
    assert next(events)["type"] == "ADDED"
    _configmap(core, "b")
    assert next(events)["object"]["metadata"]["name"] == "b"
    mark = next(events)
    current = core.list_namespaced_config_map(namespace).metadata.resource_version
    assert mark["type"] == "BOOKMARK"
    assert mark["object"]["metadata"] == {"resourceVersion": current}


def test_a_watch_without_bookmarks_gets_none(
    url: str, core: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watches, "BOOKMARK_EVERY", 0.1)
    query = {"watch": "1", "timeoutSeconds": "1"}
    started = time.monotonic()
    events = list(_stream(url, f"/api/v1/namespaces/{namespace}/configmaps", query))
    assert events == []
    assert time.monotonic() - started >= 0.9


def test_the_official_client_reads_the_watch_list(core: Any, namespace: str) -> None:
    _configmap(core, "a")
    seen = []
    stream = watch.Watch().stream(
        core.list_namespaced_config_map,
        namespace,
        send_initial_events=True,
        resource_version_match="NotOlderThan",
        allow_watch_bookmarks=True,
        timeout_seconds=5,
    )
    for event in stream:
        seen.append(event["type"])
        if event["type"] == "BOOKMARK":
            annotations = event["raw_object"]["metadata"]["annotations"]
            assert annotations == {"k8s.io/initial-events-end": "true"}
            break
    assert seen == ["ADDED", "BOOKMARK"]


def test_a_table_watch_list_keeps_the_bookmarks_annotation(
    url: str, core: Any, namespace: str
) -> None:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    _configmap(core, "a")
    query = {**WATCH_LIST, "includeObject": "None"}
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io"
    conn.request(
        "GET",
        f"/api/v1/namespaces/{namespace}/configmaps?{urlencode(query)}",
        headers={"Accept": accept},
    )
    response = conn.getresponse()
    added, end = json.loads(response.readline()), json.loads(response.readline())
    conn.close()
    assert added["object"]["rows"][0]["object"] is None
    assert end["type"] == "BOOKMARK"
    row = end["object"]["rows"][0]
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["annotations"] == {
        "k8s.io/initial-events-end": "true"
    }


INVALID = [
    (
        "list",
        {"sendInitialEvents": "true"},
        ["sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list"],
    ),
    (
        "watch",
        {"watch": "true", "sendInitialEvents": "true"},
        [
            "resourceVersionMatch: Forbidden: sendInitialEvents requires setting "
            "resourceVersionMatch to NotOlderThan"
        ],
    ),
    (
        "watch",
        {"watch": "true", "resourceVersionMatch": "NotOlderThan"},
        [
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for "
            "watch unless sendInitialEvents is provided"
        ],
    ),
    (
        "watch",
        {"watch": "1", "sendInitialEvents": "", "resourceVersionMatch": "Exact"},
        [
            "resourceVersionMatch: Forbidden: sendInitialEvents requires setting "
            "resourceVersionMatch to NotOlderThan",
            'resourceVersionMatch: Unsupported value: "Exact": supported values: '
            '"NotOlderThan"',
        ],
    ),
    (
        "list",
        {"resourceVersionMatch": "NotOlderThan"},
        [
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden "
            "unless resourceVersion is provided"
        ],
    ),
    (
        "list",
        {"resourceVersion": "5", "resourceVersionMatch": "Newest"},
        [
            'resourceVersionMatch: Unsupported value: "Newest": supported values: '
            '"Exact", "NotOlderThan", ""'
        ],
    ),
    (
        "list",
        {"resourceVersion": "0", "resourceVersionMatch": "Exact"},
        [
            'resourceVersionMatch: Forbidden: resourceVersionMatch "exact" is '
            'forbidden for resourceVersion "0"'
        ],
    ),
]


@pytest.mark.parametrize(
    ("verb", "query", "messages"), INVALID, ids=[str(q) for _, q, _ in INVALID]
)
def test_invalid_option_combinations_are_refused_as_the_api_server_does(
    url: str, verb: str, query: dict[str, str], messages: list[str]
) -> None:
    status, body = _get(url, "/api/v1/namespaces/default/configmaps", query)
    assert status == 422
    joined = messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"
    assert body["message"] == f'ListOptions.meta.k8s.io "" is invalid: {joined}'
    assert body["reason"] == "Invalid"
    assert body["details"]["group"] == "meta.k8s.io"
    assert body["details"]["kind"] == "ListOptions"
    assert "name" not in body["details"]
    assert [f"{c['field']}: {c['message']}" for c in body["details"]["causes"]] == (
        messages
    )


def test_a_deprecated_watch_path_is_validated_as_a_list(url: str) -> None:
    """kube-apiserver forces the watch after validating ``watch`` (unset here)."""
    query = {"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan"}
    status, body = _get(url, "/api/v1/watch/namespaces/default/configmaps", query)
    assert status == 422
    assert [cause["message"] for cause in body["details"]["causes"]] == [
        "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is "
        "provided",
        "Forbidden: sendInitialEvents is forbidden for list",
    ]


def test_valid_list_options_still_list(client: k8s.ApiClient, url: str) -> None:
    query = {"resourceVersion": "0", "resourceVersionMatch": "NotOlderThan"}
    status, body = _get(url, "/api/v1/namespaces/default/configmaps", query)
    assert status == 200
    assert body["kind"] == "ConfigMapList"


@pytest.mark.parametrize(
    ("version", "served"),
    [
        ("v1.27.16+k3s1", False),
        ("v1.31.9+k3s1", False),
        ("v1.32.5+k3s1", True),
        ("v1.33.4+k3s1", False),
        ("v1.34.1+k3s1", True),
        ("v1.35.5+k3s1", True),
    ],
)
def test_the_watch_list_gate_follows_the_release(version: str, served: bool) -> None:
    assert releases.serves_watch_list(version) is served


def test_a_release_without_watch_list_refuses_it() -> None:
    kube = KubeAPI(git_version="v1.33.4+k3s1")
    try:
        query = urlencode(WATCH_LIST)
        target = f"/api/v1/namespaces/default/configmaps?{query}"
        response = kube.handle("GET", target, {}, b"", user="system:admin")
    finally:
        kube.stop()
    assert response.status == 422
    causes = json.loads(response.body)["details"]["causes"]
    assert causes == [
        {
            "reason": "FieldValueForbidden",
            "message": "Forbidden: sendInitialEvents is forbidden for watch unless "
            "the WatchList feature gate is enabled",
            "field": "sendInitialEvents",
        }
    ]
