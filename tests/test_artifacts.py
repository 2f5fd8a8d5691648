"""The failure bundle's pure parts, and its collection against a fake API.

Names, capping, YAML, what counts as a failing pod, the Secret rule, and
that collecting never raises nor outlasts its budget (an API that does not
answer, a fake cluster). The bundle of a real failing test, through pytest
and the k3s node double, is in ``test_plugin.py``.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from pytest_k3s.errors import K3sError
from pytest_k3s.kube import diagnostics
from pytest_k3s.kube.diagnostics import Budget
from pytest_k3s.run import artifacts
from pytest_k3s.run.artifacts import cap
from pytest_k3s.run.artifacts import safe_name
from pytest_k3s.settings import KNOBS
from pytest_k3s.settings import Settings


# --- names and caps ------------------------------------------------------------


def test_safe_names_keep_the_test_id_readable() -> None:
    assert re.fullmatch(
        r"tests_test_a\.py__TestB__test_c_x_y_-_1_-[0-9a-f]{8}",
        safe_name("tests/test_a.py::TestB::test_c[x/y - 1]"),
    )
    assert re.fullmatch(r"test-[0-9a-f]{8}", safe_name(".."))
    assert re.fullmatch(
        r"tests_test_a\.py__test_b-[0-9a-f]{8}", safe_name("tests/test_a.py::test_b")
    )
    assert safe_name("test_b") == "test_b"  # nothing replaced: no hash


def test_ids_that_differ_only_in_replaced_characters_get_their_own_bundles(
    tmp_path: Path,
) -> None:
    slash, colon = "tests/test_a.py::test_x[a/b]", "tests/test_a.py::test_x[a:b]"
    assert safe_name(slash) != safe_name(colon)
    first = artifacts.collect(
        FakeCluster(dead_api()),  # type: ignore[arg-type]
        None,
        test_id=slash,
        directory=tmp_path,
    )
    second = artifacts.collect(
        FakeCluster(dead_api()),  # type: ignore[arg-type]
        None,
        test_id=colon,
        directory=tmp_path,
    )
    assert first.path is not None
    assert second.path is not None
    assert first.path != second.path
    assert f"test: {slash}" in (first.path / "summary.txt").read_text()
    assert f"test: {colon}" in (second.path / "summary.txt").read_text()


def test_long_test_ids_are_cut_and_stay_distinct() -> None:
    first = safe_name("tests/test_a.py::test_b[" + "x" * 300 + "1]")
    second = safe_name("tests/test_a.py::test_b[" + "x" * 300 + "2]")
    assert len(first) == len(second) == artifacts.MAX_NAME
    assert first != second


def test_cap_leaves_short_text_alone() -> None:
    assert cap("a\nb\n", 10) == "a\nb\n"


def test_cap_keeps_a_logs_end_and_says_it_was_cut() -> None:
    text = "".join(f"line {i}\n" for i in range(1000))
    capped = cap(text, 100, keep_end=True)
    first, rest = capped.split("\n", 1)
    assert first.startswith("[pytest-k3s: cut to the last ")
    assert first.endswith(f"of {len(text)} bytes]")
    assert rest.endswith("line 999\n")
    assert rest.startswith("line ")  # whole lines only
    assert len(rest.encode()) <= 100


def test_cap_keeps_a_documents_start() -> None:
    text = "".join(f"key{i}: value\n" for i in range(1000))
    capped = cap(text, 100)
    assert capped.startswith("key0: value\n")
    assert capped.endswith(f"of {len(text)} bytes]\n")
    assert len(capped.encode()) < 200


def test_cap_never_splits_a_character() -> None:
    capped = cap("é" * 100, 51, keep_end=True)
    assert capped.split("\n", 1)[1] == "é" * 25


# --- what is read, and how it reads ----------------------------------------------


def test_yaml_is_the_object_without_managed_fields() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "managedFields": [{"manager": "kubectl"}]},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    rendered = yaml.safe_load(diagnostics.to_yaml([pod]))
    assert rendered == [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }
    ]
    assert "managedFields" in pod["metadata"]  # the input is left alone
    assert diagnostics.to_yaml(pod).startswith("apiVersion: v1\nkind: Pod\n")


def pod(
    name: str,
    *,
    ready: bool = True,
    restarts: int = 0,
    phase: str = "Running",
    containers: tuple[str, ...] = ("c",),
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"containers": [{"name": c, "image": "busybox"} for c in containers]},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": str(ready)}],
            "containerStatuses": [
                {"name": c, "ready": ready, "restartCount": restarts}
                for c in containers
            ],
        },
    }


def test_failing_pods_are_not_ready_or_restarted() -> None:
    assert not diagnostics.is_failing(pod("fine"))
    assert diagnostics.is_failing(pod("unready", ready=False))
    assert diagnostics.is_failing(pod("restarted", restarts=2))
    assert not diagnostics.is_failing(pod("done", ready=False, phase="Succeeded"))


def test_only_restarted_containers_have_a_previous_log() -> None:
    assert diagnostics.containers_of(pod("a", containers=("x", "y"))) == [
        ("x", False),
        ("y", False),
    ]
    assert diagnostics.containers_of(pod("b", restarts=1)) == [("c", True)]


def test_events_are_one_line_each_oldest_first() -> None:
    events: list[dict[str, Any]] = [
        {
            "lastTimestamp": "2026-01-01T00:00:02Z",
            "type": "Warning",
            "reason": "BackOff",
            "involvedObject": {"kind": "Pod", "namespace": "ns", "name": "web"},
            "count": 3,
            "message": "Back-off restarting failed container\n",
        },
        {
            "lastTimestamp": "2026-01-01T00:00:01Z",
            "type": "Normal",
            "reason": "Scheduled",
            "involvedObject": {"kind": "Pod", "namespace": "ns", "name": "web"},
            "message": "Successfully assigned ns/web to node-0",
        },
    ]
    assert diagnostics.event_lines(events) == [
        "2026-01-01T00:00:01Z Normal Scheduled Pod/ns/web: "
        "Successfully assigned ns/web to node-0",
        "2026-01-01T00:00:02Z Warning BackOff Pod/ns/web (x3): "
        "Back-off restarting failed container",
    ]


def test_workloads_summary_has_replicas_and_conditions() -> None:
    deployment = {
        "metadata": {"name": "web"},
        "spec": {"replicas": 2},
        "status": {
            "readyReplicas": 1,
            "updatedReplicas": 2,
            "availableReplicas": 1,
            "conditions": [
                {
                    "type": "Available",
                    "status": "False",
                    "reason": "MinimumReplicasUnavailable",
                    "message": "Deployment does not have minimum availability.",
                }
            ],
        },
    }
    job = {"metadata": {"name": "once"}, "spec": {}, "status": {"failed": 1}}
    assert diagnostics.workload_lines("Deployment", [deployment]) == [
        "Deployment web: replicas 2, ready 1, updated 2, available 1",
        "  Available=False MinimumReplicasUnavailable: "
        "Deployment does not have minimum availability.",
    ]
    assert diagnostics.workload_lines("Job", [job]) == [
        "Job once: completions 1, active 0, succeeded 0, failed 1"
    ]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/namespaces/ns/secrets",
        "/api/v1/namespaces/ns/secrets/token",
        "/api/v1/secrets",
        "/api/v1/namespaces/ns/configmaps/",
    ],
)
def test_secrets_and_config_maps_are_never_read(path: str) -> None:
    api = FakeApi({})
    with pytest.raises(K3sError, match="never reads"):
        diagnostics.get(api, path)  # type: ignore[arg-type]
    assert api.asked == []


class FakeApi:
    """Answers GETs from a table of paths; records every path asked."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def param_serialize(self, method: str, path: str, **kwargs: Any) -> Any:
        return method, path, kwargs.get("query_params"), None, None

    def call_api(self, method: str, path: str, query: Any, *_: Any, **__: Any) -> Any:
        self.asked.append(path)
        answer = self.answers.get(path)
        response = type("Response", (), {"read": lambda self: None})()
        response.status = 404 if answer is None else 200
        if answer is None:
            answer = {"message": f"{path} not found"}
        response.data = answer if isinstance(answer, bytes) else json.dumps(answer)
        if isinstance(response.data, str):
            response.data = response.data.encode()
        return response


