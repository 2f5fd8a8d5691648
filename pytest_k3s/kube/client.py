"""API clients and the typed calls start-up, node operations and the fixtures make.

Readiness probes (``/readyz``, nodes Ready, the default ServiceAccount,
CoreDNS), namespaces, node deletion and the diagnostics of a failed test;
applying manifests and waiting for objects of any kind is
:mod:`pytest_k3s.kube.objects`. Clients are always built from a cluster's
own kubeconfig and never touch the client library's global default
configuration, so several clusters can be used side by side in one process.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from pytest_k3s.errors import K3sError
from pytest_k3s.kube.kubeconfig import Kubeconfig


#: Requests made while waiting must not hang longer than this (seconds).
PROBE_TIMEOUT = 5.0
#: How often a request answered 429 is sent again, after the Retry-After the
#: server asks for (client-go retries up to 10 times).
RETRIES_ON_429 = 10

ROLE_LABEL = "node-role.kubernetes.io/"
#: The label of the namespaces ``k3s_namespace`` creates (and a reused
#: cluster's next run deletes).
MANAGED_BY = {"app.kubernetes.io/managed-by": "pytest-k3s"}


class RetryAfter429(urllib3.Retry):
    """urllib3's retries, sending again what got a 429 with a Retry-After.

    The server processed none of such a request, whatever its verb (client-go
    retries it so). No other status is retried: urllib3 would also resend a
    POST answered 503 or 413 with a Retry-After.
    """

    def is_retry(
        self, method: str, status_code: int, has_retry_after: bool = False
    ) -> bool:
        """Retry a 429 that says when, while retries are left."""
        return status_code == 429 and has_retry_after and bool(self.total)


def api_client(config: Kubeconfig) -> k8s.ApiClient:
    """Build an ``ApiClient`` bound to ``config`` alone.

    Like client-go (kubectl, helm, controllers), it sends a request again
    when the server answers 429 with a Retry-After, as an API server does
    for a moment after it (re)starts ("storage is (re)initializing") and
    under priority and fairness: the request was not processed, whatever
    its verb.
    """
    configuration = k8s.Configuration()
    k8s_config.load_kube_config_from_dict(  # type: ignore[no-untyped-call]
        config, client_configuration=configuration, persist_config=False
    )
    configuration.retries = RetryAfter429(
        total=RETRIES_ON_429 + 3,
        connect=3,  # urllib3's default: the request was never sent
        read=3,  # urllib3's default, for idempotent verbs only
        other=0,  # an error after sending: the request may have been processed
        redirect=0,
        status=RETRIES_ON_429,
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    return k8s.ApiClient(configuration)


def failure(exc: BaseException) -> str:
    """Say in a few words why an API call failed."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}".strip()
    return f"{type(exc).__name__}: {exc}"


def readyz(api: k8s.ApiClient) -> str | None:
    """Return None when ``/readyz`` answers ``ok``, else why not."""
    url = f"{api.configuration.host}/readyz"
    try:
        rest: Any = api.rest_client
        response = rest.request(
            "GET", url, headers={"Accept": "*/*"}, _request_timeout=PROBE_TIMEOUT
        )
    except Exception as exc:  # refused, TLS not up yet, 5xx: all mean "not yet"
        return failure(exc)
    if response.status != 200:
        return f"/readyz answered HTTP {response.status}"
    return None


def list_nodes(api: k8s.ApiClient) -> list[tuple[str, bool]]:
    """Every node's name, and whether it is a control-plane node, servers first."""
    nodes: list[Any] = (
        k8s.CoreV1Api(api).list_node(_request_timeout=PROBE_TIMEOUT).items
    )
    found = [
        (
            node.metadata.name,
            bool({"control-plane", "master"} & set(node_roles(node.metadata.labels))),
        )
        for node in nodes
    ]
    return sorted(found, key=lambda item: (not item[1], item[0]))


