"""Reading a cluster's state for people: pod logs, and a failing test's bundle.

:func:`pod_logs` is :meth:`K3sCluster.pod_logs <pytest_k3s.K3sCluster.pod_logs>`.
The rest reads what a failure bundle holds from the API (events, pods as
YAML with their containers' logs, a summary of the workloads, the nodes),
each request with a short timeout inside one overall :class:`Budget`, and
returns it as text: writing it, and the nodes' own logs, is
:mod:`pytest_k3s.run.artifacts`. Every request goes through :func:`get`,
which refuses Secrets and ConfigMaps: a bundle is uploaded by CI and read
by people who must not see their data.

Objects are read as the API serves them (JSON, not the client's models),
so the YAML is what ``kubectl get -o yaml`` shows, ``managedFields`` left out.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from urllib.parse import quote

import urllib3
import yaml
from kubernetes import client as k8s

from pytest_k3s.errors import ApiUnreachable
from pytest_k3s.errors import BudgetSpent
from pytest_k3s.errors import K3sError


#: Resources a bundle never reads (their data is often secret).
NEVER_READ = frozenset({"secrets", "configmaps"})
#: How long one request of a bundle may take (seconds).
CALL_TIMEOUT = 5.0
#: The lines of a failing pod's log a test's report shows.
REPORT_LINES = 20
#: Log lines asked for per container (the file is capped in bytes after).
LOG_LINES = 10_000
#: Pods of a namespace whose logs a bundle reads, at most.
MAX_PODS = 50
#: The workload kinds a bundle summarises: (kind, list path).
WORKLOADS = (
    ("Deployment", "/apis/apps/v1/namespaces/{ns}/deployments"),
    ("StatefulSet", "/apis/apps/v1/namespaces/{ns}/statefulsets"),
    ("DaemonSet", "/apis/apps/v1/namespaces/{ns}/daemonsets"),
    ("Job", "/apis/batch/v1/namespaces/{ns}/jobs"),
)


@dataclass
class Budget:
    """The time left for a collection, and the longest one request may take.

    :ivar deadline: ``time.monotonic()`` when the collection must stop
    :ivar per_call: the timeout of one request
    """

    deadline: float
    per_call: float = CALL_TIMEOUT

    @classmethod
    def of(cls, seconds: float, per_call: float = CALL_TIMEOUT) -> Budget:
        """A budget of ``seconds`` from now."""
        return cls(time.monotonic() + seconds, per_call)

    def timeout(self) -> float:
        """The timeout for the next request; raise :class:`BudgetSpent` if none."""
        left = self.deadline - time.monotonic()
        if left <= 0.05:
            raise BudgetSpent("the time for collecting ran out")
        return min(self.per_call, left)


def quick_client(api: k8s.ApiClient) -> k8s.ApiClient:
    """A client like ``api`` that never retries: one timeout is one timeout.

    The clusters' clients retry a refused connection and a 429 (see
    :func:`pytest_k3s.kube.client.api_client`), which would multiply the
    time a bundle spends on a dead API server.
    """
    configuration = copy.deepcopy(api.configuration)
    configuration.retries = urllib3.Retry(total=0, redirect=0, raise_on_status=False)
    return k8s.ApiClient(configuration)


def get(
    api: k8s.ApiClient,
    path: str,
    *,
    query: Mapping[str, str | int | bool] | None = None,
    timeout: float = CALL_TIMEOUT,
) -> bytes:
    """GET ``path`` from the API server; return the body.

    :raises K3sError: the resource is one of :data:`NEVER_READ`, or the
        server answered an error (its message is in ours)
    :raises ApiUnreachable: no answer at all (refused, timed out, TLS)
    """
    resource = path.split("?")[0].rstrip("/").split("/")
    if NEVER_READ & set(resource):
        raise K3sError(f"pytest-k3s never reads {path}: it may hold secret data")
    params = [
        (key, str(value).lower() if isinstance(value, bool) else str(value))
        for key, value in (query or {}).items()
    ]
    method, url, headers, body, post = api.param_serialize(
        "GET",
        path,
        query_params=params,
        header_params={"Accept": "application/json, */*"},
        auth_settings=["BearerToken"],
    )
    try:
        response: Any = api.call_api(
            method, url, headers, body, post, _request_timeout=timeout
        )
        response.read()
    except Exception as exc:
        raise ApiUnreachable(f"{type(exc).__name__}: {exc}") from exc
    data: bytes = response.data or b""
    if not 200 <= response.status < 300:
        raise K3sError(f"GET {path}: HTTP {response.status}: {_message(data)}")
    return data


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message") or body[:200].decode())
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")


def get_json(
    api: k8s.ApiClient,
    path: str,
    *,
    query: Mapping[str, str | int | bool] | None = None,
    timeout: float = CALL_TIMEOUT,
) -> dict[str, Any]:
    """:func:`get`, the body parsed as JSON."""
    parsed: dict[str, Any] = json.loads(get(api, path, query=query, timeout=timeout))
    return parsed


def pod_logs(
    api: k8s.ApiClient,
    pod: str,
    *,
    namespace: str = "default",
    container: str | None = None,
    previous: bool = False,
    tail: int | None = None,
    timeout: float = 60,
) -> str:
    """Return a container's log, as ``kubectl logs`` prints it.

    :param container: the container (needed when the pod has more than one)
    :param previous: the log of the container's previous run (after a restart)
    :param tail: the last ``tail`` lines only
    :raises K3sError: no such pod or container, the container has not
        started (or, with ``previous``, never restarted), or the API does
        not answer; the message says which
    """
    query: dict[str, str | int | bool] = {}
    if container is not None:
        query["container"] = container
    if previous:
        query["previous"] = True
    if tail is not None:
        query["tailLines"] = tail
    path = f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(pod)}/log"
    try:
        body = get(api, path, query=query, timeout=timeout)
    except K3sError as exc:
        which = f"container {container} of " if container else ""
        raise K3sError(
            f"{'previous ' if previous else ''}logs of {which}pod {namespace}/{pod}: "
            f"{exc}"
        ) from exc
    return body.decode("utf-8", "replace")


def to_yaml(obj: Any) -> str:
    """Render an object (or a list of them) as kubectl does, without managedFields."""
    return yaml.safe_dump(_without_managed_fields(obj), sort_keys=False)


def as_list(kind: str, listed: Mapping[str, Any]) -> dict[str, Any]:
    """A core list as ``kubectl get -o yaml`` shows it: a List, each item kinded.

    The API leaves ``apiVersion`` and ``kind`` out of a list's items.
    """
    items = [{"apiVersion": "v1", "kind": kind, **item} for item in listed["items"]]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def _without_managed_fields(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_without_managed_fields(item) for item in obj]
    if isinstance(obj, dict):
        clean = {key: _without_managed_fields(v) for key, v in obj.items()}
        metadata = clean.get("metadata")
        if isinstance(metadata, dict):
            metadata.pop("managedFields", None)
        return clean
    return obj


def containers_of(pod: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """Each container of ``pod`` (init ones first), and whether it ran before.

    A container that restarted (or whose last state is a termination) has a
    previous log; asking for the previous log of one that has not is an error.
    """
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    statuses = {
        s.get("name"): s
        for s in (status.get("initContainerStatuses") or [])
        + (status.get("containerStatuses") or [])
    }
    found = []
    for entry in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        state = statuses.get(entry.get("name")) or {}
        previous = bool(state.get("restartCount")) or bool(
            (state.get("lastState") or {}).get("terminated")
        )
        found.append((str(entry.get("name")), previous))
    return found


def is_failing(pod: Mapping[str, Any]) -> bool:
    """Whether a pod is worth showing in a failure report: not Ready, or restarted.

    A pod that completed (phase Succeeded) is fine.
    """
    status = pod.get("status") or {}
    if status.get("phase") == "Succeeded":
        return False
    statuses = (status.get("initContainerStatuses") or []) + (
        status.get("containerStatuses") or []
    )
    if any(s.get("restartCount") for s in statuses):
        return True
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return not ready


def event_lines(events: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per event, oldest first: time, type, reason, object, count, message."""
    rows = []
    for event in events:
        stamp = str(
            event.get("lastTimestamp")
            or event.get("eventTime")
            or event.get("firstTimestamp")
            or (event.get("metadata") or {}).get("creationTimestamp")
            or ""
        )
        involved = event.get("involvedObject") or event.get("regarding") or {}
        where = involved.get("namespace")
        obj = f"{involved.get('kind')}/{(where + '/') if where else ''}"
        obj += str(involved.get("name"))
        count = event.get("count") or 1
        rows.append(
            (
                stamp,
                f"{stamp or '-'} {event.get('type')} {event.get('reason')} {obj}"
                + (f" (x{count})" if count > 1 else "")
                + f": {str(event.get('message') or '').strip()}",
            )
        )
    return [line for _, line in sorted(rows, key=lambda row: row[0])]


