"""The kubelet's pods that really run: processes inside the node container.

A pod that :func:`k3s_double.runnable.run_by_kubelet` assigns to this node's
kubelet is started here once its images are present, instead of by the
controllers: each container whose ``command`` names an executable of the
node runs as a process (in its own session) with the pod's environment and
``workingDir``, its stdout and stderr written to its CRI log
(:mod:`.crilog`). Its exit drives restarts by ``restartPolicy`` with the
(short) CrashLoopBackOff back-off of :func:`.crilog.backoff`, and the pod's
status: container states, ``restartCount``, ``lastState``, ``ready``, the
conditions and the phase. Containers of such a pod that name nothing
runnable are simulated as before (running, or exiting 0 a second after
start when the pod does not restart them) and an event says so.

Pods share the node's network namespace: their ``podIP`` is the node's.
Deleting a pod sends its processes SIGTERM, then SIGKILL after the grace
period; processes die with the node container too.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import Protocol

from k3s_double import runnable

from . import children
from . import crilog
from . import dns
from . import probes


Obj = dict[str, Any]
#: Seconds a simulated container of a pod that does not restart "runs".
SIMULATED_RUN = 1.0
SYNC_SECONDS = 0.3
SIMULATED = "DoubleSimulated"


class Api(Protocol):
    """What the runtime needs of the API: ``Upstream.call``."""

    def call(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """Send a request, read the answer."""
        ...


def post_event(
    api: Api, pod: Obj, node: str, reason: str, message: str, *, warning: bool = False
) -> None:
    """Record an Event about ``pod`` from ``node``'s kubelet (best effort).

    A ``DoubleSimulated`` one comes from the double itself, not the kubelet.
    """
    meta = pod["metadata"]
    name, namespace = str(meta["name"]), str(meta["namespace"])
    stamp = now()
    source = "k3s-double" if reason == SIMULATED else "kubelet"
    body = {
        "metadata": {"name": f"{name}.{time.time_ns():x}", "namespace": namespace},
        "involvedObject": {
            "kind": "Pod",
            "namespace": namespace,
            "name": name,
            "uid": meta.get("uid", ""),
            "apiVersion": "v1",
        },
        "reason": reason,
        "message": message,
        "source": {"component": source, "host": node},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "type": "Warning" if warning else "Normal",
        "reportingComponent": source,
        "reportingInstance": node,
    }
    with contextlib.suppress(OSError):
        api.call(
            "POST",
            f"/api/v1/namespaces/{namespace}/events",
            json.dumps(body).encode(),
            {"Content-Type": "application/json", "Accept": "application/json"},
        )


class ConfigError(Exception):
    """A container's environment cannot be built (``CreateContainerConfigError``)."""