def node_roles(labels: Mapping[str, str] | None) -> tuple[str, ...]:
    """Return the node's roles from its ``node-role.kubernetes.io/*`` labels."""
    return tuple(
        sorted(
            key[len(ROLE_LABEL) :] for key in labels or {} if key.startswith(ROLE_LABEL)
        )
    )


def nodes_ready(
    api: k8s.ApiClient, expected: set[str], *, heartbeat_after: float | None = None
) -> tuple[str | None, str | None]:
    """Check that every ``expected`` node is registered and Ready.

    With ``heartbeat_after`` (epoch seconds, this machine's clock), Ready
    must also have been reported since then (a restarted node's old
    condition does not count). Heartbeats carry the node's clock, which is
    the engine host's: the API server's ``Date`` says how far that is from
    ours, and the comparison is made in its time (a remote engine's clock
    may be behind). Returns (None, None) when they are, else (why not, the
    first node at fault).
    """
    try:
        answer: Any = k8s.CoreV1Api(api).list_node_with_http_info(
            _request_timeout=PROBE_TIMEOUT
        )
    except Exception as exc:
        return f"listing nodes failed: {failure(exc)}", None
    nodes: list[Any] = answer[0].items
    if heartbeat_after is not None:
        heartbeat_after += server_skew(answer[2])
    # Heartbeats are stamped to the second: one in the very second the start
    # began may be the old run's (a quick restart's), so only a later second
    # counts. The next heartbeat comes soon enough (a kubelet reports at once
    # when it starts, then every few seconds).
    after = None if heartbeat_after is None else math.floor(heartbeat_after)
    ready = {
        node.metadata.name
        for node in nodes
        if any(
            c.type == "Ready"
            and c.status == "True"
            and (
                after is None
                or (
                    c.last_heartbeat_time is not None
                    and c.last_heartbeat_time.timestamp() > after
                )
            )
            for c in (node.status.conditions or [])
        )
    }
    registered = {node.metadata.name for node in nodes}
    missing = sorted(expected - registered)
    if missing:
        return f"node {missing[0]} has not registered", missing[0]
    not_ready = sorted(expected - ready)
    if not_ready:
        return f"node {not_ready[0]} is not Ready", not_ready[0]
    return None, None


def server_skew(headers: Mapping[str, str] | None, now: float | None = None) -> float:
    """How far the server's clock (its ``Date`` header) is ahead of ours, in seconds.

    ``Date`` has whole seconds, so a skew under two seconds is taken as none.
    """
    from email.utils import parsedate_to_datetime

    # Date is cut to the second: the server's clock is half a second on, on
    # average.
    stamp = (headers or {}).get("Date") or (headers or {}).get("date")
    if not stamp:
        return 0.0
    try:
        server = parsedate_to_datetime(stamp).timestamp() + 0.5
    except (TypeError, ValueError):
        return 0.0
    skew = server - (time.time() if now is None else now)
    return skew if abs(skew) >= 2 else 0.0


def default_service_account(api: k8s.ApiClient) -> str | None:
    """Return None once the ``default`` ServiceAccount exists in ``default``."""
    try:
        k8s.CoreV1Api(api).read_namespaced_service_account(
            "default", "default", _request_timeout=PROBE_TIMEOUT
        )
    except Exception as exc:
        return f"ServiceAccount default/default: {failure(exc)}"
    return None


def coredns_available(api: k8s.ApiClient) -> str | None:
    """Return None once the CoreDNS deployment in kube-system is available."""
    try:
        deployment: Any = k8s.AppsV1Api(api).read_namespaced_deployment(
            "coredns", "kube-system", _request_timeout=PROBE_TIMEOUT
        )
    except Exception as exc:
        return f"deployment kube-system/coredns: {failure(exc)}"
    if not (deployment.status.available_replicas or 0):
        return "deployment kube-system/coredns has no available replica yet"
    return None