def workload_lines(kind: str, items: Iterable[Mapping[str, Any]]) -> list[str]:
    """A describe-like summary: replicas, ready, and conditions of each workload."""
    lines = []
    for item in items:
        name = (item.get("metadata") or {}).get("name")
        spec = item.get("spec") or {}
        status = item.get("status") or {}
        if kind == "DaemonSet":
            counts = (
                f"desired {status.get('desiredNumberScheduled', 0)}, "
                f"ready {status.get('numberReady', 0)}, "
                f"available {status.get('numberAvailable', 0)}"
            )
        elif kind == "Job":
            counts = (
                f"completions {spec.get('completions', 1)}, "
                f"active {status.get('active', 0)}, "
                f"succeeded {status.get('succeeded', 0)}, "
                f"failed {status.get('failed', 0)}"
            )
        else:
            counts = (
                f"replicas {spec.get('replicas', 1)}, "
                f"ready {status.get('readyReplicas', 0)}, "
                f"updated {status.get('updatedReplicas', 0)}, "
                f"available {status.get('availableReplicas', 0)}"
            )
        lines.append(f"{kind} {name}: {counts}")
        for condition in status.get("conditions") or []:
            lines.append(
                f"  {condition.get('type')}={condition.get('status')}"
                f" {condition.get('reason') or ''}: "
                f"{str(condition.get('message') or '').strip()}".rstrip(": ")
            )
    return lines