def cluster_api() -> FakeApi:
    crashing = pod("crashing", ready=False, restarts=3)
    return FakeApi(
        {
            "/api/v1/nodes": {"items": [{"metadata": {"name": "node-0"}}]},
            "/api/v1/events": {"items": []},
            "/api/v1/namespaces/ns/events": {
                "items": [{"type": "Warning", "reason": "BackOff", "message": "m"}]
            },
            "/api/v1/namespaces/ns/pods": {"items": [pod("fine"), crashing]},
            "/api/v1/namespaces/ns/pods/fine/log": b"fine line\n",
            "/api/v1/namespaces/ns/pods/crashing/log": b"".join(
                f"crash line {i}\n".encode() for i in range(30)
            ),
            "/apis/apps/v1/namespaces/ns/deployments": {"items": []},
            "/apis/apps/v1/namespaces/ns/statefulsets": {"items": []},
            "/apis/apps/v1/namespaces/ns/daemonsets": {"items": []},
            "/apis/batch/v1/namespaces/ns/jobs": {"items": []},
        }
    )


def test_read_state_reads_the_namespace_and_no_secret() -> None:
    api = cluster_api()
    state = diagnostics.read_state(api, "ns", Budget.of(10))  # type: ignore[arg-type]
    assert sorted(state.files) == [
        "events.txt",
        "nodes.yaml",
        "pods/crashing.yaml",
        "pods/crashing/c.log",
        "pods/crashing/c.previous.log",
        "pods/fine.yaml",
        "pods/fine/c.log",
        "warning-events.txt",
        "workloads.txt",
    ]
    assert state.files["pods/fine/c.log"] == "fine line\n"
    # As kubectl get -o yaml shows them: the API leaves kinds out of lists.
    assert yaml.safe_load(state.files["nodes.yaml"]) == {
        "apiVersion": "v1",
        "kind": "List",
        "items": [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-0"}}],
    }
    fine = yaml.safe_load(state.files["pods/fine.yaml"])
    assert (fine["apiVersion"], fine["kind"]) == ("v1", "Pod")
    assert state.files["workloads.txt"] == "(no workloads)\n"
    assert state.problems == []
    # Only the failing pod's last lines go to the report.
    assert list(state.tails) == ["ns/crashing/c"]
    assert state.tails["ns/crashing/c"][-1] == "crash line 29"
    assert len(state.tails["ns/crashing/c"]) == 20
    assert not [p for p in api.asked if "secrets" in p or "configmaps" in p]


def test_a_tail_from_the_previous_run_says_so() -> None:
    class PreviousApi(FakeApi):
        def call_api(
            self, method: str, path: str, query: Any, *_: Any, **__: Any
        ) -> Any:
            if ("previous", "true") in (query or []):
                path += "?previous"
            return super().call_api(method, path, query)

    api = PreviousApi(cluster_api().answers)
    api.answers["/api/v1/namespaces/ns/pods/crashing/log"] = b""
    api.answers["/api/v1/namespaces/ns/pods/crashing/log?previous"] = b"why\n"
    state = diagnostics.read_state(
        api,  # type: ignore[arg-type]
        "ns",
        Budget.of(10),
        full=False,
    )
    assert state.tails == {"ns/crashing/c (previous run)": ["why"]}


def test_without_a_bundle_only_failing_pods_logs_are_read() -> None:
    api = cluster_api()
    state = diagnostics.read_state(
        api,  # type: ignore[arg-type]
        "ns",
        Budget.of(10),
        full=False,
    )
    assert state.files == {}
    assert list(state.tails) == ["ns/crashing/c"]
    assert "/api/v1/namespaces/ns/pods/fine/log" not in api.asked


def dead_api() -> k8s.ApiClient:
    """A client of an API server that refuses connections."""
    configuration = k8s.Configuration(host="https://127.0.0.1:9")
    return k8s.ApiClient(configuration)


def test_a_dead_api_is_one_line_and_quick() -> None:
    api = diagnostics.quick_client(dead_api())
    started = time.monotonic()
    state = diagnostics.read_state(api, "ns", Budget.of(30))
    assert time.monotonic() - started < 5
    assert state.files == {}
    assert len(state.problems) == 1
    assert state.problems[0].startswith("the API server did not answer (")
    assert "no events, pods, pod logs or nodes" in state.problems[0]


def test_pod_logs_errors_name_the_pod() -> None:
    api = cluster_api()
    with pytest.raises(K3sError, match=r"previous logs of container c of pod ns/gone"):
        diagnostics.pod_logs(
            api,  # type: ignore[arg-type]
            "gone",
            namespace="ns",
            container="c",
            previous=True,
        )
    assert api.asked == ["/api/v1/namespaces/ns/pods/gone/log"]


# --- collecting a bundle ----------------------------------------------------------


CONTAINERD = b"containerd line\n" * 200_000  # more than a file may hold


class FakeEngine:
    """Nodes whose containerd log is 3 MB; ``stopped`` ones run no command."""

    def __init__(self, stopped: tuple[str, ...] = ()) -> None:
        self.stopped = stopped
        self.commands: list[list[str]] = []
        self.copied: list[str] = []

    def exec(
        self,
        container_id: str,
        command: list[str],
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
    ) -> tuple[int, str]:
        if container_id == "gone":
            raise K3sError("no such container")
        if container_id in self.stopped:
            raise K3sError("container is not running")
        self.commands.append(list(command))
        assert command[:2] == ["tail", "-c"]
        assert stdout is not None
        stdout.write(CONTAINERD[-int(command[2]) :])
        return 0, ""

    def read_file(self, container_id: str, path: str) -> bytes:
        if container_id == "gone":
            raise K3sError("no such container")
        self.copied.append(path)
        return CONTAINERD


class FakeNode:
    def __init__(self, name: str, container_id: str) -> None:
        self.name = name
        self.container_id = container_id


class FakeCluster:
    """What :func:`artifacts.collect` uses of a cluster."""

    name = "k3s-fake"
    api_url = "https://127.0.0.1:9"
    in_docker = True

    def __init__(self, api: k8s.ApiClient) -> None:
        self.api_client = api
        self.engine = FakeEngine()
        self.nodes = [
            FakeNode("k3s-fake-server-0", "abc"),
            FakeNode("k3s-fake-agent-0", "gone"),
        ]

    def logs(self, node: FakeNode, *, tail: int | None = None) -> str:
        if node.container_id == "gone":
            raise K3sError("no such container")
        return "k3s line\n" * 3_000_000  # more than a file may hold


def test_a_bundle_of_a_dead_api_has_node_logs_and_says_why_no_more(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    bundle = artifacts.collect(
        FakeCluster(dead_api()),  # type: ignore[arg-type]
        "ns",
        test_id="tests/test_x.py::test_y",
        directory=tmp_path,
    )
    assert time.monotonic() - started < 10
    assert bundle.path == tmp_path / safe_name("tests/test_x.py::test_y")
    assert bundle.path.name.startswith("tests_test_x.py__test_y-")
    written = sorted(
        str(p.relative_to(bundle.path)) for p in bundle.path.rglob("*") if p.is_file()
    )
    assert written == [
        "nodes/server-0/containerd.log",
        "nodes/server-0/k3s.log",
        "summary.txt",
    ]
    k3s_log = (bundle.path / "nodes/server-0/k3s.log").read_bytes()
    assert len(k3s_log) <= artifacts.MAX_FILE + 100
    assert k3s_log.startswith(b"[pytest-k3s: cut to the last ")
    summary = (bundle.path / "summary.txt").read_text()
    assert "test: tests/test_x.py::test_y" in summary
    assert "namespace: ns" in summary
    missing = summary.split("missing:\n", 1)[1].splitlines()
    assert missing == [
        "- node agent-0: no k3s log (no such container)",
        "- node agent-0: no containerd log (no such container)",
        missing[2],
    ]
    assert missing[2].startswith("- the API server did not answer (")
    assert bundle.report_lines() == [f"failure bundle: {bundle.path}"]


def test_only_the_end_of_containerd_s_log_leaves_the_node(tmp_path: Path) -> None:
    cluster = FakeCluster(dead_api())
    cluster.engine = FakeEngine()
    bundle = artifacts.collect(
        cluster,  # type: ignore[arg-type]
        None,
        test_id="test_y",
        directory=tmp_path,
    )
    assert bundle.path is not None
    assert cluster.engine.commands == [
        ["tail", "-c", str(artifacts.MAX_FILE + 1), artifacts.CONTAINERD_LOG]
    ]
    assert cluster.engine.copied == []  # never the whole file
    log = (bundle.path / "nodes/server-0/containerd.log").read_bytes()
    assert len(log) <= artifacts.MAX_FILE
    first, rest = log.split(b"\n", 1)
    assert first.startswith(b"[pytest-k3s: cut to its last ")
    assert rest.startswith(b"containerd line\n")
    assert rest.endswith(b"containerd line\n")


def test_a_stopped_node_s_containerd_log_is_copied_then_cut(tmp_path: Path) -> None:
    cluster = FakeCluster(dead_api())
    cluster.engine = FakeEngine(stopped=("abc",))
    bundle = artifacts.collect(
        cluster,  # type: ignore[arg-type]
        None,
        test_id="test_y",
        directory=tmp_path,
    )
    assert bundle.path is not None
    assert cluster.engine.copied == [artifacts.CONTAINERD_LOG]
    log = (bundle.path / "nodes/server-0/containerd.log").read_bytes()
    assert log.startswith(b"[pytest-k3s: cut to the last ")
    assert len(log) <= artifacts.MAX_FILE + 100


def test_a_bundle_replaces_an_earlier_runs_and_never_raises(tmp_path: Path) -> None:
    old = tmp_path / "test_y" / "stale.txt"
    old.parent.mkdir()
    old.write_text("from an earlier run")
    bundle = artifacts.collect(
        FakeCluster(dead_api()),  # type: ignore[arg-type]
        None,
        test_id="test_y",
        directory=tmp_path,
    )
    assert bundle.path == tmp_path / "test_y"
    assert not old.exists()
    assert "namespace: (none" in (bundle.path / "summary.txt").read_text()
    # A directory that cannot be written is a problem line, not an error.
    blocked = tmp_path / "file"
    blocked.write_text("")
    failed = artifacts.collect(
        FakeCluster(dead_api()),  # type: ignore[arg-type]
        None,
        test_id="test_y",
        directory=blocked,
    )
    assert failed.path is None
    assert failed.problems[-1].startswith("could not write the failure bundle")
    # The test's report says so.
    assert failed.report_lines()[-1].startswith(
        f"no failure bundle: could not write it to {blocked / 'test_y'}: "
    )


def test_collecting_stops_at_its_time_limit(tmp_path: Path) -> None:
    released = threading.Event()

    class Hung(FakeCluster):
        def logs(self, node: FakeNode, *, tail: int | None = None) -> str:
            released.wait(60)  # a hung engine: only the test's end lets it go
            return "late\n"

    started = time.monotonic()
    try:
        bundle = artifacts.collect(
            Hung(dead_api()),  # type: ignore[arg-type]
            None,
            test_id="test_slow",
            directory=tmp_path,
            seconds=0.5,
        )
    finally:
        released.set()
    # About 2.5 s (the limit and the thread's grace); never the hung 60 s,
    # with room for a loaded machine.
    assert time.monotonic() - started < 30
    assert bundle.path is not None
    summary = (bundle.path / "summary.txt").read_text()
    assert "collecting stopped after 0.5s: what is missing took too long" in summary


# --- the knob --------------------------------------------------------------------


@pytest.fixture
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for knob in KNOBS:
        monkeypatch.delenv(knob.env, raising=False)


@pytest.mark.usefixtures("_clean_environment")
@pytest.mark.parametrize(
    ("args", "environ", "expected"),
    [
        ((), {}, None),
        ((), {"CI": "true"}, "pytest-k3s-artifacts"),
        ((), {"CI": "false"}, None),
        (("--k3s-artifacts=off",), {"CI": "true"}, None),
        (("--k3s-artifacts=out/bundles",), {}, "out/bundles"),
        ((), {"PYTEST_K3S_ARTIFACTS": "env-dir", "CI": "true"}, "env-dir"),
        # On-values mean the default directory, never one named "true".
        ((), {"PYTEST_K3S_ARTIFACTS": "true"}, "pytest-k3s-artifacts"),
        ((), {"PYTEST_K3S_ARTIFACTS": "1"}, "pytest-k3s-artifacts"),
        (("--k3s-artifacts=on",), {}, "pytest-k3s-artifacts"),
        (("--k3s-artifacts=yes",), {"CI": "false"}, "pytest-k3s-artifacts"),
        ((), {"PYTEST_K3S_ARTIFACTS": "no", "CI": "true"}, None),
        ((), {"PYTEST_K3S_ARTIFACTS": "0", "CI": "true"}, None),
    ],
)
def test_the_artifacts_directory(
    pytester: pytest.Pytester,
    args: tuple[str, ...],
    environ: dict[str, str],
    expected: str | None,
) -> None:
    config = pytester.parseconfigure(*args)
    resolved = Settings.from_config(config, environ).artifacts
    if expected is None:
        assert resolved is None
    else:
        assert resolved == pytester.path / expected


def test_the_report_gains_failing_pods_last_lines_and_the_bundle() -> None:
    bundle = artifacts.Bundle(
        path=Path("/out/test_x"), tails={"ns/web/c": ["one", "two"], "ns/db/c": []}
    )
    assert bundle.report_lines() == [
        "last log lines of ns/web/c:",
        "    one",
        "    two",
        "last log lines of ns/db/c:",
        "    (empty)",
        "failure bundle: /out/test_x",
    ]


# --- the plugin's glue, with a fake cluster -------------------------------------

FAKE_CLUSTER_CONFTEST = """
import os

import pytest
from kubernetes import client as k8s

URL = os.environ["FAKE_API_URL"]


class Engine:
    def exec(self, container_id, command, stdin=None, stdout=None):
        stdout.write(b"containerd line\\n")
        return 0, ""

    def read_file(self, container_id, path):
        return b"containerd line\\n"


class Node:
    name = "k3s-fake-server-0"
    container_id = "abc"


class Cluster:
    name = "k3s-fake"
    api_url = URL
    in_docker = True

    def __init__(self):
        self.api_client = k8s.ApiClient(k8s.Configuration(host=URL))
        self.engine = Engine()
        self.nodes = [Node()]

    def logs(self, node, *, tail=None):
        return "k3s line\\n"

    def container_states(self):
        return ["container k3s-fake-server-0: running"]


CLUSTER = Cluster()


@pytest.fixture
def k3s_cluster():
    return CLUSTER
"""

THREE_FAILING = """
import pytest


@pytest.mark.parametrize("n", [1, 2, 3])
def test_fails(k3s_cluster, n):
    assert False
"""


class ClosingServer:
    """Accepts connections and closes them at once: an API that never answers."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def closing_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[ClosingServer]:
    server = ClosingServer()
    monkeypatch.setenv("FAKE_API_URL", server.url)
    yield server
    server.close()


@pytest.mark.usefixtures("_clean_environment")
def test_an_unreachable_api_is_asked_once_per_process(
    pytester: pytest.Pytester, closing_api: ClosingServer
) -> None:
    pytester.makeconftest(FAKE_CLUSTER_CONFTEST)
    pytester.makepyfile(test_three=THREE_FAILING)
    result = pytester.runpytest("-p", "no:randomly", "--k3s-artifacts=out")
    result.assert_outcomes(failed=3)
    # The first failing test's bundle asks once, without retries; the
    # report's summary and the later tests ask nothing.
    assert closing_api.connections == 1
    result.stdout.fnmatch_lines(
        [
            "*(cluster state not read: its API server did not answer; it is not "
            "asked again in this process)",
            "*(cluster state not read: its API server did not answer for an "
            "earlier failing test; it is not asked again in this process)",
        ]
    )
    later = (
        pytester.path / "out" / safe_name("test_three.py::test_fails[3]")
    ) / "summary.txt"
    assert "did not answer for an earlier failing test" in later.read_text()


@pytest.mark.usefixtures("_clean_environment")
def test_unwritten_bundles_are_in_the_reports_and_the_summary(
    pytester: pytest.Pytester, closing_api: ClosingServer
) -> None:
    pytester.makeconftest(FAKE_CLUSTER_CONFTEST)
    pytester.makepyfile(test_three=THREE_FAILING)
    (pytester.path / "blocked").write_text("a file, not a directory")
    result = pytester.runpytest("-p", "no:randomly", "--k3s-artifacts=blocked")
    result.assert_outcomes(failed=3)
    assert result.stdout.str().count("no failure bundle: could not write it to ") == 3
    result.stdout.fnmatch_lines(
        [
            "*k3s clusters*",
            "no failure bundle for 3 failing test(s) (their reports say why); "
            "test_three.py::test_fails[[]1[]]: could not write it to *blocked*",
        ]
    )