def namespace_name(text: str, *, suffix: str) -> str:
    """Turn ``text`` (e.g. a test name) and ``suffix`` into a namespace name.

    Namespaces are DNS-1123 labels: lower-case alphanumerics and ``-``, at
    most 63 characters, starting and ending alphanumeric. ``text`` is cut to
    fit; ``suffix`` (which makes the name unique) is kept whole.
    """
    limit = 63 - len(suffix) - 1
    body = re.sub(r"[^a-z0-9]+", "-", text.lower())[:limit].strip("-")
    return f"{body or 'test'}-{suffix}"


def create_namespace(
    api: k8s.ApiClient, name: str, labels: Mapping[str, str], *, timeout: float = 60
) -> None:
    """Create namespace ``name`` and wait until pods can be created in it.

    The ``default`` ServiceAccount appears a moment after the namespace, and
    until then the API refuses pods ("serviceaccount default not found").
    """
    core = k8s.CoreV1Api(api)
    metadata = k8s.V1ObjectMeta(name=name, labels=dict(labels))
    core.create_namespace(k8s.V1Namespace(metadata=metadata))
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            core.read_namespaced_service_account(
                "default", name, _request_timeout=PROBE_TIMEOUT
            )
            return
        except ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise K3sError(
                    f"namespace {name}: its default ServiceAccount did not appear "
                    f"within {timeout:.0f}s ({failure(exc)})"
                ) from exc
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def delete_namespace(api: k8s.ApiClient, name: str) -> None:
    """Delete namespace ``name``; a namespace that is gone already is fine."""
    try:
        k8s.CoreV1Api(api).delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def delete_node(api: k8s.ApiClient, name: str) -> None:
    """Delete the Node object ``name``; one that is gone already is fine."""
    try:
        k8s.CoreV1Api(api).delete_node(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def delete_namespaces(api: k8s.ApiClient, selector: Mapping[str, str]) -> list[str]:
    """Delete every namespace carrying the labels ``selector``; return their names."""
    core = k8s.CoreV1Api(api)
    wanted = ",".join(f"{key}={value}" for key, value in selector.items())
    found: list[Any] = core.list_namespace(
        label_selector=wanted, _request_timeout=PROBE_TIMEOUT
    ).items
    names = [str(ns.metadata.name) for ns in found]
    for name in names:
        delete_namespace(api, name)
    return names


def diagnostics(api: k8s.ApiClient, namespace: str | None) -> str:
    """Describe the cluster's state for a failure report: nodes, pods, events."""
    core: Any = k8s.CoreV1Api(api)
    lines: list[str] = []
    try:
        for node in core.list_node(_request_timeout=PROBE_TIMEOUT).items:
            conditions = ", ".join(
                f"{c.type}={c.status}" for c in node.status.conditions or []
            )
            lines.append(f"node {node.metadata.name}: {conditions}")
        if namespace:
            lines += _namespace_state(core, namespace)
    except Exception as exc:
        lines.append(f"(could not read cluster state: {failure(exc)})")
    return "\n".join(lines)


def _namespace_state(core: Any, namespace: str) -> list[str]:
    lines: list[str] = []
    for pod in core.list_namespaced_pod(
        namespace, _request_timeout=PROBE_TIMEOUT
    ).items:
        statuses = pod.status.container_statuses or []
        ready = sum(1 for s in statuses if s.ready)
        lines.append(
            f"pod {namespace}/{pod.metadata.name}: {pod.status.phase}, "
            f"{ready}/{len(statuses)} ready, node {pod.spec.node_name or '-'}"
        )
    events = core.list_namespaced_event(namespace, _request_timeout=PROBE_TIMEOUT).items
    for event in events[-20:]:
        involved = event.involved_object
        lines.append(
            f"event {event.type} {event.reason} {involved.kind}/{involved.name}: "
            f"{event.message}"
        )
    return lines