@dataclass
class ApiState:
    """What a failure bundle read from the API.

    :ivar files: the bundle's files: path relative to the bundle, and text
    :ivar tails: the last log lines of each failing pod's containers, for the
        test's report (``namespace/pod/container``, lines); where the
        current run's log is empty or missing, its previous run's, as
        ``namespace/pod/container (previous run)``
    :ivar problems: what could not be read, one line each
    :ivar unreachable: the API server did not answer the first request at all
    """

    files: dict[str, str] = field(default_factory=dict)
    tails: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    unreachable: bool = False


def read_state(
    api: k8s.ApiClient,
    namespace: str | None,
    budget: Budget,
    *,
    tail_lines: int = REPORT_LINES,
    full: bool = True,
    into: ApiState | None = None,
) -> ApiState:
    """Read a failing test's cluster state for its bundle.

    The first request tells whether the API answers at all; if it does not,
    the state holds one problem line saying so and nothing else is tried.
    Each later failure is a problem line and the rest goes on, until the
    budget is spent. ``into`` is filled as reading goes (the caller may
    stop waiting for it).

    :param namespace: the test's namespace: its events, pods, their logs
        and its workloads are read (without one, only the cluster's Warning
        events and the nodes)
    :param tail_lines: how many of a failing pod's last log lines go to
        :attr:`ApiState.tails`
    :param full: read everything; else only the failing pods' last log
        lines (for a report when no bundle is written)
    """
    state = ApiState() if into is None else into
    try:
        nodes = get_json(api, "/api/v1/nodes", timeout=budget.timeout())
    except ApiUnreachable as exc:
        state.unreachable = True
        state.problems.append(
            f"the API server did not answer ({exc}): no events, pods, pod logs "
            "or nodes from the API in this bundle"
        )
        return state
    except BudgetSpent:
        state.problems.append("nothing read from the API: the time ran out")
        return state
    except K3sError as exc:
        state.problems.append(f"nodes: {exc}")
        nodes = {"items": []}
    nodes["items"] = nodes.get("items") or []
    steps: list[tuple[str, Callable[[], None]]] = []
    if full:
        state.files["nodes.yaml"] = to_yaml(as_list("Node", nodes))
        steps.append(("cluster Warning events", lambda: _warnings(api, state, budget)))
    if namespace and full:
        steps += [
            (f"events of {namespace}", lambda: _events(api, state, namespace, budget)),
            (
                f"workloads of {namespace}",
                lambda: _workloads(api, state, namespace, budget),
            ),
        ]
    if namespace:
        steps.append(
            (
                f"pods of {namespace}",
                lambda: _pods(api, state, namespace, budget, tail_lines, full=full),
            )
        )
    for what, step in steps:
        try:
            step()
        except BudgetSpent:
            state.problems.append(f"{what}: not read, the time for collecting ran out")
            break
        except K3sError as exc:
            state.problems.append(f"{what}: {exc}")
    return state