def now() -> str:
    """Now, as the API's timestamps are written."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: ``$$`` escapes, unknown ones stay."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REFERENCE.sub(one, text)


def exit_code(returncode: int) -> int:
    """The exit code CRI reports: 128 + the signal for a killed process."""
    return 128 - returncode if returncode < 0 else returncode


def signal_exit(code: int) -> str:
    """``reason`` of a terminated container, as the kubelet sets it."""
    return "Completed" if code == 0 else "Error"


class Environment:
    """Builds a container's environment as the kubelet does."""

    def __init__(self, api: Api, pod: Obj, warn: Callable[[str], None]) -> None:
        self.api = api
        self.pod = pod
        self.warn = warn

    def _get(self, kind: str, name: str) -> Obj | None:
        namespace = self.pod["metadata"]["namespace"]
        status, data = self.api.call(
            "GET",
            f"/api/v1/namespaces/{namespace}/{kind}/{urllib.parse.quote(name)}",
            b"",
            {"Accept": "application/json"},
        )
        if status == 404:
            return None
        if status != 200:
            raise ConfigError(f"failed to get {kind} {name!r}: status {status}")
        found: Obj = json.loads(data)
        return found

    def _data(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        obj = self._get("configmaps" if kind == "configmap" else "secrets", name)
        if obj is None:
            if optional:
                return None
            raise ConfigError(f'{kind} "{name}" not found')
        if kind == "secret":
            return {
                k: base64.b64decode(v).decode(errors="replace")
                for k, v in (obj.get("data") or {}).items()
            }
        return {str(k): str(v) for k, v in (obj.get("data") or {}).items()}

    def _field(self, path: str) -> str | None:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        status = self.pod.get("status") or {}
        fields = {
            "metadata.name": meta.get("name"),
            "metadata.namespace": meta.get("namespace"),
            "metadata.uid": meta.get("uid"),
            "spec.nodeName": spec.get("nodeName"),
            "spec.serviceAccountName": spec.get("serviceAccountName"),
            "status.podIP": status.get("podIP"),
            "status.hostIP": status.get("hostIP"),
        }
        if path not in fields:
            return None
        return str(fields[path] or "")

    def build(self, container: Obj, node_ip: str) -> dict[str, str]:
        """The environment: ``PATH``, ``HOSTNAME``, ``envFrom``, then ``env``."""
        env = {
            "PATH": runnable.DEFAULT_PATH,
            "HOSTNAME": str(self.pod["metadata"]["name"]),
        }
        name = container["name"]
        for source in container.get("envFrom") or []:
            prefix = str(source.get("prefix", ""))
            for key, kind in (("configMapRef", "configmap"), ("secretRef", "secret")):
                ref = source.get(key)
                if ref:
                    data = self._data(kind, ref["name"], bool(ref.get("optional")))
                    env.update({prefix + k: v for k, v in (data or {}).items()})
        for entry in container.get("env") or []:
            var = str(entry["name"])
            if "valueFrom" not in entry:
                env[var] = expand(str(entry.get("value", "")), env)
                continue
            value_from = entry["valueFrom"] or {}
            value: str | None = None
            if "configMapKeyRef" in value_from or "secretKeyRef" in value_from:
                kind = "configmap" if "configMapKeyRef" in value_from else "secret"
                ref = value_from.get("configMapKeyRef") or value_from["secretKeyRef"]
                optional = bool(ref.get("optional"))
                data = self._data(kind, ref["name"], optional)
                if data is not None and ref["key"] in data:
                    value = data[ref["key"]]
                elif not optional:
                    raise ConfigError(
                        f"couldn't find key {ref['key']} in {kind.capitalize()} "
                        f"{self.pod['metadata']['namespace']}/{ref['name']}"
                    )
            elif "fieldRef" in value_from:
                path = str(value_from["fieldRef"].get("fieldPath", ""))
                value = self._field(path)
                if value is None:
                    self.warn(
                        f"env not supported: the k3s double cannot set {var} of "
                        f"container {name} from fieldRef {path}; it is left unset"
                    )
            else:
                self.warn(
                    f"env not supported: the k3s double cannot set {var} of "
                    f"container {name} from {', '.join(value_from)}; it is left unset"
                )
            if value is not None:
                env[var] = value
        return env


class Container:
    """One container of a running pod: its process, or its simulation."""

    def __init__(self, sandbox: PodSandbox, spec: Obj, *, init: bool) -> None:
        self.sandbox = sandbox
        self.spec = spec
        self.name = str(spec["name"])
        self.init = init
        self.argv = runnable.argv(spec)
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.env: dict[str, str] = {}
        self.status: Obj = {
            "name": self.name,
            "image": spec["image"],
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "started": False,
            "state": {"waiting": {"reason": "ContainerCreating"}},
            "lastState": {},
        }
        self.finished = threading.Event()
        self.succeeded = False

    def log_path(self, restart: int) -> str:
        """This container's log file of attempt ``restart``."""
        return crilog.log_path(self.sandbox.log_dir, self.name, restart)

    def running(self) -> bool:
        """Whether its process runs now."""
        return self.process is not None and self.process.poll() is None

    def _container_id(self) -> str:
        seed = f"{self.sandbox.uid}/{self.name}/{self.restarts}/{time.time_ns()}"
        return "containerd://" + hashlib.sha256(seed.encode()).hexdigest()

    def run(self) -> None:
        """Run (or simulate) the container until it is done or the pod stops."""
        try:
            if self.argv is None:
                self._simulate()
            else:
                self._run_process()
        finally:
            self.finished.set()
            self.sandbox.changed()

    def _simulate(self) -> None:
        box = self.sandbox
        started, cid = now(), self._container_id()
        self.status.update(
            containerID=cid,
            ready=not self.init,
            started=not self.init,
            state={"running": {"startedAt": started}},
        )
        box.started_events(self)
        box.event(
            SIMULATED,
            f"container not run: the k3s double simulates a running container "
            f"{self.name}: its command names no executable of the node"
            + ("" if self.spec.get("command") else " (it has no command)"),
        )
        box.changed()
        if not self.init and box.restart_policy == "Always":
            box.stopping.wait()
            self._terminated(started, cid, 137 if box.killed else 0)
            return
        if box.stopping.wait(0 if self.init else SIMULATED_RUN):
            self._terminated(started, cid, 137)
            return
        box.event(
            SIMULATED,
            f"exit simulated: the k3s double reports exit code 0 for container "
            f"{self.name} without running it",
        )
        self._terminated(started, cid, 0)
        self.succeeded = True

    def _terminated(self, started: str, cid: str, code: int) -> Obj:
        terminated = {
            "exitCode": code,
            "reason": signal_exit(code),
            "startedAt": started,
            "finishedAt": now(),
            "containerID": cid,
        }
        self.status.update(ready=False, started=False, state={"terminated": terminated})
        return terminated

    def _run_process(self) -> None:
        box = self.sandbox
        failures = 0
        assert self.argv is not None
        while not box.stopping.is_set():
            try:
                self.env = box.environment.build(self.spec, box.node_ip)
            except (ConfigError, OSError) as error:
                message = f"Error: {error}"
                self.status.update(
                    state={
                        "waiting": {
                            "reason": "CreateContainerConfigError",
                            "message": str(error),
                        }
                    }
                )
                box.event("Failed", message, warning=True)
                box.changed()
                if box.stopping.wait(crilog.backoff(failures)):
                    return
                failures += 1
                continue
            argv = [expand(part, self.env) for part in self.argv]
            cwd = str(self.spec.get("workingDir") or "/")
            path = self.log_path(self.restarts)
            writer = crilog.LogWriter(path)
            cid = self._container_id()
            begun = time.monotonic()
            try:
                os.makedirs(cwd, exist_ok=True)
                self.process = children.popen(
                    box.in_pod(argv),
                    cwd=cwd,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            except OSError as error:
                writer.close()
                code, started = 128, now()
                box.event(
                    "Failed",
                    f"Error: failed to create containerd task: {error}",
                    warning=True,
                )
            else:
                started = now()
                probe = None if self.init else self.spec.get("readinessProbe")
                self.status.update(
                    containerID=cid,
                    restartCount=self.restarts,
                    ready=not self.init and not probe,
                    started=not self.init,
                    state={"running": {"startedAt": started}},
                )
                box.started_events(self)
                box.changed()
                if probe:
                    self._probe(probe, self.process)
                pumps = [
                    threading.Thread(
                        target=writer.pump, args=(stream, pipe), daemon=True
                    )
                    for stream, pipe in (
                        ("stdout", self.process.stdout),
                        ("stderr", self.process.stderr),
                    )
                ]
                for pump in pumps:
                    pump.start()
                code = exit_code(children.wait(self.process))
                for pump in pumps:
                    pump.join(5)
                writer.close()
            terminated = self._terminated(started, cid, code)
            if box.stopping.is_set():
                box.changed()
                return
            policy = box.restart_policy
            if self.init and policy == "Always":
                policy = "OnFailure"
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                self.succeeded = code == 0
                box.changed()
                return
            if time.monotonic() - begun > 2 * crilog.BACKOFF_CAP:
                failures = 0
            delay = crilog.backoff(failures)
            failures += 1
            box.changed()
            self.status.update(
                lastState={"terminated": terminated},
                state={
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": (
                            f"back-off {delay:g}s restarting failed container="
                            f"{self.name} pod={box.name}_{box.namespace}({box.uid})"
                        ),
                    }
                },
            )
            box.event(
                "BackOff",
                f"Back-off restarting failed container {self.name} in pod "
                f"{box.name}_{box.namespace}({box.uid})",
                warning=True,
            )
            box.changed()
            if box.stopping.wait(delay):
                self.status.update(state={"terminated": terminated})
                return
            self.restarts += 1
            old = self.log_path(self.restarts - 2)
            if self.restarts >= 2 and os.path.exists(old):
                os.remove(old)  # the kubelet keeps the current and previous log

    def _probe(self, probe: Obj, process: subprocess.Popen[bytes]) -> None:
        """Follow the readiness probe of this run of the process."""

        def report(ready: bool) -> None:
            if self.process is process:
                self.status.update(ready=ready)
                self.sandbox.changed()

        threading.Thread(
            target=probes.follow,
            args=(
                probe,
                self.spec,
                self.env,
                lambda: process.poll() is None,
                self.sandbox.stopping,
                report,
            ),
            daemon=True,
        ).start()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the container's process group."""
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signum)


