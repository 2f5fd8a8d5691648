"""A failing test's failure bundle: what CI keeps to read after the run.

For each failing test that used a cluster, ``--k3s-artifacts DIR`` gets
``DIR/<test id made filesystem-safe>/`` (see :func:`safe_name`)::

    summary.txt                 the test, cluster, namespace; what is missing and why
    nodes.yaml                  the Node objects
    warning-events.txt          the cluster's Warning events
    events.txt                  the events of the test's namespace
    workloads.txt               its Deployments, StatefulSets, DaemonSets, Jobs
    pods/<pod>.yaml             each pod of the namespace
    pods/<pod>/<container>.log  each container's log (``.previous.log``: the run before)
    nodes/<node>/k3s.log        the node container's log (k3s itself)
    nodes/<node>/containerd.log the end of the node's containerd log

What comes from the API is :mod:`pytest_k3s.kube.diagnostics` (never
Secrets or ConfigMaps). The collection is bounded: every file is cut to
:data:`MAX_FILE` bytes (a first line says so), the whole of it to
:data:`TOTAL_SECONDS` (and :data:`GRACE`), every API request to
:data:`~pytest_k3s.kube.diagnostics.CALL_TIMEOUT` without retries, and it
never raises: what it could not get is a line in ``summary.txt``, and a
bundle that could not be written is a line in the test's report.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import threading
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from pytest_k3s.cluster import K3sCluster
from pytest_k3s.engine.node_container import Node
from pytest_k3s.errors import BudgetSpent
from pytest_k3s.errors import K3sError
from pytest_k3s.kube import diagnostics
from pytest_k3s.kube.diagnostics import CALL_TIMEOUT
from pytest_k3s.kube.diagnostics import ApiState
from pytest_k3s.kube.diagnostics import Budget


#: The largest file a bundle holds (bytes); longer ones are cut.
MAX_FILE = 1 << 20
#: How long collecting one bundle may take (seconds).
TOTAL_SECONDS = 30.0
#: How much longer than that :func:`collect` waits for its thread (seconds).
GRACE = 2.0
#: Lines of a node container's log asked of the engine.
NODE_LOG_LINES = 20_000
#: Where k3s' containerd logs, inside a node.
CONTAINERD_LOG = "/var/lib/rancher/k3s/agent/containerd/containerd.log"
#: The longest directory name a bundle gets (file systems allow 255 bytes).
MAX_NAME = 120


def safe_name(test_id: str) -> str:
    """Turn a test id into a directory name that is safe on every file system.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become
    ``_``, and then the name ends in a short hash of the test id
    (``tests/test_a.py::test_b[x]`` is ``tests_test_a.py__test_b_x_-<hash>``),
    so ``test_x[a/b]`` and ``test_x[a:b]`` never share a directory. An id
    longer than :data:`MAX_NAME` is cut and ends in the hash too.
    """
    name = re.sub(r"[^A-Za-z0-9._-]", "_", test_id).strip(".") or "test"
    if name != test_id or len(name) > MAX_NAME:
        digest = hashlib.sha1(test_id.encode()).hexdigest()[:8]
        name = f"{name[: MAX_NAME - 9]}-{digest}"
    return name


def cap(text: str, limit: int = MAX_FILE, *, keep_end: bool = False) -> str:
    """Cut ``text`` to at most ``limit`` bytes (UTF-8), with a line saying so.

    :param keep_end: keep the end (logs: the last lines matter), else the start
    """
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    if keep_end:
        kept = data[-limit:].decode("utf-8", "ignore")
        kept = kept.split("\n", 1)[1] if "\n" in kept else kept
        return (
            f"[pytest-k3s: cut to the last {len(kept.encode())} of {len(data)} "
            f"bytes]\n{kept}"
        )
    kept = data[:limit].decode("utf-8", "ignore")
    kept = kept.rsplit("\n", 1)[0] if "\n" in kept else kept
    return (
        f"{kept}\n[pytest-k3s: cut to the first {len(kept.encode())} of "
        f"{len(data)} bytes]\n"
    )


@dataclass
class Bundle:
    """What was collected for one failing test.

    :ivar path: the bundle's directory, or None where none was written
    :ivar tails: the last log lines of each failing pod's containers
    :ivar problems: what could not be collected, and why
    :ivar seconds: how long collecting took
    :ivar unwritten: why no bundle was written where one was asked for
    :ivar api_unreachable: the API server did not answer at all
    """

    path: Path | None
    tails: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    unwritten: str | None = None
    api_unreachable: bool = False

    def report_lines(self) -> list[str]:
        """The lines a test's report gains: failing pods' log tails, the bundle.

        Where a bundle was asked for and none was written, the last line
        says why.
        """
        lines: list[str] = []
        for container, tail in self.tails.items():
            lines.append(f"last log lines of {container}:")
            lines += [f"    {line}" for line in tail] or ["    (empty)"]
        if self.path is not None:
            lines.append(f"failure bundle: {self.path}")
        elif self.unwritten is not None:
            lines.append(f"no failure bundle: {self.unwritten}")
        return lines


def collect(
    cluster: K3sCluster,
    namespace: str | None,
    *,
    test_id: str,
    directory: Path | None,
    seconds: float = TOTAL_SECONDS,
    call_seconds: float = CALL_TIMEOUT,
    api: bool = True,
) -> Bundle:
    """Collect a failing test's state; write its bundle under ``directory``.

    Without ``directory``, only the failing pods' last log lines are read
    (for the report). Never raises, and returns within about ``seconds``
    (and :data:`GRACE` more): the collection runs in a thread of its own,
    left behind if it overruns (what it found until then is written).

    :param api: read the API server; False for a cluster whose API server
        did not answer an earlier collection (:attr:`Bundle.api_unreachable`)
    """
    started = time.monotonic()
    budget = Budget.of(seconds, per_call=call_seconds)
    state = ApiState()
    full = directory is not None
    if not api:
        state.unreachable = True
        state.problems.append(
            "the API server did not answer for an earlier failing test in this "
            "process, so it is not asked again: no events, pods, pod logs or "
            "nodes from the API"
        )
    worker = threading.Thread(
        target=_gather,
        args=(cluster, namespace, budget, state, full, api),
        name=f"pytest-k3s bundle {test_id}",
        daemon=True,
    )
    worker.start()
    worker.join(seconds + GRACE)
    if worker.is_alive():
        state.problems.append(
            f"collecting stopped after {seconds:g}s: what is missing took too long"
        )
    files = dict(state.files)
    problems = list(state.problems)
    bundle = Bundle(
        path=None,
        tails=dict(state.tails),
        problems=problems,
        api_unreachable=state.unreachable,
    )
    if directory is not None:
        target = directory / safe_name(test_id)
        try:
            _write(target, files, problems, cluster, namespace, test_id, started)
            bundle.path = target
        except Exception as exc:  # a failing test's report must not fail
            bundle.unwritten = f"could not write it to {target}: {exc}"
            problems.append(f"could not write the failure bundle to {target}: {exc}")
    bundle.seconds = time.monotonic() - started
    return bundle


def _gather(
    cluster: K3sCluster,
    namespace: str | None,
    budget: Budget,
    state: ApiState,
    full: bool,
    read_api: bool,
) -> None:
    try:
        if full:
            # First: the engine answers when the API server does not.
            _node_logs(cluster, budget, state)
        if not read_api:
            return
        api = diagnostics.quick_client(cluster.api_client)
        try:
            diagnostics.read_state(
                api,
                namespace,
                budget,
                full=full,
                into=state,
            )
        finally:
            api.close()  # type: ignore[no-untyped-call]
    except Exception as exc:  # a failing test's report must not fail
        state.problems.append(f"collecting failed: {type(exc).__name__}: {exc}")


def _node_logs(cluster: K3sCluster, budget: Budget, state: ApiState) -> None:
    if not cluster.in_docker:
        state.problems.append(
            "an existing cluster: no node logs (its nodes are not containers "
            "pytest-k3s started)"
        )
        return
    for node in cluster.nodes:
        short = node.name.removeprefix(f"{cluster.name}-")
        try:
            budget.timeout()
        except BudgetSpent:
            state.problems.append(f"node {short}: no logs, the time ran out")
            return
        try:
            state.files[f"nodes/{short}/k3s.log"] = cluster.logs(
                node, tail=NODE_LOG_LINES
            )
        except Exception as exc:
            state.problems.append(f"node {short}: no k3s log ({exc})")
        try:
            state.files[f"nodes/{short}/containerd.log"] = _containerd_log(
                cluster, node
            )
        except Exception as exc:
            state.problems.append(f"node {short}: no containerd log ({exc})")


def _containerd_log(cluster: K3sCluster, node: Node) -> str:
    """The end of a node's containerd log, at most :data:`MAX_FILE` bytes.

    Read with ``tail`` inside the node, so a log of gigabytes never leaves
    it whole. A stopped node runs no command: its log is copied out whole,
    then cut.
    """
    end = io.BytesIO()
    command = ["tail", "-c", str(MAX_FILE + 1), CONTAINERD_LOG]
    try:
        code, errors = cluster.engine.exec(node.container_id, command, stdout=end)
    except Exception:
        raw = cluster.engine.read_file(node.container_id, CONTAINERD_LOG)
        return raw.decode("utf-8", "replace")
    if code != 0:
        raise K3sError(f"{' '.join(command)} exited {code}: {errors.strip()}")
    data = end.getvalue()
    if len(data) <= MAX_FILE:
        return data.decode("utf-8", "replace")
    # Room for the line saying so, so the file is not cut again.
    kept = data[-(MAX_FILE - 200) :].decode("utf-8", "ignore")
    kept = kept.split("\n", 1)[1] if "\n" in kept else kept
    return f"[pytest-k3s: cut to its last {len(kept.encode())} bytes]\n{kept}"


def _write(
    target: Path,
    files: dict[str, str],
    problems: list[str],
    cluster: K3sCluster,
    namespace: str | None,
    test_id: str,
    started: float,
) -> None:
    if target.exists():
        shutil.rmtree(target)  # an earlier run's bundle of the same test
    target.mkdir(parents=True)
    for relative, text in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(cap(text, keep_end=relative.endswith(".log")), "utf-8")
    summary = [
        f"test: {test_id}",
        f"cluster: {cluster.name} ({_api_url(cluster)})",
        f"namespace: {namespace or '(none: the test used no k3s_namespace)'}",
        f"collected in {time.monotonic() - started:.1f}s at "
        f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}",
        "Secrets and ConfigMaps are never read.",
    ]
    if problems:
        summary += ["", "missing:", *(f"- {line}" for line in problems)]
    (target / "summary.txt").write_text("\n".join(summary) + "\n", "utf-8")


def _api_url(cluster: K3sCluster) -> str:
    try:
        return cluster.api_url
    except Exception as exc:  # the kubeconfig went: the bundle is still written
        return f"API URL unknown: {exc}"