def _warnings(api: k8s.ApiClient, state: ApiState, budget: Budget) -> None:
    events = get_json(
        api,
        "/api/v1/events",
        query={"fieldSelector": "type=Warning"},
        timeout=budget.timeout(),
    )
    state.files["warning-events.txt"] = _lines(event_lines(events.get("items") or []))


def _events(
    api: k8s.ApiClient, state: ApiState, namespace: str, budget: Budget
) -> None:
    events = get_json(
        api, f"/api/v1/namespaces/{quote(namespace)}/events", timeout=budget.timeout()
    )
    state.files["events.txt"] = _lines(event_lines(events.get("items") or []))


def _workloads(
    api: k8s.ApiClient, state: ApiState, namespace: str, budget: Budget
) -> None:
    lines: list[str] = []
    for kind, path in WORKLOADS:
        try:
            found = get_json(
                api, path.format(ns=quote(namespace)), timeout=budget.timeout()
            )
        except (ApiUnreachable, BudgetSpent):
            raise
        except K3sError as exc:
            lines.append(f"{kind}s: {exc}")
            continue
        lines += workload_lines(kind, found.get("items") or [])
    state.files["workloads.txt"] = _lines(lines or ["(no workloads)"])


def _pods(
    api: k8s.ApiClient,
    state: ApiState,
    namespace: str,
    budget: Budget,
    tail_lines: int,
    *,
    full: bool,
) -> None:
    listed = get_json(
        api, f"/api/v1/namespaces/{quote(namespace)}/pods", timeout=budget.timeout()
    )
    pods: list[dict[str, Any]] = listed.get("items") or []
    if len(pods) > MAX_PODS:
        state.problems.append(
            f"pods of {namespace}: {len(pods)}, only the first {MAX_PODS} are in "
            "this bundle"
        )
    for pod in pods[:MAX_PODS]:
        name = str(pod["metadata"]["name"])
        failing = is_failing(pod)
        if full:
            state.files[f"pods/{name}.yaml"] = to_yaml(
                {"apiVersion": "v1", "kind": "Pod", **pod}
            )
        elif not failing:
            continue
        for container, has_previous in containers_of(pod):
            for previous in (False, True) if has_previous else (False,):
                suffix = ".previous" if previous else ""
                target = f"pods/{name}/{container}{suffix}.log"
                try:
                    text = pod_logs(
                        api,
                        name,
                        namespace=namespace,
                        container=container,
                        previous=previous,
                        tail=LOG_LINES if full else tail_lines,
                        timeout=budget.timeout(),
                    )
                except BudgetSpent:
                    raise
                except K3sError as exc:
                    text = f"(no log: {exc})\n"
                if full:
                    state.files[target] = text
                label = f"{namespace}/{name}/{container}"
                # A crash-looping container's current log is often empty or
                # not there yet: its previous run says why it crashed.
                if failing and (not previous or not state.tails.get(label)):
                    if text.startswith("(no log:") and not previous:
                        continue
                    if previous:
                        state.tails.pop(label, None)
                        label = f"{label} (previous run)"
                    state.tails[label] = text.splitlines()[-tail_lines:]


def _lines(lines: Iterable[str]) -> str:
    text = "\n".join(lines)
    return f"{text}\n" if text else "(none)\n"