class PodSandbox:
    """One pod the kubelet runs: its containers, events and status."""

    def __init__(
        self,
        api: Api,
        pod: Obj,
        node_name: str,
        node_ip: str,
        log_root: str,
        pulled: set[str],
        resolv: str | None = None,
    ) -> None:
        meta = pod["metadata"]
        self.api = api
        self.pod = pod
        self.name = str(meta["name"])
        self.namespace = str(meta["namespace"])
        self.uid = str(meta["uid"])
        self.node_name = node_name
        self.node_ip = node_ip
        self.pulled = pulled
        #: The pod's own ``/etc/resolv.conf`` (None: the node's), see :mod:`.dns`.
        self.resolv = resolv
        self.restart_policy = str(pod["spec"].get("restartPolicy") or "Always")
        self.log_dir = crilog.pod_log_dir(self.namespace, self.name, self.uid, log_root)
        self.stopping = threading.Event()
        self.killed = False
        self.environment = Environment(
            api, pod, lambda message: self.event(SIMULATED, message)
        )
        self.init = [
            Container(self, c, init=True)
            for c in pod["spec"].get("initContainers") or []
        ]
        self.main = [
            Container(self, c, init=False) for c in pod["spec"].get("containers") or []
        ]
        self.started_at = now()
        self._lock = threading.Lock()
        self._conditions: dict[str, Obj] = {}
        self.done = threading.Event()

    def resume(self) -> None:
        """Carry restart counts and last states over from the pod's status."""
        status = self.pod.get("status") or {}
        previous = {
            s.get("name"): s
            for s in (status.get("containerStatuses") or [])
            + (status.get("initContainerStatuses") or [])
        }
        self.event(
            "SandboxChanged", "Pod sandbox changed, it will be killed and re-created."
        )
        for container in self.init + self.main:
            old = previous.get(container.name)
            if old is None:
                continue
            container.restarts = int(old.get("restartCount") or 0) + 1
            container.status["restartCount"] = container.restarts
            state = old.get("state") or {}
            terminated = state.get("terminated")
            if "running" in state:
                terminated = {
                    "exitCode": 255,
                    "reason": "Unknown",
                    "startedAt": state["running"].get("startedAt"),
                    "finishedAt": now(),
                    "containerID": old.get("containerID", ""),
                }
            if terminated:
                container.status["lastState"] = {"terminated": terminated}
        started = status.get("startTime")
        if started:
            self.started_at = str(started)

    def in_pod(self, argv: list[str]) -> list[str]:
        """``argv`` as a process of this pod: with the pod's ``resolv.conf``."""
        return dns.in_pod(argv, self.resolv)

    def container(self, name: str) -> Container | None:
        """The container called ``name``, init or not."""
        return next((c for c in self.init + self.main if c.name == name), None)

    def start(self) -> None:
        """Run the init containers in order, then the others side by side."""
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        self.changed()
        for container in self.init:
            container.run()
            if not container.succeeded:
                self.changed()
                return
        threads = [threading.Thread(target=c.run, daemon=True) for c in self.main]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.changed()

    def stop(self, grace: float) -> None:
        """Stop the pod as a deleted one: SIGTERM, then SIGKILL after ``grace``."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        for container in self.init + self.main:
            self.event("Killing", f"Stopping container {container.name}")
            container.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for container in self.init + self.main:
            process = container.process
            if process is None:
                continue
            try:
                process.wait(max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                self.killed = True
                container.signal(signal.SIGKILL)
                process.wait()
        for container in self.init + self.main:
            container.finished.wait(5)
        self.changed()
        self.done.set()

    def started_events(self, container: Container) -> None:
        """``Pulled``, ``Created`` and ``Started``, as the kubelet records them."""
        image = container.spec["image"]
        if container.restarts == 0 and image in self.pulled:
            pulled = f'Successfully pulled image "{image}"'
        else:
            pulled = f'Container image "{image}" already present on machine'
        self.event("Pulled", pulled)
        self.event("Created", f"Created container: {container.name}")
        self.event("Started", f"Started container {container.name}")

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        """Record an Event about the pod, from this node's kubelet."""
        post_event(self.api, self.pod, self.node_name, reason, message, warning=warning)

    def _condition(self, kind: str, value: bool, reason: str = "") -> Obj:
        status = "True" if value else "False"
        old = self._conditions.get(kind)
        if old is None or old["status"] != status:
            old = {"type": kind, "status": status, "lastProbeTime": None}
            old["lastTransitionTime"] = now()
            if reason:
                old["reason"] = reason
            self._conditions[kind] = old
        return old

    def phase(self) -> str:
        """The pod's phase from its containers' states."""
        if any(not c.finished.is_set() for c in self.init):
            failed = [c for c in self.init if c.finished.is_set() and not c.succeeded]
            return "Failed" if failed else "Pending"
        if any(not c.succeeded for c in self.init):
            return "Failed"
        if not all(c.finished.is_set() for c in self.main):
            return "Running"
        if self.stopping.is_set() and not all(c.succeeded for c in self.main):
            return "Failed"
        return "Succeeded" if all(c.succeeded for c in self.main) else "Failed"

    def changed(self) -> None:
        """Report the pod's status to the API."""
        with self._lock:
            phase = self.phase()
            initialized = all(c.succeeded for c in self.init)
            ready = phase == "Running" and all(c.status.get("ready") for c in self.main)
            completed = phase in ("Succeeded", "Failed")
            conditions = [
                self._condition("PodReadyToStartContainers", not completed),
                self._condition("Initialized", initialized),
                self._condition(
                    "Ready",
                    ready,
                    "PodCompleted" if completed else "ContainersNotReady",
                ),
                self._condition(
                    "ContainersReady",
                    ready,
                    "PodCompleted" if completed else "ContainersNotReady",
                ),
                self._condition("PodScheduled", True),
            ]
            status: Obj = {
                "phase": phase,
                "conditions": conditions,
                "hostIP": self.node_ip,
                "hostIPs": [{"ip": self.node_ip}],
                "podIP": self.node_ip,
                "podIPs": [{"ip": self.node_ip}],
                "startTime": self.started_at,
                "containerStatuses": [dict(c.status) for c in self.main],
            }
            if self.init:
                status["initContainerStatuses"] = [dict(c.status) for c in self.init]
            with contextlib.suppress(OSError):
                self.api.call(
                    "PATCH",
                    f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status",
                    json.dumps({"status": status}).encode(),
                    {
                        "Content-Type": "application/merge-patch+json",
                        "Accept": "application/json",
                    },
                )


class ContainerRuntime:
    """The pods this node's kubelet runs, kept in line with the API's."""

    def __init__(
        self,
        api: Api,
        node_name: str,
        node_ip: str,
        has_image: Callable[[str], bool],
        log_root: str = crilog.LOG_ROOT,
        *,
        pod_dns: bool = False,
    ) -> None:
        self.api = api
        #: Whether pods get the cluster's DNS in their own ``resolv.conf``
        #: (a node's kubelet; not the in-process tests', whose host it is).
        self.pod_dns = pod_dns
        self._host_search = dns.read_resolv()[1] if pod_dns else []
        self.node_name = node_name
        self.node_ip = node_ip
        self.has_image = has_image
        self.log_root = log_root
        self.sandboxes: dict[str, PodSandbox] = {}
        self._absent: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def find(self, namespace: str, name: str) -> PodSandbox | None:
        """The running sandbox of pod ``namespace/name``, if this node runs it."""
        with self._lock:
            for sandbox in self.sandboxes.values():
                if (sandbox.namespace, sandbox.name) == (namespace, name):
                    return sandbox
        return None

    def sync(self, pods: list[Obj]) -> None:
        """Start, stop and forget sandboxes so they match ``pods``."""
        seen = set()
        for pod in pods:
            meta, spec = pod["metadata"], pod.get("spec") or {}
            uid = str(meta["uid"])
            seen.add(uid)
            with self._lock:
                sandbox = self.sandboxes.get(uid)
            if meta.get("deletionTimestamp"):
                if sandbox is not None and not sandbox.stopping.is_set():
                    grace = float(
                        meta.get("deletionGracePeriodSeconds")
                        or spec.get("terminationGracePeriodSeconds")
                        or 0
                    )
                    threading.Thread(
                        target=sandbox.stop, args=(grace,), daemon=True
                    ).start()
                continue
            if sandbox is not None or not self._runs(pod):
                continue
            images = [
                str(c.get("image", ""))
                for c in list(spec.get("initContainers") or [])
                + list(spec.get("containers") or [])
            ]
            absent = self._absent.setdefault(
                uid, {i for i in images if not self.has_image(i)}
            )
            phase = (pod.get("status") or {}).get("phase", "Pending")
            if phase in ("Succeeded", "Failed"):
                continue
            if not all(self.has_image(i) for i in images):
                continue
            sandbox = PodSandbox(
                self.api,
                pod,
                self.node_name,
                self.node_ip,
                self.log_root,
                absent,
                self._resolv(pod),
            )
            if phase != "Pending":
                # This kubelet restarted (its node container did): the pod's
                # processes died with it, so its containers start again.
                sandbox.resume()
            with self._lock:
                self.sandboxes[uid] = sandbox
            sandbox.start()
        with self._lock:
            gone = [uid for uid in self.sandboxes if uid not in seen]
            for uid in gone:
                threading.Thread(
                    target=self.sandboxes.pop(uid).stop, args=(0,), daemon=True
                ).start()
                self._absent.pop(uid, None)

    def _resolv(self, pod: Obj) -> str | None:
        """Write the pod's ``resolv.conf``; its path, or None for the node's."""
        if not self.pod_dns:
            return None
        content = dns.resolv_conf(pod, self._host_search)
        if content is None:
            return None
        try:
            return dns.write_resolv_conf(str(pod["metadata"]["uid"]), content)
        except OSError:
            return None

    @staticmethod
    def _runs(pod: Obj) -> bool:
        spec = pod.get("spec") or {}
        containers = list(spec.get("initContainers") or []) + list(
            spec.get("containers") or []
        )
        return any(runnable.argv(c) is not None for c in containers)

    def stop_all(self) -> None:
        """Kill every pod's processes (the node stops)."""
        with self._lock:
            boxes = list(self.sandboxes.values())
        for box in boxes:
            box.stop(0)
